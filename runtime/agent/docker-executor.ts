import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import type { DockerImage } from '../config/plan';
import { NotFoundError } from '../domain/errors';
import { globToRegExp, isGlob } from '../output/file-sets';
import { createTarWriter, DEFAULT_EXTRACT_LIMITS, readTar, readTarAs, safeRelativeName, type ReadTarLimits, type TarEntry } from '../output/tar';
import type { Logger } from '../logger';
import { createDockerEngine, demultiplex, DockerEngineError, type AttachedStdin, type DockerEngine } from './docker-engine';
import type { ecrCredentials as EcrCredentials } from './ecr-auth';
import { expandImageCredentials } from './image-credentials';
import { hostname } from 'node:os';
import { resourceSizeOf, type ResourceSize } from '../domain/resource-sizes';
import { ownerAlive, processOwner } from './sandbox/owner';
import { jobFilesTar } from './job-tools/job-dir';
import { expandHome, type ExecRequest, type ExecResult, type Execution, type Executor, type OutputTaker } from './executor';

/**
 * The Docker executor: a task's containers through the Docker Engine API on a unix socket (Docker
 * or Podman). The first image is the primary container, where steps run (`exec`); the others are
 * service containers. All join one network made for the task, each reachable by its `name` (or
 * its image's short name). Everything made here is removed by `cleanup`.
 */
export interface DockerExecutorOptions {
  /** The Engine API socket, e.g. /var/run/docker.sock or /run/podman/podman.sock. */
  readonly socketPath: string;
  /** The job's `docker:` images; the first is the primary container. */
  readonly images: readonly DockerImage[];
  readonly taskId: string;
  readonly log: Logger;
  /** A registry mirror (host[:port]) that Docker Hub images are pulled through. @default - pulled from Docker Hub */
  readonly registryMirror?: string;
  /** Where `extract` spools a checked archive before sending it to the Engine. @default os.tmpdir() */
  readonly tempDir?: string;
  /**
   * The task's secret variables (its project's, its contexts', its OIDC tokens): `$NAME` and
   * `${NAME}` in an image's `auth` and `aws_auth` are expanded from them before anything is pulled,
   * and a name they lack fails the start naming it and the image. @default - none: only values as written
   */
  readonly secrets?: Readonly<Record<string, string>>;
  /** The ECR API endpoint asked for the registry password of an image with `aws_auth`. @default - https://api.ecr.<region>.amazonaws.com */
  readonly ecrEndpoint?: string;
  /** The STS API endpoint asked for a role's credentials by an image with `aws_auth.oidc_role_arn`. @default - https://sts.<region>.amazonaws.com */
  readonly stsEndpoint?: string;
  /** CPU and memory of the job's resource class: the limits of every container of the task. @default medium's (2 cores, 4 GiB) */
  readonly resources?: ResourceSize;
  /** Processes one container may hold at once. @default 4096 */
  readonly pidsLimit?: number;
  /** Who runs the task (`containerOwner()`): containers and network carry it, so a watchdog can remove them once it is gone. @default this process */
  readonly owner?: string;
  /** How long the primary's keep-alive is waited for to say the image's home and shell, before an exec asks instead. @default 10 s */
  readonly probeWaitMs?: number;
}

/**
 * Keeps the primary container alive while the agent holds its stdin open (an attach that lasts as
 * long as the agent's connection). When the agent dies, SIGKILL included, the engine closes the
 * container's stdin, the loop ends, and with the container's first process every step in it dies:
 * a task's processes never outlive the agent that runs it. Shell builtins only, so any image with
 * a shell keeps it. First it prints that it runs steps (STEPS_MARKER) and what the executor needs
 * to know of the image (PROBE) on its stdout, which the agent's attach carries: an exec (about 100
 * ms through Podman) fewer on the way to the first step.
 *
 * Then it runs steps: each line on its stdin is `<nonce> <command>`, a shell command the agent
 * quoted (`inKeepAlive`); the keep-alive runs it in a subshell, stdin from /dev/null and stderr on
 * stdout, in the background (the keep-alive goes on reading its stdin, so the agent's death still
 * ends the container at once), and the background subshell then prints
 * `\036<nonce>:<exit status>\036`. The step's output is the container's stdout, read through the
 * same attach: no exec to start it, which through Podman takes 45-100 ms before the command runs.
 * `_nl` holds a newline, for the quoted command to stay one line.
 */
const PROBE = 'printf "%s\\n" "$HOME"; if command -v bash >/dev/null 2>&1; then echo bash; else echo no-bash; fi';
const STEPS_MARKER = ':gyre-steps:1';
const KEEP_ALIVE = [
  '/bin/sh',
  '-c',
  `echo ${STEPS_MARKER}; ${PROBE}; _nl='\n'; while IFS= read -r _l; do ( ( eval "\${_l#* }" ) </dev/null 2>&1; printf '\\036%s:%s\\036' "\${_l%% *}" "$?" ) & done; exit 0`,
];
/** A quoted command longer than this (a huge environment) runs with an exec: the keep-alive's `read` takes a byte at a time. */
const KEEP_ALIVE_MAX_LINE = 64 * 1024;
/** What an environment variable's name must be for the keep-alive to export it. */
const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** `value` as one single-quoted shell word on one line (a newline becomes the keep-alive's `$_nl`). */
const keepAliveQuote = (value: string) => `'${value.replace(/'/g, `'\\''`).replace(/\n/g, `'"$_nl"'`)}'`;
const NOTHING = Buffer.alloc(0);
/** More than this before the probe's lines (a $HOME of that size?) and the executor asks with an exec. */
const PROBE_MAX_CHARS = 16 * 1024;

/** What `printed` settles with, or undefined once `ms` have passed (or when there is nothing to wait for). */
async function printedWithin(printed: Promise<string | undefined> | undefined, ms: number): Promise<string | undefined> {
  if (!printed) return undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([printed, new Promise<undefined>((resolve) => (timer = setTimeout(resolve, ms, undefined)))]);
  } finally {
    clearTimeout(timer);
  }
}
/** The label that names a container's (and network's) owner: `host/pid/start` of the agent process. */
export const OWNER_LABEL = 'gyre.owner';
const DEFAULT_PIDS_LIMIT = 4096;
/** Runs a step: records nothing, makes and enters the working directory, then becomes the shell. */
const STEP_WRAPPER = 'mkdir -p "$1" && cd "$1" || exit 1; shift; [ -z "$GYRE_JOB_DIR" ] || { PATH="$GYRE_JOB_DIR/bin:${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"; export PATH; }; exec "$@"';
/**
 * Gyre's directory in the primary container (the in-job CLI, timings, the halt marker): at the
 * root, made by the Engine (as root, whoever the image's user is), writable by any user of the
 * container; the step wrapper puts its `bin` first on the image's PATH.
 */
const JOB_DIR = '/.gyre-job';
/** Host-side variables that mean nothing inside a container; the image's own values apply. */
const HOST_ONLY = new Set(['PATH', 'HOME']);

export interface ImageRef {
  /** Registry host, `docker.io` for Docker Hub. */
  readonly registry: string;
  /** Repository path within the registry, `library/x` for official Hub images. */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

/** Parses an image reference as Docker does (registry host only when the first part has `.`/`:` or is localhost). */
export function parseImageRef(ref: string): ImageRef {
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const parts = rest.split('/');
  let registry = 'docker.io';
  if (parts.length > 1 && (/[.:]/.test(parts[0]) || parts[0] === 'localhost')) registry = parts.shift()!;
  let repository = parts.join('/');
  if (registry === 'docker.io' && parts.length === 1) repository = `library/${repository}`;
  return { registry, repository, tag: tag ?? (digest ? undefined : 'latest'), digest };
}

const refText = (r: ImageRef, registry = r.registry) => `${registry}/${r.repository}${r.digest ? `@${r.digest}` : `:${r.tag}`}`;

export async function createDockerExecutor(options: DockerExecutorOptions): Promise<Executor> {
  if (options.images.length === 0) throw new Error('the docker executor needs at least one image');
  // Every reference is expanded before anything is made, so a missing variable fails the same way
  // whether or not this engine already has the image.
  const images = options.images.map((image) => expandImageCredentials(image, options.secrets ?? {}));
  const engine = createDockerEngine(options.socketPath);
  const owner = options.owner ?? containerOwner();
  const size = options.resources ?? resourceSizeOf('medium');
  // Every container of the task gets the class's limits (services too: they share the machine).
  const limits = {
    NanoCpus: Math.round(size.cpu * 1e9),
    Memory: size.memoryMb * 1024 * 1024,
    MemorySwap: size.memoryMb * 1024 * 1024,
    PidsLimit: options.pidsLimit ?? DEFAULT_PIDS_LIMIT,
  };
  /** The primary's stdin, held open for as long as this agent lives (see KEEP_ALIVE). */
  let lifeline: AttachedStdin | undefined;
  /** Where the keep-alive's stdout goes once it has said what it knows: the step it runs, else nowhere. */
  let stepOutput: ((data: Buffer | undefined) => void | Promise<void>) | undefined;
  const suffix = `${options.taskId.slice(0, 8)}-${randomBytes(3).toString('hex')}`;
  const network = `gyre-${suffix}`;
  const containers: string[] = [];
  let networkMade = false;
  const primaryImage = images[0];
  /** What the primary's keep-alive printed (PROBE), when it runs one; undefined if its connection closed first. */
  let probed: Promise<string | undefined> | undefined;

  const cleanup = async () => {
    lifeline?.destroy();
    lifeline = undefined;
    for (const id of containers.splice(0).reverse()) {
      await engine.call('DELETE', `/containers/${id}?force=true&v=true`).catch((error) => options.log.warn('container removal failed', { id, error: (error as Error).message }));
    }
    if (networkMade) {
      networkMade = false;
      await engine.call('DELETE', `/networks/${network}`).catch((error) => options.log.warn('network removal failed', { network, error: (error as Error).message }));
    }
  };

  try {
    await engine.call('POST', '/networks/create', { Name: network, Driver: 'bridge', CheckDuplicate: true, Labels: { 'gyre.task': options.taskId, [OWNER_LABEL]: owner } });
    networkMade = true;
    const pulled: string[] = [];
    for (const image of images) pulled.push(await ensureImage(engine, image, options));
    for (const [index, image] of images.entries()) {
      const primary = index === 0;
      const alias = image.name ?? parseImageRef(image.image).repository.split('/').pop()!;
      const overridden = image.entrypoint !== undefined || image.command !== undefined;
      const tied = primary && !overridden;
      const { body } = await engine.call('POST', `/containers/create?name=gyre-${suffix}-${index}`, {
        Image: pulled[index],
        Env: Object.entries(image.environment ?? {}).map(([k, v]) => `${k}=${v}`),
        User: image.user ?? '',
        ...(tied ? { Entrypoint: KEEP_ALIVE.slice(0, 1), Cmd: KEEP_ALIVE.slice(1), OpenStdin: true, StdinOnce: true, AttachStdin: true } : {}),
        ...(image.entrypoint ? { Entrypoint: [...image.entrypoint] } : {}),
        ...(image.command ? { Cmd: [...image.command] } : {}),
        Labels: { 'gyre.task': options.taskId, 'gyre.role': primary ? 'primary' : 'service', [OWNER_LABEL]: owner },
        HostConfig: { NetworkMode: network, Init: false, ...limits },
        NetworkingConfig: { EndpointsConfig: { [network]: { Aliases: [alias] } } },
      });
      containers.push(body.Id);
      if (tied) {
        // The keep-alive's first lines, read before any step runs; later, a step's output while the
        // keep-alive runs one, and nothing otherwise (what a step left running writes between steps
        // is dropped, never left to block it).
        let printed = '';
        let probing = true;
        let settle!: (text: string | undefined) => void;
        probed = new Promise((resolve) => (settle = resolve));
        lifeline = await engine.attachStdin(body.Id, (data) => {
          if (!probing) return stepOutput?.(data);
          if (data === undefined) {
            probing = false;
            return settle(undefined);
          }
          printed += data.toString('utf8');
          const lines = printed.split('\n');
          // An engine's keep-alive that does not run steps (an older one) prints the probe alone.
          if (lines.length > (lines[0] === STEPS_MARKER ? 3 : 2)) {
            probing = false;
            settle(printed);
          } else if (printed.length > PROBE_MAX_CHARS) {
            probing = false;
            settle(undefined);
          }
        });
      }
      await engine.call('POST', `/containers/${body.Id}/start`);
    }
  } catch (error) {
    await cleanup();
    throw error;
  }

  const primaryId = containers[0];
  /** Runs a short command in the primary container and returns its output and exit code. */
  const run = async (cmd: string[]): Promise<{ output: string; exitCode: number | null }> => {
    const chunks: Buffer[] = [];
    const done = execIn(engine, primaryId, { Cmd: cmd, User: primaryImage.user ?? '' }, (d) => void chunks.push(Buffer.from(d)));
    const exitCode = await done.promise;
    return { output: Buffer.concat(chunks).toString('utf8'), exitCode };
  };
  // The image's $HOME and whether it has bash: printed by the primary's keep-alive as it started,
  // or, for a primary that runs its own entrypoint or command, one exec for both.
  const printed = await printedWithin(probed, options.probeWaitMs ?? 10_000);
  let probe = (printed ?? (await run(['/bin/sh', '-c', PROBE])).output).split('\n');
  /** Whether steps run through the keep-alive (else each with an exec). */
  let keepAliveRuns = printed !== undefined && probe[0] === STEPS_MARKER;
  if (probe[0] === STEPS_MARKER) probe = probe.slice(1);
  const home = probe[0].trim() || '/root';
  const bash = probe[1]?.trim() === 'bash';
  /** Whether a step runs in the keep-alive now (steps of a task run one at a time; anything else takes an exec). */
  let keepAliveBusy = false;

  /**
   * Runs `cmd` with `env` added through the keep-alive (see KEEP_ALIVE), as execIn would with an
   * exec; undefined when it cannot (no keep-alive that runs steps, one busy or given up on, or a
   * command it cannot carry: a variable name that is not a shell name, a NUL, a very long line).
   */
  const inKeepAlive = (cmd: string[], env: string[], onOutput: (data: Uint8Array) => void | Promise<void>): { promise: Promise<number | null>; abandon(): void; killed(): void } | undefined => {
    if (!keepAliveRuns || keepAliveBusy || !lifeline) return undefined;
    const exports: string[] = [];
    for (const pair of env) {
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      if (eq < 0 || !SHELL_NAME.test(name)) return undefined;
      exports.push(`${name}=${keepAliveQuote(pair.slice(eq + 1))}`);
    }
    const command = `${exports.length ? `export ${exports.join(' ')}; ` : ''}exec ${cmd.map(keepAliveQuote).join(' ')}`;
    if (command.includes('\0') || command.length > KEEP_ALIVE_MAX_LINE) return undefined;
    const nonce = randomBytes(12).toString('hex');
    const marker = Buffer.from(`\x1e${nonce}:`);
    keepAliveBusy = true;
    // A running step keeps the agent's process alive, as an exec's open stream does.
    const line = lifeline;
    line.ref();
    let settle!: (code: number | null) => void;
    let fail!: (error: Error) => void;
    const promise = new Promise<number | null>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    /** Bytes that may be the start of the marker, held back until the next ones say. */
    let held: Buffer = NOTHING;
    /** What came after the marker: the exit status, up to the closing \036. */
    let status: string | undefined;
    const end = (then: () => void) => {
      stepOutput = undefined;
      keepAliveBusy = false;
      line.unref();
      then();
    };
    stepOutput = (data) => {
      if (data === undefined) {
        keepAliveRuns = false;
        return end(() => fail(new Error('the primary container ended while the step ran')));
      }
      let out: Buffer | undefined;
      if (status === undefined) {
        const all = held.length > 0 ? Buffer.concat([held, data]) : data;
        const at = all.indexOf(marker);
        if (at >= 0) {
          out = all.subarray(0, at);
          status = all.subarray(at + marker.length).toString('latin1');
          held = NOTHING;
        } else {
          let keep = Math.min(marker.length - 1, all.length);
          while (keep > 0 && !all.subarray(all.length - keep).equals(marker.subarray(0, keep))) keep--;
          out = all.subarray(0, all.length - keep);
          held = keep > 0 ? Buffer.from(all.subarray(all.length - keep)) : NOTHING;
        }
      } else status += data.toString('latin1');
      const wait = out && out.length > 0 ? onOutput(out) : undefined;
      const close = status?.indexOf('\x1e') ?? -1;
      if (status !== undefined && close >= 0) {
        const code = Number(status.slice(0, close));
        end(() => settle(Number.isInteger(code) ? code : null));
      }
      return wait;
    };
    line.write(`${nonce} ${command}\n`);
    const mine = stepOutput;
    return {
      promise,
      abandon() {
        if (stepOutput !== mine) return;
        // The step may still run in the keep-alive: later steps take an exec each.
        keepAliveRuns = false;
        end(() => settle(null));
      },
      // Every process of the container but the keep-alive was killed, the subshell that would
      // have said the status too: the step has ended, killed.
      killed() {
        if (stepOutput === mine) end(() => settle(null));
      },
    };
  };

  const executor: Executor = {
    home,
    // The task network's gateway: an address of this host that its containers reach.
    async hostAddress() {
      const { body } = await engine.call<any>('GET', `/networks/${network}`);
      const gateway = (body?.IPAM?.Config ?? []).map((c: { Gateway?: string }) => c.Gateway).find((g: string | undefined) => g && !g.includes(':'));
      if (!gateway) throw new Error(`the task network ${network} has no IPv4 gateway`);
      return String(gateway);
    },
    jobDir: {
      path: JOB_DIR,
      async install(files) {
        const chunks: Buffer[] = [];
        for await (const chunk of jobFilesTar(files, { prefix: `${JOB_DIR.slice(1)}/`, dirMode: 0o777 })) chunks.push(Buffer.from(chunk));
        const body = Buffer.concat(chunks);
        const res = await engine.stream('PUT', `/containers/${primaryId}/archive?path=${encodeURIComponent('/')}`, undefined, {}, body);
        const text = await readAll(res);
        if ((res.statusCode ?? 0) >= 400) throw new DockerEngineError(res.statusCode ?? 0, `writing ${JOB_DIR} → ${res.statusCode}: ${text}`);
      },
      async has(name) {
        return (await statPath(engine, primaryId, posix.join(JOB_DIR, name))) !== undefined;
      },
    },
    async hasBash() {
      return bash;
    },
    start(request: ExecRequest, onOutput: OutputTaker, signal: AbortSignal): Execution {
      const cwd = expandHome(request.cwd, home);
      const env = Object.entries(request.env)
        .filter(([k]) => !HOST_ONLY.has(k))
        .map(([k, v]) => `${k}=${v}`);
      env.push(`HOME=${home}`);
      let timedOut = false;
      let canceled = false;
      let timer: NodeJS.Timeout | undefined;
      let ended = false;
      const arm = () => {
        if (!request.noOutputTimeoutMs || ended) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          timedOut = true;
          stop();
        }, request.noOutputTimeoutMs);
      };
      const cmd = ['/bin/sh', '-c', STEP_WRAPPER, 'sh', cwd, ...request.shell.split(/\s+/).filter(Boolean), '-c', request.script];
      const take = (data: Uint8Array) => {
        arm();
        const caughtUp = onOutput(data);
        if (!caughtUp) return undefined;
        // The stream is not read until the agent catches up; the no-output timer waits too.
        clearTimeout(timer);
        return caughtUp.then(arm, arm);
      };
      const kept = inKeepAlive(cmd, env, take);
      const exec = kept ?? execIn(engine, primaryId, { Cmd: cmd, Env: env, User: primaryImage.user ?? '' }, take);
      let stopped = false;
      // Every process in the primary container but its init goes: the step and whatever it started.
      // (Steps of one task run one at a time, so this never reaches another task's work.)
      const stop = () => {
        if (stopped) return;
        stopped = true;
        void run(['/bin/sh', '-c', 'kill -KILL -1 2>/dev/null; true']).then(() => kept?.killed(), () => undefined);
        // If the stream does not end on its own (a process kept it open), stop waiting for it.
        setTimeout(() => exec.abandon(), 3000).unref();
      };
      const onAbort = () => {
        canceled = true;
        stop();
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      arm();
      const done: Promise<ExecResult> = exec.promise.then(
        (exitCode) => {
          ended = true;
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          return { exitCode: canceled || timedOut ? null : exitCode, timedOut, canceled };
        },
        (error) => {
          ended = true;
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          void onOutput(new TextEncoder().encode(`\n${(error as Error).message}\n`));
          return { exitCode: canceled || timedOut ? null : 1, timedOut, canceled };
        },
      );
      return { done, stop };
    },
    cleanup,

    async archive(root, patterns) {
      const rootPath = resolveIn(home, root);
      if (!(await statPath(engine, primaryId, rootPath))) throw new NotFoundError('path', root);
      const stats = new Map<string, Promise<PathStat | undefined>>();
      const statOf = (name: string) => {
        if (!stats.has(name)) stats.set(name, statPath(engine, primaryId, posix.join(rootPath, name)));
        return stats.get(name)!;
      };
      // Which entries the patterns select is found from names alone, so no file's content is held:
      // a listing when there are globs, otherwise a stat of each name. The selected entries then
      // stream from one archive request, filtered.
      const selection = createSelection(patterns);
      if (selection.globs) await listTree(engine, primaryId, rootPath, (name) => selection.see(name));
      else for (const name of selection.names) if (await isListed(name, statOf)) selection.see(name);
      let plan = selection.plan();
      if (plan.kind === 'subtree') {
        // The Engine follows a path that is a symlink, so a selected link is read from its directory.
        const s = await statOf(plan.from);
        if (!s || s.mode & GO_MODE_SYMLINK) plan = { ...plan, kind: 'filtered', from: parentOf(plan.from) };
      }
      // The directories between the root and the archived one are not in its archive.
      const prelude: TarEntry[] = [];
      for (const dir of ancestorsOf(plan.from)) {
        const s = await statOf(dir);
        if (s) prelude.push({ name: dir, type: 'directory', size: 0, mode: unixMode(s.mode), mtime: tarSeconds(s.mtime) });
      }
      return { tar: streamSelected(engine, primaryId, rootPath, plan, prelude), missing: plan.missing };
    },

    async extract(dest, source, limits = {}) {
      const destPath = resolveIn(home, dest);
      // Every entry is checked (and the byte limit applied) before anything reaches the container:
      // the first bad entry rejects the whole call with nothing written. What passed is spooled to
      // a file (not memory) and then sent; the file is removed whatever happens.
      const dir = await mkdtemp(join(options.tempDir ?? tmpdir(), 'gyre-extract-'));
      try {
        const file = join(dir, 'checked.tar');
        const counted = await spoolCheckedTar(file, source, { maxEntries: limits.maxEntries ?? DEFAULT_EXTRACT_LIMITS.maxEntries, maxBytes: limits.maxBytes ?? DEFAULT_EXTRACT_LIMITS.maxBytes });
        const made = await run(['/bin/sh', '-c', 'mkdir -p "$1"', 'sh', destPath]);
        if (made.exitCode !== 0) throw new Error(`cannot make ${destPath} in the container: ${made.output.trim()}`);
        const { size } = await stat(file);
        const res = await engine.stream('PUT', `/containers/${primaryId}/archive?path=${encodeURIComponent(destPath)}`, undefined, {}, { body: createReadStream(file), length: size });
        const text = await readAll(res);
        if ((res.statusCode ?? 0) >= 400) throw new DockerEngineError(res.statusCode ?? 0, `unpacking into ${destPath} → ${res.statusCode}: ${text}`);
        return counted;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
  return executor;
}

/** This process as a container owner: `host/pid/start`. */
export function containerOwner(env: Readonly<Record<string, string | undefined>> = process.env): string {
  return `${ownerHost(env)}/${processOwner().replace(' ', '/')}`;
}

/**
 * The "host" part of an owner: the host name, or in a Nomad allocation its id. Agents of different
 * allocations on one client share its engine, and may share its host name (network_mode "host")
 * but not their pid namespaces: none can tell whether another's process lives, so none takes
 * another's containers for orphans.
 */
function ownerHost(env: Readonly<Record<string, string | undefined>>): string {
  return env.NOMAD_ALLOC_ID ? `nomad-alloc-${env.NOMAD_ALLOC_ID}` : hostname();
}

/**
 * The watchdog: removes the containers and networks whose owner (an agent process on this host)
 * is gone, e.g. a runner that was killed. Run at an agent's start and every so often while it
 * runs; each agent looks after its host's leftovers, whoever left them. Returns how many
 * containers it removed.
 */
export async function removeOrphanedContainers(socketPath: string, log: Logger): Promise<number> {
  const engine = createDockerEngine(socketPath);
  const host = ownerHost(process.env);
  const orphaned = (labels: Record<string, string> | undefined) => {
    const owner = labels?.[OWNER_LABEL];
    if (!owner) return false;
    const [ownerHost, pid, start] = owner.split('/');
    return ownerHost === host && !ownerAlive(`${pid} ${start}`);
  };
  const filters = encodeURIComponent(JSON.stringify({ label: [OWNER_LABEL] }));
  const { body: list } = await engine.call<{ Id: string; Labels?: Record<string, string> }[]>('GET', `/containers/json?all=true&filters=${filters}`);
  let removed = 0;
  for (const c of list ?? []) {
    if (!orphaned(c.Labels)) continue;
    await engine.call('DELETE', `/containers/${c.Id}?force=true&v=true`).then(
      () => removed++,
      (error) => log.warn('removing an orphaned container failed', { id: c.Id, error: (error as Error).message }),
    );
  }
  const { body: networks } = await engine.call<{ Id: string; Labels?: Record<string, string> }[]>('GET', `/networks?filters=${filters}`);
  for (const n of networks ?? []) {
    if (orphaned(n.Labels)) await engine.call('DELETE', `/networks/${n.Id}`).catch(() => undefined);
  }
  if (removed > 0) log.warn('removed containers whose agent is gone', { containers: removed });
  return removed;
}

/** How `archive` sends what the patterns selected. */
interface ArchivePlan {
  /** `none`: nothing matched; `whole`: the root's archive; `subtree`: the archive of `from`, all of it; `filtered`: the selected entries of the archive of `from`. */
  readonly kind: 'none' | 'whole' | 'subtree' | 'filtered';
  /** The directory (or file) whose archive is read, relative to the root (`''` is the root). */
  readonly from: string;
  /** Whether an entry (relative to the root) is selected. */
  readonly selected: (name: string) => boolean;
  readonly missing: string[];
}

/**
 * Which entries `patterns` select, seen one name at a time (names relative to the root): a
 * pattern selects what it names or matches and everything under that, and the directories above.
 */
function createSelection(patterns: readonly string[]): {
  /** Whether a pattern is a glob (or `.`), which needs every name under the root to be seen. */
  readonly globs: boolean;
  /** The names the patterns give when none is a glob. */
  readonly names: readonly string[];
  see(name: string): void;
  plan(): ArchivePlan;
} {
  const names = patterns.map((p) => safeRelativeName(p));
  const whole = names.includes('');
  const exact = new Set(names.filter((n) => n !== '' && !isGlob(n)));
  const globs = [...new Set(names.filter((n) => isGlob(n)))].map((name) => ({ name, re: globToRegExp(name) }));
  /** Patterns (normalized) that named or matched something. */
  const found = new Set<string>();
  const matched = new Set<string>();
  return {
    globs: whole || globs.length > 0,
    names: [...exact],
    see(name) {
      if (exact.has(name)) {
        found.add(name);
        matched.add(name);
      }
      for (const glob of globs) {
        if (!glob.re.test(name)) continue;
        found.add(glob.name);
        matched.add(name);
      }
    },
    plan() {
      const missing = patterns.filter((_, i) => names[i] !== '' && !found.has(names[i]));
      if (whole) return { kind: 'whole', from: '', selected: () => true, missing };
      // Only the topmost matches matter: everything under one is selected with it.
      const tops = [...matched].filter((name) => !ancestorsOf(name).some((a) => matched.has(a))).sort();
      const topSet = new Set(tops);
      const above = new Set(tops.flatMap(ancestorsOf));
      const selected = (name: string) => above.has(name) || [name, ...ancestorsOf(name)].some((n) => topSet.has(n));
      if (tops.length === 0) return { kind: 'none', from: '', selected, missing };
      if (tops.length === 1) return { kind: 'subtree', from: tops[0], selected, missing };
      // Read from the deepest directory above them all (a real directory: the listing went into it).
      const common = tops.map((t) => t.split('/')).reduce((a, b) => {
        let i = 0;
        while (i < a.length && a[i] === b[i]) i++;
        return a.slice(0, i);
      });
      return { kind: 'filtered', from: common.join('/'), selected, missing };
    },
  };
}

/**
 * Whether a listing of the root would have named `name`: it exists, is not a socket, and is not
 * under a symlink (a listing does not follow links; the Engine's stat does).
 */
async function isListed(name: string, statOf: (name: string) => Promise<PathStat | undefined>): Promise<boolean> {
  for (const dir of ancestorsOf(name)) {
    const s = await statOf(dir);
    if (!s || s.mode & GO_MODE_SYMLINK || !(s.mode & GO_MODE_DIR)) return false;
  }
  const s = await statOf(name);
  return s !== undefined && !(s.mode & GO_MODE_SOCKET);
}

/** The directories above a relative name, outermost first: `a/b/c` → `a`, `a/b`. */
function ancestorsOf(name: string): string[] {
  const out: string[] = [];
  for (let i = name.indexOf('/'); i >= 0; i = name.indexOf('/', i + 1)) out.push(name.slice(0, i));
  return out;
}

function parentOf(name: string): string {
  const i = name.lastIndexOf('/');
  return i < 0 ? '' : name.slice(0, i);
}

/** The Engine's stat of a path (Go's os.FileMode in `mode`), from `HEAD /containers/{id}/archive`. */
interface PathStat {
  readonly name: string;
  readonly size: number;
  readonly mode: number;
  readonly mtime: string;
  readonly linkTarget?: string;
}

const GO_MODE_DIR = 2 ** 31;
const GO_MODE_SYMLINK = 2 ** 27;
const GO_MODE_SOCKET = 2 ** 24;

/** Permission bits of a Go os.FileMode as tar and chmod write them (setuid, setgid and sticky live elsewhere in Go's). */
function unixMode(goMode: number): number {
  let mode = goMode & 0o777;
  if (goMode & 2 ** 23) mode |= 0o4000;
  if (goMode & 2 ** 22) mode |= 0o2000;
  if (goMode & 2 ** 20) mode |= 0o1000;
  return mode;
}

/** An RFC 3339 time in whole seconds, rounded as Go's tar writer rounds (the Engine's archives). */
function tarSeconds(time: string): number {
  const parts = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(time);
  const whole = parts ? Date.parse(parts[1] + parts[3]) / 1000 : NaN;
  return Number.isFinite(whole) ? Math.round(whole + Number(`0${parts![2] ?? ''}`)) : 0;
}

/** A path's stat in a container, or undefined when it does not exist. */
async function statPath(engine: DockerEngine, container: string, path: string): Promise<PathStat | undefined> {
  const res = await engine.stream('HEAD', `/containers/${container}/archive?path=${encodeURIComponent(path)}`);
  res.resume();
  if (res.statusCode === 404) return undefined;
  const header = res.headers['x-docker-container-path-stat'];
  if ((res.statusCode ?? 0) >= 400 || typeof header !== 'string') throw new DockerEngineError(res.statusCode ?? 0, `stat of ${path} → ${res.statusCode}`);
  return JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as PathStat;
}

/**
 * Lists the names under `dir` in a container (relative to it, not `dir` itself), without reading
 * any content. Run as root, as the Engine reads archives; sockets are left out, as its archives
 * leave them out. Names are NUL-separated, so any byte but NUL may be in one.
 */
async function listTree(engine: DockerEngine, container: string, dir: string, onName: (name: string) => void): Promise<void> {
  let rest = Buffer.alloc(0);
  const errors: Buffer[] = [];
  const exec = execIn(engine, container, { Cmd: ['/bin/sh', '-c', '[ -d "$1" ] || exit 0; cd -- "$1" && exec find . ! -type s -print0', 'sh', dir], User: '0' }, (data, stream) => {
    if (stream === 2) {
      errors.push(Buffer.from(data));
      return;
    }
    const buffer = rest.length ? Buffer.concat([rest, data]) : Buffer.from(data);
    let start = 0;
    for (let nul = buffer.indexOf(0); nul >= 0; nul = buffer.indexOf(0, start)) {
      const name = buffer.subarray(start, nul).toString('utf8');
      start = nul + 1;
      if (name.startsWith('./')) onName(name.slice(2));
    }
    rest = Buffer.from(buffer.subarray(start));
  });
  const exitCode = await exec.promise;
  const stderr = Buffer.concat(errors).toString('utf8').trim();
  // An entry removed while it was listed (a background step at work) is not a failure.
  const vanishedOnly = exitCode === 1 && stderr.split('\n').every((line) => /No such file or directory/.test(line));
  if (exitCode !== 0 && !vanishedOnly) throw new Error(`listing ${dir} in the primary container failed (exit ${exitCode}; it needs sh and find): ${stderr}`);
}

/**
 * The archive `archive` returns: `prelude` (directory headers), then the entries of the Engine's
 * archive of `plan.from` that the plan selects, renamed relative to the root, as they arrive. The
 * Engine is asked only when the consumer starts reading; stopping early closes its response.
 */
function streamSelected(engine: DockerEngine, container: string, rootPath: string, plan: ArchivePlan, prelude: readonly TarEntry[]): AsyncIterable<Uint8Array> {
  const path = plan.from ? posix.join(rootPath, plan.from) : rootPath;
  const base = posix.basename(path);
  // The Engine names entries after the last segment of the path it archived.
  const rename = (name: string): string | undefined => {
    const normal = name.replace(/\/+$/, '');
    if (normal === base) return plan.from || undefined;
    if (!normal.startsWith(`${base}/`)) return undefined;
    return plan.from ? `${plan.from}${normal.slice(base.length)}` : normal.slice(base.length + 1);
  };
  const keep = plan.kind === 'filtered' ? plan.selected : () => true;
  return (async function* () {
    const writer = createTarWriter();
    let res: IncomingMessage | undefined;
    let stopped = false;
    const producing = (async () => {
      for (const entry of prelude) await writer.add(entry);
      if (plan.kind !== 'none') {
        res = await openArchive(engine, container, path);
        if (stopped) res?.destroy();
        // No archive means what was listed has been removed since. Entries are renamed before their
        // names are checked; links go as they are (as the shell executor packs them): where one may
        // point is for whoever extracts them to judge.
        if (res) await readThenFinish(res, (tar) => readTarAs(tar, { rename, keep, linksAsIs: true }, (entry, content) => writer.add(entry, content)));
      }
      await writer.end();
    })().catch((error: Error) => writer.fail(error));
    try {
      yield* writer.tar;
    } finally {
      // A reader that stopped early stops the Engine's archive too.
      stopped = true;
      res?.destroy();
      await producing;
    }
  })();
}

/**
 * Reads a tar with `read`, then lets its source finish, up to `drainBytes` past the archive's end
 * marker, and closes it: a tar reader stops at the marker, and an HTTP response left unfinished
 * holds its connection (and the process) open. The source is closed on failure too.
 */
async function readThenFinish<T>(source: AsyncIterable<Uint8Array>, read: (tar: AsyncIterable<Uint8Array>) => Promise<T>, drainBytes = 1024 * 1024): Promise<T> {
  const iterator = source[Symbol.asyncIterator]();
  try {
    const result = await read({ [Symbol.asyncIterator]: () => iterator });
    for (let left = drainBytes; left > 0; ) {
      const next = await iterator.next();
      if (next.done) break;
      left -= next.value.length;
    }
    return result;
  } finally {
    try {
      await iterator.return?.();
    } catch {
      // Closing is best effort: the source may have failed already.
    }
  }
}

/** The Engine's archive of a path in a container, or undefined when the path does not exist. */
async function openArchive(engine: DockerEngine, container: string, path: string): Promise<IncomingMessage | undefined> {
  const res = await engine.stream('GET', `/containers/${container}/archive?path=${encodeURIComponent(path)}`);
  if (res.statusCode === 404) {
    res.resume();
    return undefined;
  }
  if ((res.statusCode ?? 0) >= 400) throw new DockerEngineError(res.statusCode ?? 0, `archive of ${path} → ${res.statusCode}: ${await readAll(res)}`);
  return res;
}

/**
 * Reads a tar stream, checking every entry (readTar's checks, and the limits), and writes what
 * passed to `file` as a tar of its own. Rejects at the first bad entry.
 */
async function spoolCheckedTar(file: string, source: AsyncIterable<Uint8Array>, limits: ReadTarLimits): Promise<{ entries: number; bytes: number }> {
  const writer = createTarWriter();
  const writing = pipeline(Readable.from(writer.tar), createWriteStream(file, { mode: 0o600, highWaterMark: 1024 * 1024 }));
  try {
    const counted = await readThenFinish(source, (tar) =>
      readTar(
        tar,
        async (entry, content) => {
          if (entry.name === '' || entry.name === '.') return;
          await writer.add(entry, content);
        },
        limits,
      ),
    );
    await writer.end();
    await writing;
    return counted;
  } catch (error) {
    writer.fail(error instanceof Error ? error : new Error(String(error)));
    await writing.catch(() => undefined);
    throw error;
  }
}

/** A path in the container: `~` is home, and a relative path is relative to home. */
function resolveIn(home: string, path: string): string {
  const expanded = expandHome(path, home);
  return posix.isAbsolute(expanded) ? posix.normalize(expanded) : posix.join(home, expanded);
}

/** Starts an exec in a container and streams its output; the promise gives its exit code. */
function execIn(
  engine: DockerEngine,
  container: string,
  config: { Cmd: string[]; Env?: string[]; User?: string },
  onOutput: (data: Uint8Array, stream: number) => void | Promise<void>,
): { promise: Promise<number | null>; abandon(): void } {
  let abandon: () => void = () => undefined;
  const promise = (async () => {
    const { body } = await engine.call('POST', `/containers/${container}/exec`, { AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, ...config });
    const res = await engine.stream('POST', `/exec/${body.Id}/start`, { Detach: false, Tty: false });
    if ((res.statusCode ?? 0) >= 400) {
      const text = await readAll(res);
      throw new DockerEngineError(res.statusCode ?? 0, `exec start → ${res.statusCode}: ${text}`);
    }
    // Output the taker is not ready for holds the stream: it is not read until the taker catches up.
    const waits: Promise<void>[] = [];
    const demux = demultiplex((payload, stream) => {
      const caughtUp = onOutput(payload, stream);
      if (caughtUp) waits.push(caughtUp);
    });
    await new Promise<void>((resolve, reject) => {
      abandon = () => {
        res.destroy();
        resolve();
      };
      res.on('data', (chunk: Buffer) => {
        demux.push(chunk);
        if (waits.length === 0) return;
        res.pause();
        void Promise.allSettled(waits.splice(0)).then(() => res.resume());
      });
      res.on('end', resolve);
      res.on('close', resolve);
      res.on('error', reject);
    });
    // The exit code is recorded a moment after the stream ends; ask until it is.
    for (let i = 0; i < 50; i++) {
      const { body: info } = await engine.call('GET', `/exec/${body.Id}/json`);
      if (!info.Running && info.ExitCode !== null && info.ExitCode !== undefined) return info.ExitCode as number;
      await new Promise((r) => setTimeout(r, 20));
    }
    return null;
  })();
  return { promise, abandon: () => abandon() };
}

async function readAll(res: AsyncIterable<unknown>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Makes an image present: used as is when the engine has it, otherwise pulled (through the
 * registry mirror for Docker Hub images, then tagged with the name the job used), with the job's
 * `auth` as the registry credentials, or for an ECR image, a password got with its `aws_auth`
 * (both with their references expanded already).
 * Returns the name to create containers from.
 */
async function ensureImage(engine: DockerEngine, image: DockerImage, options: DockerExecutorOptions): Promise<string> {
  const { registryMirror: mirror, log } = options;
  try {
    await engine.call('GET', `/images/${encodeURIComponent(image.image)}/json`);
    return image.image;
  } catch (error) {
    if (!(error instanceof DockerEngineError) || error.status !== 404) throw error;
  }
  const ref = parseImageRef(image.image);
  const viaMirror = mirror && ref.registry === 'docker.io';
  const from = viaMirror ? refText(ref, mirror) : refText(ref);
  const headers: Record<string, string> = {};
  const auth =
    image.auth ??
    (image.awsAuth
      ? // The AWS SDK is loaded only for a job that pulls from ECR.
        await (require('./ecr-auth') as { ecrCredentials: typeof EcrCredentials }).ecrCredentials({
          registry: ref.registry,
          awsAuth: image.awsAuth,
          endpoint: options.ecrEndpoint,
          webIdentityToken: options.secrets?.CIRCLE_OIDC_TOKEN,
          stsEndpoint: options.stsEndpoint,
          sessionName: `gyre-${options.taskId.slice(0, 40)}`.replace(/[^\w+=,.@-]/g, '-'),
        })
      : undefined);
  if (auth) {
    // URL-safe base64 *with* padding: Docker and Podman decode it with Go's padded URL encoding,
    // and refuse the header ("unexpected EOF") when the padding is left off.
    headers['X-Registry-Auth'] = Buffer.from(JSON.stringify({ username: auth.username, password: auth.password, serveraddress: viaMirror ? mirror : ref.registry }))
      .toString('base64')
      .replace(/\+/g, '-')
      .replace(/\//g, '_');
  }
  const repo = from.slice(0, from.length - (ref.digest ? ref.digest.length + 1 : (ref.tag?.length ?? 0) + 1));
  const query = `fromImage=${encodeURIComponent(repo)}&${ref.digest ? `tag=${encodeURIComponent(ref.digest)}` : `tag=${encodeURIComponent(ref.tag!)}`}`;
  log.info('pulling image', { image: from });
  const { body } = await engine.call('POST', `/images/create?${query}`, undefined, headers);
  const failure = pullFailure(body);
  if (failure) throw new Error(`pulling ${from} failed: ${failure}`);
  if (!viaMirror) return image.image;
  // A digest names the image wherever it came from, but the engine knows it only by the name it
  // was pulled as (`repo@digest` is not a tag that can be given to it).
  if (ref.digest) return from;
  await engine.call('POST', `/images/${encodeURIComponent(from)}/tag?repo=${encodeURIComponent(image.image.replace(/:[^:/]+$/, ''))}&tag=${encodeURIComponent(ref.tag!)}`);
  return image.image;
}

/** The error a pull reports inside its progress stream (one JSON message a line, with a 200 status). */
function pullFailure(body: unknown): string | undefined {
  const text = typeof body === 'string' ? body : JSON.stringify(body ?? '');
  for (const line of text.split(/\r?\n/)) {
    let message: any;
    try {
      message = JSON.parse(line);
    } catch {
      continue;
    }
    const error = message?.errorDetail?.message ?? message?.error;
    if (error) return String(error);
  }
  return undefined;
}
