import { Construct } from 'constructs';
import { ContainerCluster } from '@cdktf/provider-google/lib/container-cluster';
import { ContainerNodePool } from '@cdktf/provider-google/lib/container-node-pool';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';
import { ServiceAccountIamMember } from '@cdktf/provider-google/lib/service-account-iam-member';
import { ProjectIamMember } from '@cdktf/provider-google/lib/project-iam-member';
import { IKubernetesCluster } from '../types';

export interface GkeClusterProps {
  readonly clusterName: string;
  readonly project: string;
  /** Region; the cluster is regional (control plane and nodes across zones). */
  readonly region: string;
  /** Zones the node pool uses. */
  readonly zones: string[];
  readonly networkId: string;
  readonly subnetworkId: string;
  readonly podsRangeName: string;
  readonly servicesRangeName: string;
  /** Kubernetes minor version, e.g. `1.31`. */
  readonly version: string;
  /** CIDRs allowed to reach the control-plane endpoint. @default - only the VPC */
  readonly apiAllowedCidrs?: string[];
  /** /28 the control plane peers into. @default '172.16.0.0/28' */
  readonly masterCidr?: string;
  /** @default 'n2-standard-4' */
  readonly machineType?: string;
  /** Nodes per zone, minimum. @default 1 */
  readonly minNodesPerZone?: number;
  /** Nodes per zone, maximum. @default 3 */
  readonly maxNodesPerZone?: number;
}

/**
 * Private regional GKE cluster: nodes have no public addresses, pods get cloud identities through
 * Workload Identity, NetworkPolicies are enforced (Dataplane V2), and nodes run as a service
 * account that can only write logs and metrics.
 */
export class GkeCluster extends Construct implements IKubernetesCluster {
  readonly clusterName: string;
  readonly endpoint: string;
  readonly caCertificate: string;
  /** Network tag of the nodes (firewall rules that let VMs reach pods target it). */
  readonly nodeTag: string;
  private readonly project: string;

  constructor(scope: Construct, id: string, props: GkeClusterProps) {
    super(scope, id);
    const minNodes = props.minNodesPerZone ?? 1;
    const maxNodes = props.maxNodesPerZone ?? 3;
    if (minNodes < 0 || maxNodes < 1 || maxNodes < minNodes) {
      throw new Error(`maxNodesPerZone (${maxNodes}) must be at least 1 and at least minNodesPerZone (${minNodes})`);
    }
    this.project = props.project;
    this.nodeTag = `${props.clusterName}-node`;

    const nodeAccount = new ServiceAccount(this, 'NodeAccount', {
      accountId: `${props.clusterName}-node`.slice(0, 30),
      displayName: `${props.clusterName} GKE nodes`,
      project: props.project,
    });
    ['roles/logging.logWriter', 'roles/monitoring.metricWriter', 'roles/monitoring.viewer', 'roles/stackdriver.resourceMetadata.writer', 'roles/artifactregistry.reader']
      .forEach((role, i) => new ProjectIamMember(this, `NodeRole${i}`, { project: props.project, role, member: nodeAccount.member }));

    const cluster = new ContainerCluster(this, 'Cluster', {
      name: props.clusterName,
      project: props.project,
      location: props.region,
      network: props.networkId,
      subnetwork: props.subnetworkId,
      minMasterVersion: props.version,
      releaseChannel: { channel: 'STABLE' },
      removeDefaultNodePool: true,
      initialNodeCount: 1,
      deletionProtection: true,
      enableShieldedNodes: true,
      networkingMode: 'VPC_NATIVE',
      // GKE Dataplane V2 enforces NetworkPolicies (the control plane's namespace denies by default).
      datapathProvider: 'ADVANCED_DATAPATH',
      ipAllocationPolicy: { clusterSecondaryRangeName: props.podsRangeName, servicesSecondaryRangeName: props.servicesRangeName },
      privateClusterConfig: {
        enablePrivateNodes: true,
        enablePrivateEndpoint: (props.apiAllowedCidrs ?? []).length === 0,
        masterIpv4CidrBlock: props.masterCidr ?? '172.16.0.0/28',
      },
      masterAuthorizedNetworksConfig: {
        cidrBlocks: (props.apiAllowedCidrs ?? []).map((cidrBlock) => ({ cidrBlock, displayName: 'operator' })),
      },
      workloadIdentityConfig: { workloadPool: `${props.project}.svc.id.goog` },
      lifecycle: { ignoreChanges: ['node_config', 'initial_node_count'] },
    });
    this.clusterName = cluster.name;
    this.endpoint = `https://${cluster.endpoint}`;
    this.caCertificate = cluster.masterAuth.clusterCaCertificate;

    new ContainerNodePool(this, 'Nodes', {
      namePrefix: `${props.clusterName}-`,
      project: props.project,
      cluster: cluster.id,
      location: props.region,
      nodeLocations: props.zones,
      initialNodeCount: minNodes,
      autoscaling: { minNodeCount: minNodes, maxNodeCount: maxNodes },
      management: { autoRepair: true, autoUpgrade: true },
      nodeConfig: {
        tags: [this.nodeTag],
        machineType: props.machineType ?? 'n2-standard-4',
        diskSizeGb: 100,
        diskType: 'pd-balanced',
        serviceAccount: nodeAccount.email,
        oauthScopes: ['https://www.googleapis.com/auth/cloud-platform'],
        workloadMetadataConfig: { mode: 'GKE_METADATA' },
        shieldedInstanceConfig: { enableSecureBoot: true, enableIntegrityMonitoring: true },
        metadata: { 'disable-legacy-endpoints': 'true' },
      },
      lifecycle: { ignoreChanges: ['initial_node_count'], createBeforeDestroy: true },
    });
  }

  /**
   * A Google service account that only the named Kubernetes service account can act as
   * (Workload Identity). Grant permissions to the returned account's `member`.
   */
  serviceAccountIdentity(id: string, namespace: string, serviceAccount: string, accountId: string): ServiceAccount {
    const account = new ServiceAccount(this, id, { accountId, project: this.project, displayName: `${namespace}/${serviceAccount}` });
    new ServiceAccountIamMember(this, `${id}WorkloadIdentity`, {
      serviceAccountId: account.name,
      role: 'roles/iam.workloadIdentityUser',
      member: `serviceAccount:${this.project}.svc.id.goog[${namespace}/${serviceAccount}]`,
    });
    return account;
  }

  identityAnnotation(email: string): Record<string, string> {
    return { 'iam.gke.io/gcp-service-account': email };
  }
}
