import { Construct } from 'constructs';
import { NetworkPolicyV1 } from '@cdktf/provider-kubernetes/lib/network-policy-v1';
import { EDGE_PORTS } from './edge-config';
import { OPS_PORT, RUNTIME_PORT } from './roles';
import {
  CAN_REACH_DATABASE, CAN_REACH_GIT_SSH, CAN_REACH_HTTPS, CAN_REACH_NOMAD_API, CAN_REACH_SMTP, EDGE_LABELS, NOMAD_SERVER_LABELS, SERVES_OPS, roleLabels,
} from './labels';

/** Where the GKE metadata server answers Workload Identity token requests. */
export const GKE_METADATA_ENDPOINTS = [
  { cidr: '169.254.169.254/32', port: 80 },
  { cidr: '169.254.169.252/32', port: 988 },
];

export interface ControlPlaneNetworkPoliciesProps {
  readonly namespace: string;
  readonly cloud: 'aws' | 'gcp';
  /** Addresses of the database; only pods labelled gyre.dev/database may reach them. */
  readonly databaseCidrs: string[];
  /** @default 5432 */
  readonly databasePort?: number;
  /** Ranges Nomad clients connect from (they reach the servers' RPC port directly after joining). */
  readonly nomadClientCidrs: string[];
  /** Ports besides 443 the roles may open HTTPS connections on (Vault's, e.g. 8200). @default [] */
  readonly httpsPorts?: number[];
  /** The SMTP server's port, which pods labelled gyre.dev/smtp may reach. @default - no SMTP server: no such rule */
  readonly smtpPort?: number;
}

type Peer = { podSelector?: { matchLabels: Record<string, string> }; namespaceSelector?: Record<string, never>; ipBlock?: { cidr: string } };
type Port = { port: string; protocol?: string };
type Rule = { from?: Peer[]; to?: Peer[]; ports?: Port[] };

const tcp = (port: number): Port => ({ port: String(port), protocol: 'TCP' });
const pods = (matchLabels: Record<string, string>): Peer => ({ podSelector: { matchLabels } });
const cidr = (block: string): Peer => ({ ipBlock: { cidr: block } });

/**
 * NetworkPolicies of the gyre namespace: everything is denied, then each pod gets what its labels
 * (labels.ts) say it needs. Only the scheduler, nomad-autoscaler and the ACL bootstrap Job reach
 * the Nomad HTTP API; only the runtime roles and the migration Job reach the database; the api role
 * accepts connections only from the edge, and the edge from the load balancer.
 */
export class ControlPlaneNetworkPolicies extends Construct {
  constructor(scope: Construct, id: string, props: ControlPlaneNetworkPoliciesProps) {
    super(scope, id);
    if (props.databaseCidrs.length === 0) throw new Error('databaseCidrs (none) must list where the database is');
    const httpsPorts = [...new Set(props.httpsPorts ?? [])].filter((p) => p !== 443);
    for (const port of httpsPorts) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`httpsPorts (${port}) must be port numbers from 1 to 65535`);
    }
    if (props.smtpPort !== undefined && (!Number.isInteger(props.smtpPort) || props.smtpPort < 1 || props.smtpPort > 65535)) {
      throw new Error(`smtpPort (${props.smtpPort}) must be a port number from 1 to 65535`);
    }
    const ns = props.namespace;
    const policy = (name: string, selector: Record<string, string>, ingress?: Rule[], egress?: Rule[]) => {
      const types = [...(ingress ? ['Ingress'] : []), ...(egress ? ['Egress'] : [])];
      new NetworkPolicyV1(this, pascal(name), {
        metadata: { name, namespace: ns },
        spec: { podSelector: { matchLabels: selector }, policyTypes: types, ingress, egress },
      });
    };
    const api = roleLabels('api');

    policy('default-deny', {}, [], []);
    policy('dns', {}, undefined, [{ ports: [{ port: '53', protocol: 'UDP' }, { port: '53', protocol: 'TCP' }] }]);
    policy('edge', EDGE_LABELS,
      [{ from: [cidr('0.0.0.0/0')], ports: Object.values(EDGE_PORTS).map(tcp) }],
      [{ to: [pods(api)], ports: [tcp(RUNTIME_PORT)] }, { to: [pods(NOMAD_SERVER_LABELS)], ports: [tcp(4647)] }]);
    policy('api-from-edge', api, [{ from: [pods(EDGE_LABELS)], ports: [tcp(RUNTIME_PORT)] }]);
    // /healthz and /metrics: any pod in the cluster (Prometheus), nothing from outside it.
    policy('ops-scrape', SERVES_OPS, [{ from: [{ namespaceSelector: {} }], ports: [tcp(OPS_PORT)] }]);
    policy('database', CAN_REACH_DATABASE, undefined,
      [{ to: props.databaseCidrs.map(cidr), ports: [tcp(props.databasePort ?? 5432)] }]);
    policy('https', CAN_REACH_HTTPS, undefined, [
      { ports: [tcp(443), ...httpsPorts.map(tcp)] },
      ...(props.cloud === 'gcp' ? GKE_METADATA_ENDPOINTS.map((m) => ({ to: [cidr(m.cidr)], ports: [tcp(m.port)] })) : []),
    ]);
    policy('git-ssh', CAN_REACH_GIT_SSH, undefined, [{ ports: [tcp(22)] }]);
    if (props.smtpPort !== undefined) policy('smtp', CAN_REACH_SMTP, undefined, [{ ports: [tcp(props.smtpPort)] }]);
    policy('nomad-api-clients', CAN_REACH_NOMAD_API, undefined, [{ to: [pods(NOMAD_SERVER_LABELS)], ports: [tcp(4646)] }]);
    policy('nomad-servers', NOMAD_SERVER_LABELS,
      [
        { from: [pods(CAN_REACH_NOMAD_API)], ports: [tcp(4646)] },
        { from: [pods(EDGE_LABELS), pods(NOMAD_SERVER_LABELS), ...props.nomadClientCidrs.map(cidr)], ports: [tcp(4647)] },
        { from: [pods(NOMAD_SERVER_LABELS)], ports: [tcp(4648), { port: '4648', protocol: 'UDP' }] },
      ],
      [{ to: [pods(NOMAD_SERVER_LABELS)], ports: [tcp(4647), tcp(4648), { port: '4648', protocol: 'UDP' }] }]);
  }
}

function pascal(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_m, _d, c: string) => c.toUpperCase());
}
