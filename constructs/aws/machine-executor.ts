import { Construct } from 'constructs';
import { SecurityGroup } from '@cdktf/provider-aws/lib/security-group';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { IamInstanceProfile } from '@cdktf/provider-aws/lib/iam-instance-profile';
import { LaunchTemplate } from '@cdktf/provider-aws/lib/launch-template';
import { servicePrincipalTrust } from './eks-cluster';
import { machineImageSlug, type MachineExecutorConfig } from '../machine-images';

export interface AwsMachineExecutorProps {
  /** Prefix of every resource's name, e.g. `gyre-prod-machines`. */
  readonly name: string;
  /** The tag value (GYRE_INSTALLATION_ID) the runtime's machines carry; the IAM policy is scoped to it. */
  readonly installationId: string;
  readonly region: string;
  readonly vpcId: string;
  /** Private subnets machines start in. */
  readonly subnetIds: string[];
  /** `machine: image:` → AMI id. */
  readonly images: Readonly<Record<string, string>>;
  /** Resource class → instance type. @default {} (each template's `defaultInstanceType`) */
  readonly instanceTypes?: Readonly<Record<string, string>>;
  /** @default 'm6i.large' (CircleCI's medium machine: 2 vCPU, 8 GiB) */
  readonly defaultInstanceType?: string;
  /** Spot capacity for every machine. @default false */
  readonly spot?: boolean;
  /** Where machines may connect (HTTPS): the control plane's load balancer. @default - none: set it */
  readonly controlPlaneCidrs: string[];
  /** Further destinations jobs may reach on any port (package mirrors, registries, `0.0.0.0/0`). @default [] */
  readonly egressCidrs?: string[];
  /** @default 100 */
  readonly diskGb?: number;
}

/**
 * What the `machines` role needs on AWS: a launch template per machine image (IMDSv2 only with one
 * hop, encrypted disk, terminate on shutdown, the machines' security group and instance profile),
 * that security group (no ingress; egress to the control plane over HTTPS and to what the
 * environment allows), an instance role with no permissions, and `grantLaunch` for the role that
 * launches them: RunInstances and CreateTags only with this installation's tag, Terminate only of
 * instances carrying it, PassRole of the instance role only.
 */
export class AwsMachineExecutor extends Construct {
  readonly securityGroupId: string;
  readonly instanceRoleArn: string;
  /** Image → launch template name. */
  readonly launchTemplates: Record<string, string> = {};
  private readonly props: AwsMachineExecutorProps;
  private readonly templateArns: string[] = [];

  constructor(scope: Construct, id: string, props: AwsMachineExecutorProps) {
    super(scope, id);
    this.props = props;
    const images = Object.entries(props.images);
    if (images.length === 0) throw new Error('images maps no machine image to an AMI; allowed: e.g. { "ubuntu-2204:current": "ami-0123456789abcdef0" }');
    for (const [image, ami] of images) {
      if (!/^ami-[0-9a-f]{8,17}$/.test(ami)) throw new Error(`images.${image} (${ami}) must be an AMI id (ami-0123456789abcdef0)`);
    }
    if (props.controlPlaneCidrs.length === 0) throw new Error('controlPlaneCidrs (none) must name where machines reach the control plane, e.g. the VPC CIDR of an internal load balancer');
    const diskGb = props.diskGb ?? 100;
    if (diskGb < 8 || diskGb > 16_384) throw new Error(`diskGb (${diskGb}) must be between 8 and 16384`);

    const sg = new SecurityGroup(this, 'SecurityGroup', {
      namePrefix: `${props.name}-`,
      vpcId: props.vpcId,
      description: 'Gyre machines: one job each; they reach the control plane only',
      ingress: [],
      egress: [
        { description: 'The agent to the control plane', protocol: 'tcp', fromPort: 443, toPort: 443, cidrBlocks: props.controlPlaneCidrs },
        ...((props.egressCidrs ?? []).length > 0
          ? [{ description: 'Destinations the environment allows jobs', protocol: '-1', fromPort: 0, toPort: 0, cidrBlocks: props.egressCidrs }]
          : []),
      ],
      lifecycle: { createBeforeDestroy: true },
    });
    this.securityGroupId = sg.id;

    // Machines get no AWS permissions: a job holds only its own task token.
    const role = new IamRole(this, 'InstanceRole', { namePrefix: `${props.name}-`, assumeRolePolicy: servicePrincipalTrust('ec2.amazonaws.com') });
    this.instanceRoleArn = role.arn;
    const profile = new IamInstanceProfile(this, 'InstanceProfile', { namePrefix: `${props.name}-`, role: role.name });

    for (const [image, ami] of images) {
      const slug = machineImageSlug(image);
      const name = `${props.name}-${slug}`;
      const template = new LaunchTemplate(this, `Template-${slug}`, {
        name,
        description: `Gyre machine image ${image}`,
        imageId: ami,
        instanceType: props.defaultInstanceType ?? 'm6i.large',
        vpcSecurityGroupIds: [sg.id],
        iamInstanceProfile: { arn: profile.arn },
        instanceInitiatedShutdownBehavior: 'terminate',
        // IMDSv2 only, one hop: a container in the job cannot reach the metadata service.
        metadataOptions: { httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 1 },
        blockDeviceMappings: [{ deviceName: '/dev/sda1', ebs: { volumeSize: diskGb, volumeType: 'gp3', encrypted: 'true', deleteOnTermination: 'true' } }],
        tagSpecifications: [{ resourceType: 'instance', tags: { 'gyre:role': 'machine', 'gyre:image': image } }],
      });
      this.launchTemplates[image] = name;
      this.templateArns.push(template.arn);
    }
  }

  /** The runtime's GYRE_MACHINE_CONFIG. */
  get config(): MachineExecutorConfig {
    return {
      images: this.launchTemplates,
      instanceTypes: { ...(this.props.instanceTypes ?? {}) },
      spot: this.props.spot ?? false,
      aws: { region: this.props.region, subnetIds: this.props.subnetIds },
    };
  }

  /** Lets `roleName` (the runtime's) launch, tag, list and terminate this installation's machines, and nothing else. */
  grantLaunch(roleName: string): void {
    const tag = 'gyre:installation';
    const id = this.props.installationId;
    new IamRolePolicy(this, 'LaunchPolicy', {
      role: roleName,
      name: 'gyre-machines',
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'LaunchTaggedMachines',
            Effect: 'Allow',
            Action: ['ec2:RunInstances'],
            Resource: ['arn:aws:ec2:*:*:instance/*', 'arn:aws:ec2:*:*:volume/*', 'arn:aws:ec2:*:*:network-interface/*', 'arn:aws:ec2:*:*:spot-instances-request/*'],
            Condition: { StringEquals: { [`aws:RequestTag/${tag}`]: id } },
          },
          {
            Sid: 'LaunchFromTheseTemplates',
            Effect: 'Allow',
            Action: ['ec2:RunInstances'],
            Resource: ['arn:aws:ec2:*::image/*', 'arn:aws:ec2:*:*:subnet/*', `arn:aws:ec2:*:*:security-group/*`, ...this.templateArns],
          },
          {
            Sid: 'TagOnlyAtLaunch',
            Effect: 'Allow',
            Action: ['ec2:CreateTags'],
            Resource: ['arn:aws:ec2:*:*:instance/*', 'arn:aws:ec2:*:*:volume/*', 'arn:aws:ec2:*:*:network-interface/*', 'arn:aws:ec2:*:*:spot-instances-request/*'],
            Condition: { StringEquals: { 'ec2:CreateAction': 'RunInstances' } },
          },
          {
            Sid: 'TerminateOnlyOurs',
            Effect: 'Allow',
            Action: ['ec2:TerminateInstances'],
            Resource: ['arn:aws:ec2:*:*:instance/*'],
            Condition: { StringEquals: { [`ec2:ResourceTag/${tag}`]: id } },
          },
          { Sid: 'DescribeIsUnscoped', Effect: 'Allow', Action: ['ec2:DescribeInstances'], Resource: ['*'] },
          { Sid: 'PassTheMachineRole', Effect: 'Allow', Action: ['iam:PassRole'], Resource: [this.instanceRoleArn], Condition: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } } },
        ],
      }),
    });
  }
}
