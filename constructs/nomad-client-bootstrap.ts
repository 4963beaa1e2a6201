import * as fs from 'node:fs';
import * as path from 'node:path';

/** Path of the bootstrap template every Nomad client machine runs on first boot. */
export const BOOTSTRAP_TEMPLATE = path.join(__dirname, '..', 'images', 'nomad-client-bootstrap.sh.tpl');

export interface NomadClientBootstrapProps {
  readonly cloud: 'aws' | 'gcp';
  /** Base URL of the operator's package mirror (Docker and Nomad apt packages and its gpg.key). */
  readonly packageMirror: string;
  readonly nomadVersion: string;
  /** `host:port` of the Nomad servers' RPC endpoint (the load balancer, port 4647). */
  readonly serverAddress: string;
  readonly caPem: string;
  readonly clientCertPem: string;
  readonly clientKeyPem: string;
  /** CIDRs containers must not reach, beyond the metadata address. @default - none */
  readonly blockedCidrs?: string[];
  /** @default 'global' */
  readonly region?: string;
  /** @default 'default' */
  readonly datacenter?: string;
  /** @default 'linux-docker' */
  readonly nodeClass?: string;
  /** Hours an unused image may stay before the garbage collector removes it. @default 4 */
  readonly gcAfterHours?: number;
}

/** Renders images/nomad-client-bootstrap.sh.tpl; fails if a placeholder is left unfilled. */
export function renderNomadClientBootstrap(props: NomadClientBootstrapProps): string {
  const values: Record<string, string> = {
    CLOUD: props.cloud,
    PACKAGE_MIRROR: props.packageMirror.replace(/\/+$/, ''),
    NOMAD_VERSION: props.nomadVersion,
    SERVER_ADDRESS: props.serverAddress,
    CA_PEM: props.caPem,
    CLIENT_CERT_PEM: props.clientCertPem,
    CLIENT_KEY_PEM: props.clientKeyPem,
    BLOCKED_CIDRS: (props.blockedCidrs ?? []).join(' '),
    REGION: props.region ?? 'global',
    DATACENTER: props.datacenter ?? 'default',
    NODE_CLASS: props.nodeClass ?? 'linux-docker',
    GC_AFTER_HOURS: String(props.gcAfterHours ?? 4),
  };
  const template = fs.readFileSync(BOOTSTRAP_TEMPLATE, 'utf8');
  const rendered = template.replace(/@@([A-Z_]+)@@/g, (whole, name: string) => {
    if (!(name in values)) throw new Error(`nomad-client-bootstrap.sh.tpl uses ${whole}, which has no value`);
    return values[name];
  });
  return rendered;
}
