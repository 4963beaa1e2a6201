/**
 * Evaluates the DOCKER-USER rules a rendered Nomad client bootstrap script installs, the way
 * iptables does: first matching rule wins. Only the rule forms the script writes are understood;
 * anything else fails the test that uses it.
 */
export interface Packet {
  readonly dst: string;
  readonly proto: 'tcp' | 'udp';
  readonly port: number;
  /** A reply to a connection already allowed (conntrack ESTABLISHED). @default false */
  readonly established?: boolean;
}

interface Rule { dst?: string; proto?: string; dport?: number; established?: boolean; target: 'RETURN' | 'DROP' }

export function dockerUserRules(script: string): Rule[] {
  const lines = script.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('iptables -A DOCKER-USER'));
  if (lines.length === 0) throw new Error('the script adds no DOCKER-USER rules');
  return lines.map((line) => {
    const words = line.split(/\s+/).slice(3);
    const rule: Partial<Rule> = {};
    for (let i = 0; i < words.length; i += 1) {
      const w = words[i];
      if (w === '-d') rule.dst = words[++i];
      else if (w === '-p') rule.proto = words[++i];
      else if (w === '--dport') rule.dport = Number(words[++i]);
      else if (w === '-m' && words[i + 1] === 'conntrack' && words[i + 2] === '--ctstate' && words[i + 3] === 'RELATED,ESTABLISHED') { rule.established = true; i += 3; }
      else if (w === '-j') rule.target = words[++i] as Rule['target'];
      else throw new Error(`rule form not understood: ${line}`);
    }
    if (rule.target !== 'RETURN' && rule.target !== 'DROP') throw new Error(`rule without a known target: ${line}`);
    return rule as Rule;
  });
}

const toInt = (ip: string) => ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
function inCidr(ip: string, cidr: string): boolean {
  const [base, len] = cidr.includes('/') ? cidr.split('/') : [cidr, '32'];
  const size = 2 ** (32 - Number(len));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(base) / size);
}

/** True when the packet leaves DOCKER-USER towards Docker's own (accepting) rules. */
export function containerMayReach(script: string, packet: Packet): boolean {
  for (const rule of dockerUserRules(script)) {
    if (rule.established && !packet.established) continue;
    if (rule.dst && !inCidr(packet.dst, rule.dst)) continue;
    if (rule.proto && rule.proto !== packet.proto) continue;
    if (rule.dport !== undefined && rule.dport !== packet.port) continue;
    return rule.target === 'RETURN';
  }
  return true;
}
