import { Construct } from 'constructs';
import { Fn, TerraformLocal } from 'cdktf';
import { LaunchTemplate } from '@cdktf/provider-aws/lib/launch-template';
import { AutoscalingGroup } from '@cdktf/provider-aws/lib/autoscaling-group';
import { SecurityGroup } from '@cdktf/provider-aws/lib/security-group';
import { DataAwsAmi } from '@cdktf/provider-aws/lib/data-aws-ami';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { IamInstanceProfile } from '@cdktf/provider-aws/lib/iam-instance-profile';
import { servicePrincipalTrust } from './eks-cluster';
import type { NomadClientGroupProps } from '../nomad-tls';
import { renderNomadClientBootstrap } from '../nomad-client-bootstrap';
import { IamRolePolicyAttachment } from '@cdktf/provider-aws/lib/iam-role-policy-attachment';
import { cidrHost } from '../cidr';

/** Route 53 Resolver's link-local address, answering in every VPC besides the base+2 address. */
export const AWS_LINK_LOCAL_RESOLVER = '169.254.169.253';

export interface AwsNomadClientsProps extends NomadClientGroupProps {
  readonly vpcId: string;
  /** CIDR of the VPC; Nomad's ports (4646–4648) are open to it. */
  readonly vpcCidr: string;
  /** Private subnets the clients run in. */
  readonly subnetIds: string[];
  /** @default 'm6i.2xlarge' */
  readonly instanceType?: string;
}

/**
 * The machines Nomad runs build jobs on: an Auto Scaling group of Ubuntu instances that install
 * Docker and Nomad from the operator's mirror and join the servers over mutual TLS. A termination
 * lifecycle hook holds an instance being scaled in or refreshed until Nomad has drained it.
 */
export class AwsNomadClients extends Construct {
  readonly autoScalingGroupName: string;
  readonly autoScalingGroupArn: string;
  readonly securityGroupId: string;

  constructor(scope: Construct, id: string, props: AwsNomadClientsProps) {
    super(scope, id);
    const minClients = props.minClients ?? 1;
    const maxClients = props.maxClients ?? 10;
    const drainDeadlineMinutes = props.drainDeadlineMinutes ?? 15;
    if (minClients < 0 || maxClients < 1 || maxClients < minClients) {
      throw new Error(`maxClients (${maxClients}) must be at least 1 and at least minClients (${minClients})`);
    }

    const sg = new SecurityGroup(this, 'SecurityGroup', {
      namePrefix: `${props.name}-`,
      vpcId: props.vpcId,
      description: 'Gyre Nomad clients',
      ingress: [
        { description: 'Nomad HTTP, RPC and Serf from the VPC', protocol: 'tcp', fromPort: 4646, toPort: 4648, cidrBlocks: [props.vpcCidr] },
        { description: 'Nomad Serf (UDP) from the VPC', protocol: 'udp', fromPort: 4648, toPort: 4648, cidrBlocks: [props.vpcCidr] },
        ...((props.sshRerunCidrs ?? []).length > 0
          ? [{ description: 'SSH into rerun jobs', protocol: 'tcp', fromPort: 64535, toPort: 65535, cidrBlocks: props.sshRerunCidrs }]
          : []),
      ],
      egress: [{ description: 'Package mirror, registry, control plane', protocol: '-1', fromPort: 0, toPort: 0, cidrBlocks: ['0.0.0.0/0'] }],
      lifecycle: { createBeforeDestroy: true },
    });
    this.securityGroupId = sg.id;

    // The instances need no AWS permissions beyond pulling the agent image from ECR (when that is
    // where it lives); build containers cannot use the role (metadata is blocked for them).
    const role = new IamRole(this, 'Role', { namePrefix: `${props.name}-`, assumeRolePolicy: servicePrincipalTrust('ec2.amazonaws.com') });
    if (props.registryAuth?.kind === 'ecr') {
      new IamRolePolicyAttachment(this, 'EcrPull', { role: role.name, policyArn: 'arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly' });
    }
    const profile = new IamInstanceProfile(this, 'InstanceProfile', { namePrefix: `${props.name}-`, role: role.name });

    const ami = new DataAwsAmi(this, 'Ubuntu', {
      mostRecent: true,
      owners: ['099720109477'],
      filter: [
        { name: 'name', values: ['ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*'] },
        { name: 'architecture', values: ['x86_64'] },
      ],
    });

    const userData = renderNomadClientBootstrap({
      cloud: 'aws',
      packageMirror: props.packageMirror,
      nomadVersion: props.nomadVersion,
      serverAddress: props.serverAddress,
      caPem: props.tls.caPem,
      clientCertPem: props.tls.client.certPem,
      clientKeyPem: props.tls.client.keyPem,
      blockedCidrs: props.blockedCidrs,
      // The VPC resolver (base+2) sits inside the VPC range builds are usually blocked from.
      dnsResolvers: [cidrHost(props.vpcCidr, 2), AWS_LINK_LOCAL_RESOLVER],
      registryAuth: props.registryAuth,
      registryMirrors: props.registryMirrors,
      drainDeadlineMinutes,
      region: props.tls.region,
    });

    const template = new LaunchTemplate(this, 'LaunchTemplate', {
      namePrefix: `${props.name}-`,
      imageId: ami.id,
      instanceType: props.instanceType ?? 'm6i.2xlarge',
      vpcSecurityGroupIds: [sg.id],
      iamInstanceProfile: { arn: profile.arn },
      // Through a local: Fn arguments may not hold the script's double quotes literally.
      userData: Fn.base64encode(new TerraformLocal(this, 'UserData', userData).asString),
      // IMDSv2 only, and one hop: containers on the host cannot reach the metadata service.
      metadataOptions: { httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 1 },
      blockDeviceMappings: [{
        deviceName: '/dev/sda1',
        ebs: { volumeSize: props.diskGb ?? 200, volumeType: 'gp3', encrypted: 'true', deleteOnTermination: 'true' },
      }],
      tagSpecifications: [{ resourceType: 'instance', tags: { Name: props.name, 'gyre:role': 'nomad-client' } }],
    });

    const asg = new AutoscalingGroup(this, 'Group', {
      namePrefix: `${props.name}-`,
      minSize: minClients,
      maxSize: maxClients,
      desiredCapacity: minClients,
      vpcZoneIdentifier: props.subnetIds,
      launchTemplate: { id: template.id, version: template.latestVersion.toString() },
      healthCheckType: 'EC2',
      instanceRefresh: { strategy: 'Rolling', preferences: { minHealthyPercentage: 50 } },
      // Terminating instances wait here while gyre-lifecycle-watch drains Nomad; the hook then
      // times out and termination continues.
      initialLifecycleHook: [{
        name: 'nomad-drain',
        lifecycleTransition: 'autoscaling:EC2_INSTANCE_TERMINATING',
        heartbeatTimeout: drainDeadlineMinutes * 60 + 300,
        defaultResult: 'CONTINUE',
      }],
      tag: [{ key: 'Name', value: props.name, propagateAtLaunch: true }],
      // nomad-autoscaler owns the desired count once the group exists.
      lifecycle: { ignoreChanges: ['desired_capacity'] },
    });
    this.autoScalingGroupName = asg.name;
    this.autoScalingGroupArn = asg.arn;
  }

  /**
   * Lets the role (nomad-autoscaler's) scale this group and nothing else: writes are scoped to this
   * group's ARN; the describe calls AWS cannot scope by resource.
   */
  grantAutoscaling(roleName: string): void {
    new IamRolePolicy(this, 'AutoscalerPolicy', {
      role: roleName,
      name: 'nomad-autoscaler',
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'ScaleThisGroup',
            Effect: 'Allow',
            Action: ['autoscaling:UpdateAutoScalingGroup', 'autoscaling:SetDesiredCapacity', 'autoscaling:TerminateInstanceInAutoScalingGroup', 'autoscaling:CreateOrUpdateTags'],
            Resource: [this.autoScalingGroupArn],
          },
          {
            Sid: 'DescribeIsUnscoped',
            Effect: 'Allow',
            Action: ['autoscaling:DescribeAutoScalingGroups', 'autoscaling:DescribeScalingActivities', 'ec2:DescribeInstances'],
            Resource: ['*'],
          },
        ],
      }),
    });
  }
}
