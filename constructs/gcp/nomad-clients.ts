import { Construct } from 'constructs';
import { ComputeInstanceTemplate } from '@cdktf/provider-google/lib/compute-instance-template';
import { ComputeRegionInstanceGroupManager } from '@cdktf/provider-google/lib/compute-region-instance-group-manager';
import { ComputeRegionAutoscaler } from '@cdktf/provider-google/lib/compute-region-autoscaler';
import { ComputeFirewall } from '@cdktf/provider-google/lib/compute-firewall';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';
import { ProjectIamCustomRole } from '@cdktf/provider-google/lib/project-iam-custom-role';
import { ProjectIamMember } from '@cdktf/provider-google/lib/project-iam-member';
import type { NomadClientGroupProps } from '../nomad-tls';
import { METADATA_ADDRESS, renderNomadClientBootstrap } from '../nomad-client-bootstrap';

export interface GcpNomadClientsProps extends NomadClientGroupProps {
  readonly project: string;
  readonly region: string;
  readonly zones: string[];
  readonly networkId: string;
  readonly subnetworkId: string;
  /** Ranges inside the VPC (subnet and pods) that may reach Nomad's ports. */
  readonly internalCidrs: string[];
  /** @default 'n2-standard-8' */
  readonly machineType?: string;
  /** Let Compute Engine scale on CPU instead of nomad-autoscaler. @default false - nomad-autoscaler scales the group */
  readonly cloudAutoscaler?: boolean;
}

/**
 * Nomad client machines on GCP: instance template, regional managed instance group, firewalls.
 * An instance being replaced drains Nomad as it shuts down (drain_on_shutdown), within the time
 * Compute Engine gives a shutdown; the group surges new instances before removing old ones.
 */
export class GcpNomadClients extends Construct {
  readonly instanceGroupManagerName: string;
  readonly networkTag: string;
  private readonly props: GcpNomadClientsProps;
  private readonly baseInstanceName: string;

  constructor(scope: Construct, id: string, props: GcpNomadClientsProps) {
    super(scope, id);
    this.props = props;
    const minClients = props.minClients ?? 1;
    const maxClients = props.maxClients ?? 10;
    if (minClients < 0 || maxClients < 1 || maxClients < minClients) {
      throw new Error(`maxClients (${maxClients}) must be at least 1 and at least minClients (${minClients})`);
    }
    this.networkTag = `${props.name}-nomad-client`;
    this.baseInstanceName = `${props.name}-nomad`;

    new ComputeFirewall(this, 'NomadPorts', {
      name: `${props.name}-nomad-internal`,
      project: props.project,
      network: props.networkId,
      direction: 'INGRESS',
      sourceRanges: props.internalCidrs,
      targetTags: [this.networkTag],
      allow: [{ protocol: 'tcp', ports: ['4646-4648'] }, { protocol: 'udp', ports: ['4648'] }],
    });
    if ((props.sshRerunCidrs ?? []).length > 0) {
      new ComputeFirewall(this, 'SshReruns', {
        name: `${props.name}-nomad-ssh-reruns`,
        project: props.project,
        network: props.networkId,
        direction: 'INGRESS',
        sourceRanges: props.sshRerunCidrs,
        targetTags: [this.networkTag],
        allow: [{ protocol: 'tcp', ports: ['64535-65535'] }],
      });
    }

    // A dedicated account keeps the machines off the default one; it may write logs and, when the
    // agent image lives in Artifact Registry, read images. Build containers cannot use it
    // (the metadata address is blocked for them, DNS excepted).
    const account = new ServiceAccount(this, 'Account', {
      accountId: `${props.name}-nomad`.slice(0, 30),
      project: props.project,
      displayName: 'Gyre Nomad clients',
    });
    const pullsFromArtifactRegistry = props.registryAuth?.kind === 'gce';
    if (pullsFromArtifactRegistry) {
      new ProjectIamMember(this, 'ArtifactRegistryReader', { project: props.project, role: 'roles/artifactregistry.reader', member: account.member });
    }

    const template = new ComputeInstanceTemplate(this, 'Template', {
      namePrefix: `${props.name}-nomad-`,
      project: props.project,
      region: props.region,
      machineType: props.machineType ?? 'n2-standard-8',
      tags: [this.networkTag],
      disk: [{ sourceImage: 'ubuntu-os-cloud/ubuntu-2404-lts-amd64', diskSizeGb: props.diskGb ?? 200, diskType: 'pd-balanced', boot: true, autoDelete: true }],
      networkInterface: [{ subnetwork: props.subnetworkId }],
      serviceAccount: {
        email: account.email,
        scopes: ['https://www.googleapis.com/auth/logging.write', ...(pullsFromArtifactRegistry ? ['https://www.googleapis.com/auth/cloud-platform.read-only'] : [])],
      },
      shieldedInstanceConfig: { enableSecureBoot: true, enableVtpm: true, enableIntegrityMonitoring: true },
      metadata: {
        'enable-oslogin': 'TRUE',
        'block-project-ssh-keys': 'TRUE',
        'startup-script': renderNomadClientBootstrap({
          cloud: 'gcp',
          packageMirror: props.packageMirror,
          nomadVersion: props.nomadVersion,
          serverAddress: props.serverAddress,
          caPem: props.tls.caPem,
          clientCertPem: props.tls.client.certPem,
          clientKeyPem: props.tls.client.keyPem,
          blockedCidrs: props.blockedCidrs,
          // GCE's resolver is the metadata address itself: DNS only, the rest of it stays blocked.
          dnsResolvers: [METADATA_ADDRESS],
          registryAuth: props.registryAuth,
          registryMirrors: props.registryMirrors,
          drainDeadlineMinutes: props.drainDeadlineMinutes,
          region: props.tls.region,
        }),
      },
      lifecycle: { createBeforeDestroy: true },
    });

    const group = new ComputeRegionInstanceGroupManager(this, 'Group', {
      name: `${props.name}-nomad`,
      project: props.project,
      region: props.region,
      baseInstanceName: this.baseInstanceName,
      distributionPolicyZones: props.zones,
      version: [{ instanceTemplate: template.selfLinkUnique, name: 'primary' }],
      targetSize: props.cloudAutoscaler ? undefined : minClients,
      updatePolicy: { type: 'PROACTIVE', minimalAction: 'REPLACE', maxSurgeFixed: props.zones.length, maxUnavailableFixed: 0 },
      lifecycle: { ignoreChanges: ['target_size'] },
    });
    this.instanceGroupManagerName = group.name;

    if (props.cloudAutoscaler) {
      new ComputeRegionAutoscaler(this, 'Autoscaler', {
        name: `${props.name}-nomad`,
        project: props.project,
        region: props.region,
        target: group.id,
        autoscalingPolicy: { minReplicas: minClients, maxReplicas: maxClients, cooldownPeriod: 180, cpuUtilization: { target: 0.6 } },
      });
    }
  }

  /**
   * Lets the member (nomad-autoscaler's service account) resize this group and delete its
   * instances, through a custom role bound with a condition naming this group only.
   */
  grantAutoscaling(member: string): void {
    const role = new ProjectIamCustomRole(this, 'AutoscalerRole', {
      roleId: `${this.props.name.replace(/-/g, '_')}_nomad_autoscaler`,
      project: this.props.project,
      title: 'Gyre nomad-autoscaler',
      permissions: [
        'compute.instanceGroupManagers.get',
        'compute.instanceGroupManagers.update',
        'compute.instanceGroups.get',
        'compute.instances.get',
        'compute.instances.delete',
      ],
    });
    const groupPath = `projects/${this.props.project}/regions/${this.props.region}/instanceGroupManagers/${this.instanceGroupManagerName}`;
    new ProjectIamMember(this, 'AutoscalerBinding', {
      project: this.props.project,
      role: role.name,
      member,
      condition: {
        title: 'only-this-group',
        expression: `resource.name == "${groupPath}" || resource.name.extract("/instances/{name}").startsWith("${this.baseInstanceName}-")`,
      },
    });
  }
}
