import { Construct } from 'constructs';
import { cidrSubnet } from '../cidr';
import { Vpc } from '@cdktf/provider-aws/lib/vpc';
import { Subnet } from '@cdktf/provider-aws/lib/subnet';
import { InternetGateway } from '@cdktf/provider-aws/lib/internet-gateway';
import { NatGateway } from '@cdktf/provider-aws/lib/nat-gateway';
import { Eip } from '@cdktf/provider-aws/lib/eip';
import { RouteTable } from '@cdktf/provider-aws/lib/route-table';
import { RouteTableAssociation } from '@cdktf/provider-aws/lib/route-table-association';

export interface AwsNetworkProps {
  /** Prefix for resource names and the EKS cluster name subnets are tagged for. */
  readonly name: string;
  /** Availability zones, one public and one private subnet in each (2 or 3). */
  readonly zones: string[];
  /** @default '10.0.0.0/16' */
  readonly cidr?: string;
  /** One NAT gateway per zone instead of one shared. @default false - one NAT gateway (cheaper, one zone's failure cuts egress) */
  readonly natPerZone?: boolean;
}

/**
 * VPC with a public and a private subnet per zone and NAT for the private side.
 *
 * Subnets carry the tags the Kubernetes AWS load-balancer integration looks for, so a LoadBalancer
 * Service lands in the public subnets.
 */
export class AwsNetwork extends Construct {
  readonly vpcId: string;
  readonly cidr: string;
  readonly publicSubnetIds: string[];
  readonly privateSubnetIds: string[];

  constructor(scope: Construct, id: string, props: AwsNetworkProps) {
    super(scope, id);
    const cidr = props.cidr ?? '10.0.0.0/16';
    if (props.zones.length < 2 || props.zones.length > 3) {
      throw new Error(`zones (${props.zones.length}) must list 2 or 3 availability zones`);
    }
    const prefix = Number(cidr.split('/')[1]);
    if (!(prefix >= 16 && prefix <= 18)) throw new Error(`cidr (${cidr}) must be a /16 to /18`);
    this.cidr = cidr;
    const clusterTag = `kubernetes.io/cluster/${props.name}`;

    const vpc = new Vpc(this, 'Vpc', {
      cidrBlock: cidr,
      enableDnsHostnames: true,
      enableDnsSupport: true,
      tags: { Name: props.name },
    });
    this.vpcId = vpc.id;
    const igw = new InternetGateway(this, 'InternetGateway', { vpcId: vpc.id, tags: { Name: props.name } });

    const publicRoutes = new RouteTable(this, 'PublicRoutes', {
      vpcId: vpc.id,
      route: [{ cidrBlock: '0.0.0.0/0', gatewayId: igw.id }],
      tags: { Name: `${props.name}-public` },
    });

    // Public subnets take the low /20s and private subnets the /19s above them.
    const publicSubnets = props.zones.map((zone, i) => new Subnet(this, `Public${i}`, {
      vpcId: vpc.id,
      availabilityZone: zone,
      cidrBlock: cidrSubnet(cidr, 4, i),
      mapPublicIpOnLaunch: false,
      tags: { Name: `${props.name}-public-${zone}`, 'kubernetes.io/role/elb': '1', [clusterTag]: 'shared' },
    }));
    publicSubnets.forEach((s, i) => new RouteTableAssociation(this, `PublicRoutes${i}`, { subnetId: s.id, routeTableId: publicRoutes.id }));

    const natCount = props.natPerZone ? props.zones.length : 1;
    const nats = Array.from({ length: natCount }, (_, i) => {
      const eip = new Eip(this, `NatAddress${i}`, { domain: 'vpc', tags: { Name: `${props.name}-nat-${i}` } });
      return new NatGateway(this, `Nat${i}`, { allocationId: eip.id, subnetId: publicSubnets[i].id, tags: { Name: `${props.name}-nat-${i}` } });
    });

    const privateSubnets = props.zones.map((zone, i) => {
      const subnet = new Subnet(this, `Private${i}`, {
        vpcId: vpc.id,
        availabilityZone: zone,
        cidrBlock: cidrSubnet(cidr, 3, i + 2),
        tags: { Name: `${props.name}-private-${zone}`, 'kubernetes.io/role/internal-elb': '1', [clusterTag]: 'shared' },
      });
      const routes = new RouteTable(this, `PrivateRoutes${i}`, {
        vpcId: vpc.id,
        route: [{ cidrBlock: '0.0.0.0/0', natGatewayId: nats[i % natCount].id }],
        tags: { Name: `${props.name}-private-${zone}` },
      });
      new RouteTableAssociation(this, `PrivateRoutesAssociation${i}`, { subnetId: subnet.id, routeTableId: routes.id });
      return subnet;
    });

    this.publicSubnetIds = publicSubnets.map((s) => s.id);
    this.privateSubnetIds = privateSubnets.map((s) => s.id);
  }
}
