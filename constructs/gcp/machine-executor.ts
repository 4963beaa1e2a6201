import { Construct } from 'constructs';
import { ComputeInstanceTemplate } from '@cdktf/provider-google/lib/compute-instance-template';
import { ComputeFirewall } from '@cdktf/provider-google/lib/compute-firewall';
import { ProjectIamMember } from '@cdktf/provider-google/lib/project-iam-member';
import { machineImageSlug, type MachineExecutorConfig } from '../machine-images';

export interface GcpMachineExecutorProps {
  /** Prefix of every resource's name, e.g. `gyre-prod-machines`. */
  readonly name: string;
  readonly project: string;
  /** The zone machines start in. */
  readonly zone: string;
  readonly networkId: string;
  readonly subnetworkId: string;
  /** `machine: image:` → source image (`projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts`). */
  readonly images: Readonly<Record<string, string>>;
  /** Resource class → machine type. @default {} (each template's `defaultMachineType`) */
  readonly instanceTypes?: Readonly<Record<string, string>>;
  /** @default 'n2-standard-2' */
  readonly defaultMachineType?: string;
  /** Spot VMs for every machine. @default false */
  readonly spot?: boolean;
  /** Where machines may connect (HTTPS): the control plane's load balancer. */
  readonly controlPlaneCidrs: string[];
  /** Further destinations jobs may reach on any port. @default [] */
  readonly egressCidrs?: string[];
  /** @default 100 */
  readonly diskGb?: number;
}

/** The network tag of every machine: the firewall rules apply to it. */
export const MACHINE_NETWORK_TAG = 'gyre-machine';

/**
 * What the `machines` role needs on Google Cloud: an instance template per machine image (no
 * service account, so a job has no Google credentials; Shielded VM; project SSH keys blocked; no
 * external address), egress firewall rules for the machines' network tag (HTTPS to the control
 * plane, what the environment allows, nothing else; GCE denies ingress by default), and
 * `grantLaunch`: compute.instanceAdmin.v1 on the project for the runtime's service account.
 */
export class GcpMachineExecutor extends Construct {
  /** Image → instance template name. */
  readonly instanceTemplates: Record<string, string> = {};
  private readonly props: GcpMachineExecutorProps;

  constructor(scope: Construct, id: string, props: GcpMachineExecutorProps) {
    super(scope, id);
    this.props = props;
    const images = Object.entries(props.images);
    if (images.length === 0) throw new Error('images maps no machine image to a source image; allowed: e.g. { "ubuntu-2204:current": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts" }');
    if (props.controlPlaneCidrs.length === 0) throw new Error('controlPlaneCidrs (none) must name where machines reach the control plane');
    const diskGb = props.diskGb ?? 100;
    if (diskGb < 10 || diskGb > 65_536) throw new Error(`diskGb (${diskGb}) must be between 10 and 65536`);

    for (const [image, source] of images) {
      const slug = machineImageSlug(image);
      const name = `${props.name}-${slug}`.slice(0, 63).replace(/-+$/, '');
      new ComputeInstanceTemplate(this, `Template-${slug}`, {
        project: props.project,
        name,
        description: `Gyre machine image ${image}`,
        machineType: props.defaultMachineType ?? 'n2-standard-2',
        disk: [{ sourceImage: source, boot: true, autoDelete: true, diskSizeGb: diskGb, diskType: 'pd-balanced' }],
        networkInterface: [{ network: props.networkId, subnetwork: props.subnetworkId }],
        tags: [MACHINE_NETWORK_TAG],
        metadata: { 'block-project-ssh-keys': 'true' },
        shieldedInstanceConfig: { enableSecureBoot: true, enableVtpm: true, enableIntegrityMonitoring: true },
        labels: { 'gyre-role': 'machine' },
      });
      this.instanceTemplates[image] = name;
    }

    new ComputeFirewall(this, 'EgressControlPlane', {
      project: props.project,
      name: `${props.name}-to-control-plane`,
      network: props.networkId,
      direction: 'EGRESS',
      priority: 900,
      targetTags: [MACHINE_NETWORK_TAG],
      destinationRanges: props.controlPlaneCidrs,
      allow: [{ protocol: 'tcp', ports: ['443'] }],
    });
    if ((props.egressCidrs ?? []).length > 0) {
      new ComputeFirewall(this, 'EgressAllowed', {
        project: props.project,
        name: `${props.name}-egress-allowed`,
        network: props.networkId,
        direction: 'EGRESS',
        priority: 950,
        targetTags: [MACHINE_NETWORK_TAG],
        destinationRanges: props.egressCidrs!,
        allow: [{ protocol: 'all' }],
      });
    }
    new ComputeFirewall(this, 'EgressDenyRest', {
      project: props.project,
      name: `${props.name}-deny-egress`,
      network: props.networkId,
      direction: 'EGRESS',
      priority: 1000,
      targetTags: [MACHINE_NETWORK_TAG],
      destinationRanges: ['0.0.0.0/0'],
      deny: [{ protocol: 'all' }],
    });
  }

  /** The runtime's GYRE_MACHINE_CONFIG. */
  get config(): MachineExecutorConfig {
    return {
      images: this.instanceTemplates,
      instanceTypes: { ...(this.props.instanceTypes ?? {}) },
      spot: this.props.spot ?? false,
      gcp: { project: this.props.project, zone: this.props.zone },
    };
  }

  /** Lets `member` (the runtime's service account) create, list and delete instances in the project. */
  grantLaunch(member: string): void {
    new ProjectIamMember(this, 'InstanceAdmin', { project: this.props.project, role: 'roles/compute.instanceAdmin.v1', member });
  }
}
