/**
 * Decides, the way a NetworkPolicy implementation does, whether a connection inside one namespace
 * is allowed by the NetworkPolicy objects (Kubernetes form, from kubernetes-manifests.ts): a pod
 * selected by no policy of a direction is open in that direction; otherwise some rule of a policy
 * selecting it must admit the peer and port. Only the selector forms Gyre writes are understood
 * (matchLabels, an empty namespaceSelector, ipBlock without except); others throw.
 */
export interface Pod {
  readonly name: string;
  readonly labels: Record<string, string>;
  /** A pod of another namespace (the policies govern only the namespace they are in). @default false */
  readonly elsewhere?: boolean;
}
export type Endpoint = { readonly pod: Pod } | { readonly ip: string };

const toInt = (ip: string) => ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
function inCidr(ip: string, cidr: string): boolean {
  if (ip === cidr) return true; // a destination given by its (unresolved) CIDR
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip) || !/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(cidr)) return false;
  const [base, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(base) / size);
}
const selects = (selector: any, labels: Record<string, string>) => {
  const keys = Object.keys(selector ?? {});
  if (keys.some((k) => k !== 'matchLabels')) throw new Error(`selector form not understood: ${JSON.stringify(selector)}`);
  return Object.entries(selector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
};
function peerMatches(peer: any, other: Endpoint): boolean {
  if (peer.ipBlock) {
    if (peer.ipBlock.except) throw new Error('ipBlock.except is not understood');
    return 'ip' in other && inCidr(other.ip, peer.ipBlock.cidr);
  }
  if (peer.namespaceSelector) {
    if (Object.keys(peer.namespaceSelector).length > 0) throw new Error('only an empty namespaceSelector is understood');
    return 'pod' in other; // any pod in any namespace, nothing outside the cluster
  }
  if (peer.podSelector) return 'pod' in other && !other.pod.elsewhere && selects(peer.podSelector, other.pod.labels);
  throw new Error(`peer form not understood: ${JSON.stringify(peer)}`);
}
function portMatches(ports: any[] | undefined, port: number, protocol: string): boolean {
  if (!ports || ports.length === 0) return true;
  return ports.some((p) => Number(p.port) === port && (p.protocol ?? 'TCP') === protocol);
}

function admitted(policies: any[], pod: Pod, direction: 'Ingress' | 'Egress', peer: Endpoint, port: number, protocol: string): boolean {
  const applying = policies.filter((p) => (p.spec.policyTypes ?? []).includes(direction) && selects(p.spec.podSelector, pod.labels));
  if (applying.length === 0) return true;
  const rulesKey = direction === 'Ingress' ? 'ingress' : 'egress';
  const peersKey = direction === 'Ingress' ? 'from' : 'to';
  return applying.some((p) => (p.spec[rulesKey] ?? []).some((rule: any) => {
    const peers: any[] | undefined = rule[peersKey];
    const peerOk = peers === undefined || peers.length === 0 || peers.some((candidate) => peerMatches(candidate, peer));
    return peerOk && portMatches(rule.ports, port, protocol);
  }));
}

/** Whether `from` may open a connection to `to` on port/protocol under the policies. */
export function mayConnect(policies: any[], from: Endpoint, to: Endpoint, port: number, protocol = 'TCP'): boolean {
  const egress = 'pod' in from && !from.pod.elsewhere ? admitted(policies, from.pod, 'Egress', to, port, protocol) : true;
  const ingress = 'pod' in to && !to.pod.elsewhere ? admitted(policies, to.pod, 'Ingress', from, port, protocol) : true;
  return egress && ingress;
}

/** The pods of the workloads among the objects: one per Deployment, StatefulSet and Job template. */
export function podsOf(objects: { object: any }[]): Pod[] {
  return objects
    .filter((o) => ['Deployment', 'StatefulSet', 'Job'].includes(o.object.kind))
    .map((o) => ({ name: o.object.metadata.name, labels: o.object.spec.template.metadata?.labels ?? {} }));
}
