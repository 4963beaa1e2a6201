import * as fs from 'node:fs';
import * as path from 'node:path';

/** Path of the bootstrap template every Nomad client machine runs on first boot. */
export const BOOTSTRAP_TEMPLATE = path.join(__dirname, '..', 'images', 'nomad-client-bootstrap.sh.tpl');

/** The instance metadata address build containers may never reach (except its DNS, on GCE). */
export const METADATA_ADDRESS = '169.254.169.254';

/**
 * How a client authenticates to the registry holding the agent image. `ecr`: the
 * amazon-ecr-credential-helper with the instance's role; `gce`: an access token of the machine's
 * service account from the metadata server; `docker-config`: a Docker config.json (its contents,
 * usually a Terraform `file(…)` expression); `none`: anonymous pulls.
 */
export type ClientRegistryAuth =
  | { readonly kind: 'ecr'; readonly registryHost: string }
  | { readonly kind: 'gce'; readonly registryHost: string }
  | { readonly kind: 'docker-config'; readonly configJson: string }
  | { readonly kind: 'none' };

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
  /** The network's DNS resolvers; containers may reach them on port 53 even inside blocked ranges. */
  readonly dnsResolvers: string[];
  /** CIDRs containers must not reach, beyond the metadata address. @default - none */
  readonly blockedCidrs?: string[];
  /** @default - { kind: 'none' } */
  readonly registryAuth?: ClientRegistryAuth;
  /** Minutes a draining client gives running tasks before it stops them. @default 15 */
  readonly drainDeadlineMinutes?: number;
  /** @default 'global' */
  readonly region?: string;
  /** @default 'default' */
  readonly datacenter?: string;
  /** @default 'linux-docker' */
  readonly nodeClass?: string;
  /** Hours an unused image may stay before the garbage collector removes it. @default 4 */
  readonly gcAfterHours?: number;
  /**
   * Pull-through caches of Docker Hub the engine pulls through (`registry-mirrors` in
   * /etc/docker/daemon.json), e.g. `https://hub-cache.example.com`. @default - pulls go to Docker Hub
   */
  readonly registryMirrors?: string[];
}

/** A registry mirror as Docker takes it: a scheme and a host, nothing after. */
const REGISTRY_MIRROR = /^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/?$/;

/** /etc/docker/daemon.json of a client. */
export function dockerDaemonConfig(registryMirrors: readonly string[] = []): Record<string, unknown> {
  registryMirrors.forEach((mirror, i) => {
    if (!REGISTRY_MIRROR.test(mirror)) throw new Error(`registryMirrors[${i}] (${mirror}) must be an https:// URL of a host with no path, e.g. https://hub-cache.example.com`);
  });
  return {
    ...(registryMirrors.length > 0 ? { 'registry-mirrors': registryMirrors.map((m) => m.replace(/\/$/, '')) } : {}),
    // Container log files (a chatty service container's, for a whole job) stay bounded: steps'
    // output reaches Gyre through the agent, not through these files.
    'log-driver': 'json-file',
    'log-opts': { 'max-size': '10m', 'max-file': '3' },
  };
}

/**
 * The DOCKER-USER chain, in order (first match wins): replies to connections already allowed, DNS
 * to the resolvers, then the drops, then everything else.
 */
export function containerFirewallRules(dnsResolvers: string[], blockedCidrs: string[]): string[] {
  return [
    'iptables -A DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN',
    ...dnsResolvers.flatMap((r) => ['udp', 'tcp'].map((proto) => `iptables -A DOCKER-USER -d ${r}/32 -p ${proto} --dport 53 -j RETURN`)),
    ...[`${METADATA_ADDRESS}/32`, ...blockedCidrs].map((cidr) => `iptables -A DOCKER-USER -d ${cidr} -j DROP`),
    'iptables -A DOCKER-USER -j RETURN',
  ];
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Renders images/nomad-client-bootstrap.sh.tpl; fails if a placeholder is left unfilled. */
export function renderNomadClientBootstrap(props: NomadClientBootstrapProps): string {
  if (props.dnsResolvers.length === 0) throw new Error('dnsResolvers (none) must list the network\'s DNS resolvers; build containers need DNS');
  for (const r of props.dnsResolvers) if (!IPV4.test(r)) throw new Error(`dnsResolvers (${r}) must be IPv4 addresses`);
  const deadline = props.drainDeadlineMinutes ?? 15;
  if (!Number.isInteger(deadline) || deadline < 1 || deadline > 120) throw new Error(`drainDeadlineMinutes (${deadline}) must be a whole number from 1 to 120`);
  const auth = registryAuthParts(props.registryAuth ?? { kind: 'none' });
  const watch = props.cloud === 'aws' ? AWS_LIFECYCLE_WATCH : '';
  const values: Record<string, string> = {
    CLOUD: props.cloud,
    PACKAGE_MIRROR: props.packageMirror.replace(/\/+$/, ''),
    NOMAD_VERSION: props.nomadVersion,
    SERVER_ADDRESS: props.serverAddress,
    CA_PEM: props.caPem,
    CLIENT_CERT_PEM: props.clientCertPem,
    CLIENT_KEY_PEM: props.clientKeyPem,
    FIREWALL_RULES: containerFirewallRules(props.dnsResolvers, props.blockedCidrs ?? []).join('\n'),
    REGION: props.region ?? 'global',
    DATACENTER: props.datacenter ?? 'default',
    NODE_CLASS: props.nodeClass ?? 'linux-docker',
    GC_AFTER_HOURS: String(props.gcAfterHours ?? 4),
    DRAIN_DEADLINE: `${deadline}m`,
    // systemd must outwait the drain, or it kills the agent mid-drain.
    STOP_TIMEOUT_SECONDS: String(deadline * 60 + 120),
    EXTRA_PACKAGES: auth.packages.join(' '),
    REGISTRY_AUTH: auth.setup,
    DOCKER_AUTH_HCL: auth.hcl,
    DOCKER_DAEMON_JSON: JSON.stringify(dockerDaemonConfig(props.registryMirrors), null, 2),
    LIFECYCLE_WATCH: watch,
    EXTRA_UNITS: props.cloud === 'aws' ? 'gyre-lifecycle-watch.service' : '',
  };
  const template = fs.readFileSync(BOOTSTRAP_TEMPLATE, 'utf8');
  return template.replace(/@@([A-Z_]+)@@/g, (whole, name: string) => {
    if (!(name in values)) throw new Error(`nomad-client-bootstrap.sh.tpl uses ${whole}, which has no value`);
    return values[name];
  });
}

const AUTH_FILE = '/etc/nomad.d/docker-auth.json';

function registryAuthParts(auth: ClientRegistryAuth): { packages: string[]; setup: string; hcl: string } {
  const hcl = `    auth {\n      config = "${AUTH_FILE}"\n    }`;
  const writeConfig = (json: string) => `cat > ${AUTH_FILE} <<'JSON'\n${json}\nJSON\nchmod 0600 ${AUTH_FILE}`;
  switch (auth.kind) {
    case 'none':
      return { packages: [], setup: '# Anonymous pulls: no registry credentials.', hcl: '' };
    case 'docker-config':
      return { packages: [], setup: writeConfig(auth.configJson), hcl };
    case 'ecr':
      // The helper signs ECR's token request with the instance role (AmazonEC2ContainerRegistryReadOnly).
      return { packages: ['amazon-ecr-credential-helper'], setup: writeConfig(JSON.stringify({ credHelpers: { [auth.registryHost]: 'ecr-login' } })), hcl };
    case 'gce':
      return {
        packages: [],
        setup: [
          `cat > /usr/local/bin/docker-credential-gyre-gce <<'HELPER'`,
          '#!/bin/sh',
          '# Docker credential helper: an access token of the machine\'s service account (Artifact Registry reader).',
          '[ "$1" = get ] || exit 1',
          'read -r server',
          `token=$(curl -fsS -H 'Metadata-Flavor: Google' http://${METADATA_ADDRESS}/computeMetadata/v1/instance/service-accounts/default/token | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')`,
          `printf '{"ServerURL":"%s","Username":"oauth2accesstoken","Secret":"%s"}\\n' "$server" "$token"`,
          'HELPER',
          'chmod 0755 /usr/local/bin/docker-credential-gyre-gce',
          writeConfig(JSON.stringify({ credHelpers: { [auth.registryHost]: 'gyre-gce' } })),
        ].join('\n'),
        hcl,
      };
  }
}

/**
 * AWS: the Auto Scaling group holds a terminating instance in Terminating:Wait (lifecycle hook);
 * this watcher sees it in the instance metadata and stops Nomad, which drains the node
 * (drain_on_shutdown) before exiting, then powers off. Scale-ins and instance refreshes (new
 * certificates, a new Nomad version) both go through it.
 */
const AWS_LIFECYCLE_WATCH = `
cat > /usr/local/sbin/gyre-lifecycle-watch <<'WATCH'
#!/bin/bash
set -u
while sleep 10; do
  token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://${METADATA_ADDRESS}/latest/api/token) || continue
  state=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://${METADATA_ADDRESS}/latest/meta-data/autoscaling/target-lifecycle-state) || continue
  if [ "$state" = Terminated ]; then
    systemctl stop nomad
    systemctl poweroff
    exit 0
  fi
done
WATCH
chmod 0755 /usr/local/sbin/gyre-lifecycle-watch
cat > /etc/systemd/system/gyre-lifecycle-watch.service <<'UNIT'
[Unit]
Description=Drain Nomad when the Auto Scaling group terminates this instance
After=nomad.service
[Service]
ExecStart=/usr/local/sbin/gyre-lifecycle-watch
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
`;
