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
 * Docker and Nomad from the operator's mirror and join the servers over mutual TLS.
 */
export class AwsNomadClients extends Construct {
  readonly autoScalingGroupName: string;
  readonly autoScalingGroupArn: string;
  readonly securityGroupId: string;

  constructor(scope: Construct, id: string, props: AwsNomadClientsProps) {
    super(scope, id);
    const minClients = props.minClients ?? 1;
    const maxClients = props.maxClients ?? 10;
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

    // The instances need no AWS permissions beyond being identifiable; the role exists for SSM access.
    const role = new IamRole(this, 'Role', { namePrefix: `${props.name}-`, assumeRolePolicy: servicePrincipalTrust('ec2.amazonaws.com') });
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
