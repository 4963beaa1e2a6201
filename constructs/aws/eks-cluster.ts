import { Construct } from 'constructs';
import { Fn } from 'cdktf';
import { EksCluster as CfnEksCluster } from '@cdktf/provider-aws/lib/eks-cluster';
import { EksNodeGroup } from '@cdktf/provider-aws/lib/eks-node-group';
import { EksAddon } from '@cdktf/provider-aws/lib/eks-addon';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicyAttachment } from '@cdktf/provider-aws/lib/iam-role-policy-attachment';
import { IamOpenidConnectProvider } from '@cdktf/provider-aws/lib/iam-openid-connect-provider';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import { LaunchTemplate } from '@cdktf/provider-aws/lib/launch-template';
import { EksAccessEntry } from '@cdktf/provider-aws/lib/eks-access-entry';
import { EksAccessPolicyAssociation } from '@cdktf/provider-aws/lib/eks-access-policy-association';
import { VpcSecurityGroupIngressRule } from '@cdktf/provider-aws/lib/vpc-security-group-ingress-rule';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { IKubernetesCluster } from '../types';

export interface EksClusterProps {
  /** Cluster name; also the prefix of its IAM roles. */
  readonly clusterName: string;
  /** Kubernetes minor version, e.g. `1.31`. */
  readonly version: string;
  /** Private subnets for the control-plane ENIs and the nodes. */
  readonly subnetIds: string[];
  /** CIDRs allowed to reach the public API endpoint. @default - the public endpoint is disabled; reach the API from the VPC (bastion) */
  readonly apiAllowedCidrs?: string[];
  /** @default 'm6i.xlarge' */
  readonly nodeInstanceType?: string;
  /** @default 3 */
  readonly minNodes?: number;
  /** @default - minNodes */
  readonly desiredNodes?: number;
  /** @default 6 */
  readonly maxNodes?: number;
  /** Node root volume in GiB. @default 100 */
  readonly nodeDiskGb?: number;
}

/**
 * EKS cluster with a managed node group, an OIDC provider for IAM roles for service accounts (IRSA),
 * secrets encrypted with a dedicated KMS key, the VPC CNI with NetworkPolicy enforcement, and the
 * EBS CSI driver add-on (Nomad servers keep their state on EBS volumes).
 */
export class EksCluster extends Construct implements IKubernetesCluster {
  readonly clusterName: string;
  readonly endpoint: string;
  readonly caCertificate: string;
  /** ARN of the OIDC provider that service-account roles trust. */
  readonly oidcProviderArn: string;
  /** Security group EKS attaches to the control plane and the nodes. */
  readonly clusterSecurityGroupId: string;
  private readonly oidcIssuerHost: string;

  constructor(scope: Construct, id: string, props: EksClusterProps) {
    super(scope, id);
    const minNodes = props.minNodes ?? 3;
    const maxNodes = props.maxNodes ?? 6;
    const desiredNodes = props.desiredNodes ?? minNodes;
    if (desiredNodes < minNodes || desiredNodes > maxNodes) {
      throw new Error(`desiredNodes (${desiredNodes}) must be between minNodes (${minNodes}) and maxNodes (${maxNodes})`);
    }
    if (!/^1\.\d+$/.test(props.version)) throw new Error(`version (${props.version}) must be a Kubernetes minor version such as 1.31`);

    const clusterRole = new IamRole(this, 'ClusterRole', {
      name: `${props.clusterName}-cluster`,
      assumeRolePolicy: servicePrincipalTrust('eks.amazonaws.com'),
    });
    new IamRolePolicyAttachment(this, 'ClusterPolicy', {
      role: clusterRole.name,
      policyArn: 'arn:aws:iam::aws:policy/AmazonEKSClusterPolicy',
    });

    const secretsKey = new KmsKey(this, 'SecretsKey', {
      description: `${props.clusterName} Kubernetes secrets`,
      enableKeyRotation: true,
      deletionWindowInDays: 30,
    });

    const publicAccess = (props.apiAllowedCidrs ?? []).length > 0;
    const cluster = new CfnEksCluster(this, 'Cluster', {
      name: props.clusterName,
      version: props.version,
      roleArn: clusterRole.arn,
      vpcConfig: {
        subnetIds: props.subnetIds,
        endpointPrivateAccess: true,
        endpointPublicAccess: publicAccess,
        publicAccessCidrs: publicAccess ? props.apiAllowedCidrs : undefined,
      },
      accessConfig: { authenticationMode: 'API_AND_CONFIG_MAP', bootstrapClusterCreatorAdminPermissions: true },
      encryptionConfig: { resources: ['secrets'], provider: { keyArn: secretsKey.arn } },
      enabledClusterLogTypes: ['api', 'audit', 'authenticator'],
    });
    this.clusterName = cluster.name;
    this.endpoint = cluster.endpoint;
    this.caCertificate = cluster.certificateAuthority.get(0).data;
    this.clusterSecurityGroupId = cluster.vpcConfig.clusterSecurityGroupId;

    const issuer = cluster.identity.get(0).oidc.get(0).issuer;
    const oidc = new IamOpenidConnectProvider(this, 'OidcProvider', {
      url: issuer,
      clientIdList: ['sts.amazonaws.com'],
    });
    this.oidcProviderArn = oidc.arn;
    this.oidcIssuerHost = Fn.replace(issuer, 'https://', '');

    const nodeRole = new IamRole(this, 'NodeRole', {
      name: `${props.clusterName}-node`,
      assumeRolePolicy: servicePrincipalTrust('ec2.amazonaws.com'),
    });
    ['AmazonEKSWorkerNodePolicy', 'AmazonEKS_CNI_Policy', 'AmazonEC2ContainerRegistryReadOnly'].forEach((policy) => {
      new IamRolePolicyAttachment(this, `Node${policy}`, {
        role: nodeRole.name,
        policyArn: `arn:aws:iam::aws:policy/${policy}`,
      });
    });

    // Hop limit 1 keeps pods off the node's instance metadata: they must use their own IRSA role.
    const nodeTemplate = new LaunchTemplate(this, 'NodeTemplate', {
      namePrefix: `${props.clusterName}-node-`,
      metadataOptions: { httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 1 },
      blockDeviceMappings: [{
        deviceName: '/dev/xvda',
        ebs: { volumeSize: props.nodeDiskGb ?? 100, volumeType: 'gp3', encrypted: 'true', deleteOnTermination: 'true' },
      }],
    });

    new EksNodeGroup(this, 'Nodes', {
      clusterName: cluster.name,
      nodeGroupNamePrefix: `${props.clusterName}-`,
      nodeRoleArn: nodeRole.arn,
      subnetIds: props.subnetIds,
      instanceTypes: [props.nodeInstanceType ?? 'm6i.xlarge'],
      scalingConfig: { minSize: minNodes, desiredSize: desiredNodes, maxSize: maxNodes },
      updateConfig: { maxUnavailable: 1 },
      launchTemplate: { id: nodeTemplate.id, version: nodeTemplate.latestVersion.toString() },
      lifecycle: { ignoreChanges: ['scaling_config[0].desired_size'], createBeforeDestroy: true },
    });

    // The VPC CNI's network policy agent enforces NetworkPolicies (off unless configured so).
    new EksAddon(this, 'VpcCni', {
      clusterName: cluster.name,
      addonName: 'vpc-cni',
      configurationValues: JSON.stringify({ enableNetworkPolicy: 'true' }),
      resolveConflictsOnCreate: 'OVERWRITE',
      resolveConflictsOnUpdate: 'PRESERVE',
    });

    const ebsCsiRole = this.serviceAccountRole('EbsCsiRole', 'kube-system', 'ebs-csi-controller-sa', `${props.clusterName}-ebs-csi`);
    new IamRolePolicyAttachment(this, 'EbsCsiPolicy', {
      role: ebsCsiRole.name,
      policyArn: 'arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy',
    });
    new EksAddon(this, 'EbsCsi', {
      clusterName: cluster.name,
      addonName: 'aws-ebs-csi-driver',
      serviceAccountRoleArn: ebsCsiRole.arn,
      resolveConflictsOnUpdate: 'PRESERVE',
    });
  }

  /**
   * An IAM role that only the named Kubernetes service account can assume (IRSA).
   * Attach permissions to the returned role.
   */
  serviceAccountRole(id: string, namespace: string, serviceAccount: string, roleName: string): IamRole {
    return new IamRole(this, id, {
      name: roleName,
      assumeRolePolicy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{
          Effect: 'Allow',
          Principal: { Federated: this.oidcProviderArn },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: {
            StringEquals: {
              [`${this.oidcIssuerHost}:sub`]: `system:serviceaccount:${namespace}:${serviceAccount}`,
              [`${this.oidcIssuerHost}:aud`]: 'sts.amazonaws.com',
            },
          },
        }],
      }),
    });
  }

  /**
   * Lets machines in a security group reach the private API endpoint: the control plane's ENIs
   * carry the cluster security group, which otherwise admits only the nodes.
   */
  allowApiAccessFrom(id: string, securityGroupId: string): void {
    new VpcSecurityGroupIngressRule(this, id, {
      securityGroupId: this.clusterSecurityGroupId,
      referencedSecurityGroupId: securityGroupId,
      ipProtocol: 'tcp',
      fromPort: 443,
      toPort: 443,
      description: 'Kubernetes API from the bastion',
    });
  }

  /**
   * Lets machines in a security group reach pods on a port. Pods take VPC addresses on the nodes,
   * which carry the cluster security group: Nomad clients, once joined, dial the Nomad servers'
   * pod addresses (4647) that the servers advertise.
   */
  allowPodPortFrom(id: string, securityGroupId: string, port: number, description: string): void {
    new VpcSecurityGroupIngressRule(this, id, {
      securityGroupId: this.clusterSecurityGroupId,
      referencedSecurityGroupId: securityGroupId,
      ipProtocol: 'tcp',
      fromPort: port,
      toPort: port,
      description,
    });
  }

  /** Makes an IAM principal a cluster administrator through an EKS access entry. */
  grantClusterAdmin(id: string, principalArn: string): void {
    const entry = new EksAccessEntry(this, id, { clusterName: this.clusterName, principalArn, type: 'STANDARD' });
    new EksAccessPolicyAssociation(this, `${id}Admin`, {
      clusterName: this.clusterName,
      principalArn: entry.principalArn,
      policyArn: 'arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy',
      accessScope: { type: 'cluster' },
    });
  }

  /**
   * The IAM role cluster-autoscaler (kube-system/<serviceAccount>) acts as: it may describe the
   * account's groups and resize only groups tagged as this cluster's (EKS tags its managed node
   * groups' Auto Scaling groups so).
   */
  clusterAutoscalerRole(id: string, serviceAccount: string, roleName: string): IamRole {
    const role = this.serviceAccountRole(id, 'kube-system', serviceAccount, roleName);
    new IamRolePolicy(this, `${id}Policy`, {
      role: role.name,
      name: 'cluster-autoscaler',
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'Describe',
            Effect: 'Allow',
            Action: [
              'autoscaling:DescribeAutoScalingGroups', 'autoscaling:DescribeAutoScalingInstances', 'autoscaling:DescribeLaunchConfigurations',
              'autoscaling:DescribeScalingActivities', 'autoscaling:DescribeTags', 'ec2:DescribeImages', 'ec2:DescribeInstanceTypes',
              'ec2:DescribeLaunchTemplateVersions', 'ec2:GetInstanceTypesFromInstanceRequirements', 'eks:DescribeNodegroup',
            ],
            Resource: ['*'],
          },
          {
            Sid: 'ResizeThisClustersGroups',
            Effect: 'Allow',
            Action: ['autoscaling:SetDesiredCapacity', 'autoscaling:TerminateInstanceInAutoScalingGroup'],
            Resource: ['*'],
            Condition: { StringEquals: { [`aws:ResourceTag/k8s.io/cluster-autoscaler/${this.clusterName}`]: 'owned' } },
          },
        ],
      }),
    });
    return role;
  }

  identityAnnotation(roleArn: string): Record<string, string> {
    return { 'eks.amazonaws.com/role-arn': roleArn };
  }
}

/** Trust policy letting an AWS service assume a role. */
export function servicePrincipalTrust(service: string): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Principal: { Service: service }, Action: 'sts:AssumeRole' }],
  });
}
