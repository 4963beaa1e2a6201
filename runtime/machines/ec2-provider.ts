import type { EC2Client } from '@aws-sdk/client-ec2';
import { MACHINE_TAGS, machineName, machineTags, type LaunchRequest, type MachineInstance, type MachineProvider } from './machine-provider';

export interface Ec2ProviderOptions {
  readonly region: string;
  /** Subnets to launch in, tried in turn per launch; none: the launch template's. @default [] */
  readonly subnetIds?: readonly string[];
  /** EC2's endpoint, for a VPC endpoint or a stand-in. @default - the region's */
  readonly endpoint?: string;
  /** Credentials for the SDK. @default - the SDK's chain (IRSA's web identity in a cluster) */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
}

/** States of an instance that still costs money or may still run something. */
const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'];

/**
 * Machines on AWS EC2 through the official SDK, loaded only when this provider is configured. Each
 * image is a launch template (id `lt-…` or name); the launch adds what must hold whatever the
 * template says: IMDSv2 only (a job cannot read instance metadata with a plain GET, as an SSRF
 * would), the tags, termination on shutdown, one instance, and spot when asked.
 */
export async function createEc2Provider(options: Ec2ProviderOptions): Promise<MachineProvider> {
  const sdk = await import('@aws-sdk/client-ec2');
  const client: EC2Client = new sdk.EC2Client({
    region: options.region,
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
  });
  const subnets = options.subnetIds ?? [];
  let nextSubnet = 0;

  const toInstance = (i: { InstanceId?: string; Tags?: { Key?: string; Value?: string }[] }): MachineInstance => {
    const tag = (key: string) => i.Tags?.find((t) => t.Key === key)?.Value ?? '';
    return { id: i.InstanceId ?? '', taskId: tag(MACHINE_TAGS.task), attempt: Number(tag(MACHINE_TAGS.attempt)) || 0 };
  };

  return {
    name: 'aws',
    async launch(request: LaunchRequest) {
      const tags = Object.entries({ Name: machineName(request.taskId, request.attempt), ...machineTags(request) }).map(([Key, Value]) => ({ Key, Value }));
      const subnetId = subnets.length ? subnets[nextSubnet++ % subnets.length] : undefined;
      const answer = await client.send(
        new sdk.RunInstancesCommand({
          MinCount: 1,
          MaxCount: 1,
          LaunchTemplate: request.template.startsWith('lt-') ? { LaunchTemplateId: request.template, Version: '$Latest' } : { LaunchTemplateName: request.template, Version: '$Latest' },
          ...(request.instanceType ? { InstanceType: request.instanceType as never } : {}),
          ...(subnetId ? { SubnetId: subnetId } : {}),
          MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 },
          InstanceInitiatedShutdownBehavior: 'terminate',
          UserData: Buffer.from(request.startupScript).toString('base64'),
          TagSpecifications: [
            { ResourceType: 'instance', Tags: tags },
            { ResourceType: 'volume', Tags: tags },
          ],
          ...(request.spot ? { InstanceMarketOptions: { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' } } } : {}),
          // A retried call for the same attempt does not start a second machine.
          ClientToken: `gyre-${request.taskId}-${request.attempt}`,
        }),
      );
      const id = answer.Instances?.[0]?.InstanceId;
      if (!id) throw new Error('EC2 RunInstances answered no instance');
      return { id, taskId: request.taskId, attempt: request.attempt };
    },
    async destroy(instance) {
      try {
        await client.send(new sdk.TerminateInstancesCommand({ InstanceIds: [instance.id] }));
      } catch (error) {
        if ((error as { name?: string }).name === 'InvalidInstanceID.NotFound') return;
        throw error;
      }
    },
    async list(installationId) {
      const found: MachineInstance[] = [];
      let NextToken: string | undefined;
      do {
        const page = await client.send(
          new sdk.DescribeInstancesCommand({
            Filters: [
              { Name: `tag:${MACHINE_TAGS.installation}`, Values: [installationId] },
              { Name: 'instance-state-name', Values: LIVE_STATES },
            ],
            MaxResults: 500,
            NextToken,
          }),
        );
        for (const r of page.Reservations ?? []) for (const i of r.Instances ?? []) found.push(toInstance(i));
        NextToken = page.NextToken;
      } while (NextToken);
      return found;
    },
  };
}
