import { Construct } from 'constructs';
import { ComputeNetwork } from '@cdktf/provider-google/lib/compute-network';
import { ComputeSubnetwork } from '@cdktf/provider-google/lib/compute-subnetwork';
import { ComputeRouter } from '@cdktf/provider-google/lib/compute-router';
import { ComputeRouterNat } from '@cdktf/provider-google/lib/compute-router-nat';

export interface GcpNetworkProps {
  readonly name: string;
  readonly region: string;
  /** Primary range of the subnet (nodes, Nomad clients, bastion). @default '10.0.0.0/16' */
  readonly cidr?: string;
  /** Secondary range for GKE pods. @default '10.64.0.0/14' */
  readonly podsCidr?: string;
  /** Secondary range for GKE services. @default '10.68.0.0/20' */
  readonly servicesCidr?: string;
}

/**
 * Custom-mode VPC with one regional subnet (secondary ranges for a VPC-native GKE cluster) and
 * Cloud NAT, so nothing needs a public address.
 */
export class GcpNetwork extends Construct {
  readonly networkId: string;
  readonly networkSelfLink: string;
  readonly subnetworkId: string;
  readonly cidr: string;
  readonly podsCidr: string;
  readonly podsRangeName = 'pods';
  readonly servicesRangeName = 'services';

  constructor(scope: Construct, id: string, props: GcpNetworkProps) {
    super(scope, id);
    this.cidr = props.cidr ?? '10.0.0.0/16';
    this.podsCidr = props.podsCidr ?? '10.64.0.0/14';
    const servicesCidr = props.servicesCidr ?? '10.68.0.0/20';
    const network = new ComputeNetwork(this, 'Network', {
      name: props.name,
      autoCreateSubnetworks: false,
      routingMode: 'REGIONAL',
    });
    this.networkId = network.id;
    this.networkSelfLink = network.selfLink;
    const subnet = new ComputeSubnetwork(this, 'Subnet', {
      name: props.name,
      network: network.id,
      region: props.region,
      ipCidrRange: this.cidr,
      privateIpGoogleAccess: true,
      secondaryIpRange: [
        { rangeName: this.podsRangeName, ipCidrRange: this.podsCidr },
        { rangeName: this.servicesRangeName, ipCidrRange: servicesCidr },
      ],
      logConfig: { aggregationInterval: 'INTERVAL_10_MIN', flowSampling: 0.5, metadata: 'INCLUDE_ALL_METADATA' },
    });
    this.subnetworkId = subnet.id;
    const router = new ComputeRouter(this, 'Router', { name: props.name, network: network.id, region: props.region });
    new ComputeRouterNat(this, 'Nat', {
      name: props.name,
      router: router.name,
      region: props.region,
      natIpAllocateOption: 'AUTO_ONLY',
      sourceSubnetworkIpRangesToNat: 'ALL_SUBNETWORKS_ALL_IP_RANGES',
      logConfig: { enable: true, filter: 'ERRORS_ONLY' },
    });
  }
}
