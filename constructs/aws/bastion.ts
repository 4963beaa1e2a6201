import { Construct } from 'constructs';
import { Instance } from '@cdktf/provider-aws/lib/instance';
import { SecurityGroup } from '@cdktf/provider-aws/lib/security-group';
import { DataAwsAmi } from '@cdktf/provider-aws/lib/data-aws-ami';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicyAttachment } from '@cdktf/provider-aws/lib/iam-role-policy-attachment';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { IamInstanceProfile } from '@cdktf/provider-aws/lib/iam-instance-profile';
import { servicePrincipalTrust } from './eks-cluster';

export interface AwsBastionProps {
  readonly name: string;
  readonly vpcId: string;
  /** Public subnet when SSH is allowed; any subnet with NAT when only SSM is used. */
  readonly subnetId: string;
  /** CIDRs allowed to SSH to the bastion. @default - no SSH; Session Manager only */
  readonly sshAllowedCidrs?: string[];
  /** @default 't3.micro' */
  readonly instanceType?: string;
}

/**
 * Jump host for operators: reachable through AWS Systems Manager Session Manager, and by SSH only
 * from the listed CIDRs. IMDSv2 is required and the disk is encrypted.
 */
export class AwsBastion extends Construct {
  readonly instanceId: string;
  readonly publicIp: string;
  /** Security group of the instance (grant it the private Kubernetes API). */
  readonly securityGroupId: string;
  /** IAM role of the instance (grant it cluster access). */
  readonly roleArn: string;

  constructor(scope: Construct, id: string, props: AwsBastionProps) {
    super(scope, id);
    const ssh = props.sshAllowedCidrs ?? [];
    if (ssh.includes('0.0.0.0/0')) {
      throw new Error('sshAllowedCidrs (0.0.0.0/0) must not open SSH to the whole internet; list your office or VPN CIDRs, or none to use Session Manager');
    }
    const sg = new SecurityGroup(this, 'SecurityGroup', {
      namePrefix: `${props.name}-bastion-`,
      vpcId: props.vpcId,
      description: 'Gyre bastion',
      ingress: ssh.length > 0 ? [{ description: 'SSH from allowed CIDRs', protocol: 'tcp', fromPort: 22, toPort: 22, cidrBlocks: ssh }] : [],
      egress: [{ description: 'All outbound (SSM, Kubernetes API)', protocol: '-1', fromPort: 0, toPort: 0, cidrBlocks: ['0.0.0.0/0'] }],
    });
    const role = new IamRole(this, 'Role', { namePrefix: `${props.name}-bastion-`, assumeRolePolicy: servicePrincipalTrust('ec2.amazonaws.com') });
    new IamRolePolicyAttachment(this, 'Ssm', { role: role.name, policyArn: 'arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore' });
    // `aws eks update-kubeconfig` on the bastion reads the cluster's endpoint and CA.
    new IamRolePolicy(this, 'DescribeClusters', {
      role: role.name,
      name: 'eks-describe',
      policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: ['eks:DescribeCluster', 'eks:ListClusters'], Resource: ['*'] }] }),
    });
    this.securityGroupId = sg.id;
    this.roleArn = role.arn;
    const profile = new IamInstanceProfile(this, 'InstanceProfile', { namePrefix: `${props.name}-bastion-`, role: role.name });
    const ami = new DataAwsAmi(this, 'AmazonLinux', {
      mostRecent: true,
      owners: ['amazon'],
      filter: [{ name: 'name', values: ['al2023-ami-2023.*-x86_64'] }],
    });
    const instance = new Instance(this, 'Instance', {
      ami: ami.id,
      instanceType: props.instanceType ?? 't3.micro',
      subnetId: props.subnetId,
      vpcSecurityGroupIds: [sg.id],
      iamInstanceProfile: profile.name,
      associatePublicIpAddress: ssh.length > 0,
      metadataOptions: { httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 1 },
      rootBlockDevice: { encrypted: true, volumeSize: 20, volumeType: 'gp3' },
      tags: { Name: `${props.name}-bastion` },
      lifecycle: { ignoreChanges: ['ami'] },
    });
    this.instanceId = instance.id;
    this.publicIp = instance.publicIp;
  }
}
