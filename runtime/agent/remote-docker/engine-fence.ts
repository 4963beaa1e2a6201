import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What keeps one remote engine to itself on a host that runs many: a network namespace and a
 * cgroup of its own, both named after the engine's id (so a sweep can find them with the id alone).
 *
 * Network: the engine's `podman system service` runs in a network namespace `gyre-rd-<id>`, so
 * every bridge, address and firewall rule Podman makes for it (its default network and any the job
 * creates) lives there, out of reach of the host's and every other engine's. Its one way out is a
 * veth pair, `gyrerd<slot>` on the host, with a /30 of `uplinkRange` and NAT, so builds still pull
 * and download. The host's FORWARD chain (`GYRE-RD`) drops anything that starts a connection into
 * an engine's link (another engine, a container of the host's engine, the outside) and anything an
 * engine sends to another engine's link or to the host engine's bridges.
 *
 * Limits (cgroup v1): the service is started in `/gyre-rd/<id>` of the memory, cpu and pids
 * hierarchies (limits from the job's resource class), in a cgroup namespace rooted there and a
 * mount namespace where that cgroup is mounted over the hierarchy's root. So every cgroup Podman
 * and runc make for the engine's containers (even one a job names with `--cgroup-parent /`) is
 * under the engine's, and the limits bound all its containers and the service together.
 */
export interface EngineFence {
  /** The command and arguments that start `argv` inside the fence. */
  command(argv: readonly string[]): { file: string; args: string[]; env: NodeJS.ProcessEnv };
  /** What the step's output says about it. */
  readonly summary: string;
}

export interface EngineLimits {
  /** Cores (fractions allowed). */
  readonly cpu: number;
  readonly memoryMb: number;
  /** Processes and threads of the engine and all its containers together. */
  readonly pids: number;
}

export interface FenceOptions {
  /** Addresses of the engines' links to the host, a /30 each. @default 198.18.0.0/16 (RFC 2544's benchmarking range, routed nowhere) */
  readonly uplinkRange?: string;
  readonly limits: EngineLimits;
}

const NETNS_PREFIX = 'gyre-rd-';
const LINK_PREFIX = 'gyrerd';
const CGROUP_PARENT = 'gyre-rd';
/** The v1 hierarchies the limits are set in. */
const CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
export const DEFAULT_UPLINK_RANGE = '198.18.0.0/16';

const exec = (file: string, args: string[]) =>
  new Promise<{ code: number; output: string }>((resolve) =>
    execFile(file, args, { timeout: 30_000 }, (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` })),
  );

async function must(file: string, args: string[]): Promise<void> {
  const { code, output } = await exec(file, args);
  if (code !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${output.trim().slice(0, 300)}`);
}

/** The mount point of each cgroup v1 hierarchy on this host (`cpu` may be `/sys/fs/cgroup/cpu,cpuacct`); empty on a cgroup v2-only host. */
function cgroupV1Mounts(): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!right?.startsWith('cgroup ')) continue;
    const mountPoint = left.split(' ')[4];
    for (const option of right.split(' ')[2]?.split(',') ?? []) if ((CONTROLLERS as readonly string[]).includes(option)) mounts.set(option, mountPoint);
  }
  return mounts;
}

const ipv4 = (text: string) => text.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
const dotted = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/** Checks `iptables` for a rule and appends it when missing (two agents starting at once at worst add one twice). */
async function ensureRule(table: string, chain: string, rule: string[], insert = false): Promise<void> {
  if ((await exec('iptables', ['-w', '-t', table, '-C', chain, ...rule])).code === 0) return;
  await must('iptables', ['-w', '-t', table, insert ? '-I' : '-A', chain, ...(insert ? ['1'] : []), ...rule]);
}

/** The host's rules for every engine's link; made once per agent, idempotent across agents. */
export async function ensureHostRules(uplinkRange = DEFAULT_UPLINK_RANGE): Promise<void> {
  await exec('iptables', ['-w', '-N', 'GYRE-RD']);
  const link = `${LINK_PREFIX}+`;
  // Order matters: answers to the engine's own connections, then the drops, then its way out.
  await ensureRule('filter', 'GYRE-RD', ['-o', link, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT']);
  await ensureRule('filter', 'GYRE-RD', ['-o', link, '-j', 'DROP']);
  for (const bridge of ['podman+', 'cni-podman+', 'docker0', 'br-+']) await ensureRule('filter', 'GYRE-RD', ['-i', link, '-o', bridge, '-j', 'DROP']);
  await ensureRule('filter', 'GYRE-RD', ['-i', link, '-j', 'ACCEPT']);
  await ensureRule('filter', 'FORWARD', ['-j', 'GYRE-RD'], true);
  await exec('iptables', ['-w', '-t', 'nat', '-N', 'GYRE-RD-NAT']);
  await ensureRule('nat', 'GYRE-RD-NAT', ['-s', uplinkRange, '!', '-d', uplinkRange, '-j', 'MASQUERADE']);
  await ensureRule('nat', 'POSTROUTING', ['-j', 'GYRE-RD-NAT']);
  await writeFile('/proc/sys/net/ipv4/ip_forward', '1');
}

/** The engine's cgroup directories, one per hierarchy (v1). */
function cgroupDirs(id: string): { controller: string; mountPoint: string; dir: string }[] {
  return [...cgroupV1Mounts()].map(([controller, mountPoint]) => ({ controller, mountPoint, dir: join(mountPoint, CGROUP_PARENT, id) }));
}

/**
 * Makes the fence of engine `id`: its network namespace and link (the first free slot of
 * `uplinkRange`: the host-side link's name is the lock) and its cgroups with the limits. On a
 * failure, what was made is removed before it throws.
 */
export async function makeEngineFence(id: string, options: FenceOptions): Promise<EngineFence> {
  const netns = `${NETNS_PREFIX}${id}`;
  const [base, bits] = (options.uplinkRange ?? DEFAULT_UPLINK_RANGE).split('/');
  const slots = Math.min(2 ** (32 - Number(bits)) / 4, 10_000);
  try {
    await must('ip', ['netns', 'add', netns]);
    let slot = -1;
    for (let n = 0; n < slots && slot < 0; n++) {
      // Creating the host side fails when another engine holds the name: the slot is taken.
      const made = await exec('ip', ['link', 'add', `${LINK_PREFIX}${n}`, 'type', 'veth', 'peer', 'name', 'uplink0', 'netns', netns]);
      if (made.code === 0) slot = n;
      else if (!/exists/i.test(made.output)) throw new Error(`the engine's link could not be made: ${made.output.trim().slice(0, 300)}`);
    }
    if (slot < 0) throw new Error(`no free link for the engine: all ${slots} of ${options.uplinkRange ?? DEFAULT_UPLINK_RANGE} are in use`);
    const hostSide = dotted(ipv4(base) + slot * 4 + 1);
    const engineSide = dotted(ipv4(base) + slot * 4 + 2);
    const link = `${LINK_PREFIX}${slot}`;
    await must('ip', ['addr', 'add', `${hostSide}/30`, 'dev', link]);
    await must('ip', ['link', 'set', link, 'up']);
    await must('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', netns, 'addr', 'add', `${engineSide}/30`, 'dev', 'uplink0']);
    await must('ip', ['-n', netns, 'link', 'set', 'uplink0', 'up']);
    await must('ip', ['-n', netns, 'route', 'add', 'default', 'via', hostSide]);

    const dirs = cgroupDirs(id);
    if (dirs.length < CONTROLLERS.length) throw new Error('the engine\'s limits need cgroup v1 memory, cpu and pids hierarchies (this host has cgroup v2 only, which the Podman provider does not support yet)');
    const { limits } = options;
    for (const { controller, dir } of dirs) {
      await mkdir(dir, { recursive: true });
      if (controller === 'memory') await writeFile(join(dir, 'memory.limit_in_bytes'), String(Math.round(limits.memoryMb * 1024 * 1024)));
      if (controller === 'cpu') {
        const period = Number(await readFile(join(dir, 'cpu.cfs_period_us'), 'utf8'));
        await writeFile(join(dir, 'cpu.cfs_quota_us'), String(Math.round(limits.cpu * period)));
      }
      if (controller === 'pids') await writeFile(join(dir, 'pids.max'), String(limits.pids));
    }
    return {
      summary: `network namespace ${netns}; at most ${limits.cpu} CPU, ${limits.memoryMb} MiB, ${limits.pids} processes for the engine and its containers together`,
      command(argv) {
        return {
          file: 'nsenter',
          // Stage 1 joins the cgroups; stage 2, in new mount and cgroup namespaces rooted there, mounts them over the hierarchies.
          args: [`--net=/run/netns/${netns}`, 'sh', '-c', 'for d in $GYRE_RD_CGROUPS; do echo $$ > "${d%%=*}/cgroup.procs" || exit 1; done; exec unshare --mount --cgroup --propagation private sh -c \'for d in $GYRE_RD_CGROUPS; do mount --bind "${d%%=*}" "${d#*=}" || exit 1; done; unset GYRE_RD_CGROUPS; exec "$@"\' sh "$@"', 'sh', ...argv],
          env: { ...process.env, GYRE_RD_CGROUPS: dirs.map((d) => `${d.dir}=${d.mountPoint}`).join(' ') },
        };
      },
    };
  } catch (error) {
    await removeEngineFence(id);
    throw error;
  }
}

/**
 * Kills every process left in the engine's cgroups (the service, conmon, every container's), then
 * removes its network namespace (its link goes with it) and its cgroups. Safe when nothing is there.
 */
export async function removeEngineFence(id: string): Promise<void> {
  const dirs = cgroupDirs(id).filter((d) => existsSync(d.dir));
  for (let round = 0; round < 50; round++) {
    const pids = new Set<number>();
    for (const { dir } of dirs) for (const tree of await cgroupTree(dir)) for (const pid of (await readFile(join(tree, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean)) pids.add(Number(pid));
    if (pids.size === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await exec('ip', ['netns', 'delete', `${NETNS_PREFIX}${id}`]);
  for (const { dir } of dirs) for (const tree of (await cgroupTree(dir)).reverse()) await rmdir(tree).catch(() => undefined);
}

/** A cgroup and all below it, parents first. */
async function cgroupTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const below = await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => cgroupTree(join(dir, e.name))));
  return existsSync(dir) ? [dir, ...below.flat()] : [];
}
