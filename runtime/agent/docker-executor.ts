import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { DockerImage } from '../config/plan';
import { NotFoundError } from '../domain/errors';
import { globToRegExp, isGlob } from '../output/file-sets';
import { END_OF_ARCHIVE, entryHeader, padding, readTar, safeRelativeName, type TarEntry } from '../output/tar';
import type { Logger } from '../logger';
import { createDockerEngine, demultiplex, DockerEngineError, type DockerEngine } from './docker-engine';
import { expandHome, type ExecRequest, type ExecResult, type Execution, type Executor } from './executor';

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
}

/** Keeps the primary container alive until it is removed; steps run beside it with exec. */
const KEEP_ALIVE = ['/bin/sh', '-c', 'trap "exit 0" TERM INT; while :; do sleep 86400 & wait $!; done'];
/** Runs a step: records nothing, makes and enters the working directory, then becomes the shell. */
const STEP_WRAPPER = 'mkdir -p "$1" && cd "$1" || exit 1; shift; exec "$@"';
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
  const engine = createDockerEngine(options.socketPath);
  const suffix = `${options.taskId.slice(0, 8)}-${randomBytes(3).toString('hex')}`;
  const network = `gyre-${suffix}`;
  const containers: string[] = [];
  let networkMade = false;
  const primaryImage = options.images[0];

  const cleanup = async () => {
    for (const id of containers.splice(0).reverse()) {
      await engine.call('DELETE', `/containers/${id}?force=true&v=true`).catch((error) => options.log.warn('container removal failed', { id, error: (error as Error).message }));
    }
    if (networkMade) {
      networkMade = false;
      await engine.call('DELETE', `/networks/${network}`).catch((error) => options.log.warn('network removal failed', { network, error: (error as Error).message }));
    }
  };

  try {
    await engine.call('POST', '/networks/create', { Name: network, Driver: 'bridge', CheckDuplicate: true, Labels: { 'gyre.task': options.taskId } });
    networkMade = true;
    for (const image of options.images) await ensureImage(engine, image, options.registryMirror, options.log);
    for (const [index, image] of options.images.entries()) {
      const primary = index === 0;
      const alias = image.name ?? parseImageRef(image.image).repository.split('/').pop()!;
      const overridden = image.entrypoint !== undefined || image.command !== undefined;
      const { body } = await engine.call('POST', `/containers/create?name=gyre-${suffix}-${index}`, {
        Image: image.image,
        Env: Object.entries(image.environment ?? {}).map(([k, v]) => `${k}=${v}`),
        User: image.user ?? '',
        ...(primary && !overridden ? { Entrypoint: KEEP_ALIVE.slice(0, 1), Cmd: KEEP_ALIVE.slice(1) } : {}),
        ...(image.entrypoint ? { Entrypoint: [...image.entrypoint] } : {}),
        ...(image.command ? { Cmd: [...image.command] } : {}),
        Labels: { 'gyre.task': options.taskId, 'gyre.role': primary ? 'primary' : 'service' },
        HostConfig: { NetworkMode: network, Init: false },
        NetworkingConfig: { EndpointsConfig: { [network]: { Aliases: [alias] } } },
      });
      containers.push(body.Id);
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
    const done = execIn(engine, primaryId, { Cmd: cmd, User: primaryImage.user ?? '' }, (d) => chunks.push(Buffer.from(d)));
    const exitCode = await done.promise;
    return { output: Buffer.concat(chunks).toString('utf8'), exitCode };
  };
  const home = (await run(['/bin/sh', '-c', 'printf %s "$HOME"'])).output.trim() || '/root';
  let bash: boolean | undefined;

  const executor: Executor = {
    home,
    async hasBash() {
      bash ??= (await run(['/bin/sh', '-c', 'command -v bash'])).exitCode === 0;
      return bash;
    },
    start(request: ExecRequest, onOutput: (chunk: Uint8Array) => void, signal: AbortSignal): Execution {
      const cwd = expandHome(request.cwd, home);
      const env = Object.entries(request.env)
        .filter(([k]) => !HOST_ONLY.has(k))
        .map(([k, v]) => `${k}=${v}`);
      env.push(`HOME=${home}`);
      let timedOut = false;
      let canceled = false;
      let timer: NodeJS.Timeout | undefined;
      const arm = () => {
        if (!request.noOutputTimeoutMs) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          timedOut = true;
          stop();
        }, request.noOutputTimeoutMs);
      };
      const exec = execIn(
        engine,
        primaryId,
        {
          Cmd: ['/bin/sh', '-c', STEP_WRAPPER, 'sh', cwd, ...request.shell.split(/\s+/).filter(Boolean), '-c', request.script],
          Env: env,
          User: primaryImage.user ?? '',
        },
        (data) => {
          arm();
          onOutput(data);
        },
      );
      let stopped = false;
      // Every process in the primary container but its init goes: the step and whatever it started.
      // (Steps of one task run one at a time, so this never reaches another task's work.)
      const stop = () => {
        if (stopped) return;
        stopped = true;
        void run(['/bin/sh', '-c', 'kill -KILL -1 2>/dev/null; true']).catch(() => undefined);
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
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          return { exitCode: canceled || timedOut ? null : exitCode, timedOut, canceled };
        },
        (error) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          onOutput(new TextEncoder().encode(`\n${(error as Error).message}\n`));
          return { exitCode: canceled || timedOut ? null : 1, timedOut, canceled };
        },
      );
      return { done, stop };
    },
    cleanup,

    async archive(root, patterns) {
      const rootPath = resolveIn(home, root);
      // The Engine answers with the root directory itself as the first entry and everything else under its name.
      const res = await engine.stream('GET', `/containers/${primaryId}/archive?path=${encodeURIComponent(rootPath)}`);
      if (res.statusCode === 404) {
        res.resume();
        throw new NotFoundError('path', root);
      }
      if ((res.statusCode ?? 0) >= 400) throw new DockerEngineError(res.statusCode ?? 0, `archive of ${rootPath} → ${res.statusCode}: ${await readAll(res)}`);
      const base = posix.basename(rootPath);
      // Read once into memory: which patterns match is known only after the whole tree was seen.
      const tree = new Map<string, { entry: TarEntry; content: Buffer[] }>();
      await readTar(res, async (entry, content) => {
        const chunks: Buffer[] = [];
        for await (const c of content) chunks.push(c);
        const name = entry.name.replace(/\/$/, '');
        if (name === base || !name.startsWith(`${base}/`)) return;
        const rel = name.slice(base.length + 1);
        tree.set(rel, { entry: { ...entry, name: rel }, content: chunks });
      });
      const names = [...tree.keys()].sort();
      const selected = new Set<string>();
      const missing: string[] = [];
      const addTree = (rel: string) => {
        for (const n of names) if (n === rel || n.startsWith(`${rel}/`)) selected.add(n);
        const parts = rel.split('/');
        for (let i = 1; i < parts.length; i++) if (tree.has(parts.slice(0, i).join('/'))) selected.add(parts.slice(0, i).join('/'));
      };
      for (const pattern of patterns) {
        const name = safeRelativeName(pattern);
        if (name === '' || name === '.') {
          names.forEach((n) => selected.add(n));
          continue;
        }
        if (!isGlob(name)) {
          if (tree.has(name)) addTree(name);
          else missing.push(pattern);
          continue;
        }
        const re = globToRegExp(name);
        const matches = names.filter((n) => re.test(n));
        if (matches.length === 0) missing.push(pattern);
        matches.forEach(addTree);
      }
      async function* tar(): AsyncIterable<Uint8Array> {
        for (const name of names) {
          if (!selected.has(name)) continue;
          const { entry, content } = tree.get(name)!;
          yield entryHeader(entry);
          if (entry.type !== 'file') continue;
          for (const c of content) yield c;
          const pad = padding(entry.size);
          if (pad.length) yield pad;
        }
        yield END_OF_ARCHIVE;
      }
      return { tar: tar(), missing };
    },

    async extract(dest, source, limits = {}) {
      const destPath = resolveIn(home, dest);
      // Every entry is checked (and the byte limit applied) before anything reaches the container:
      // the first bad entry rejects the whole call with nothing written.
      const parts: Buffer[] = [];
      const counted = await readTar(
        source,
        async (entry, content) => {
          const chunks: Buffer[] = [];
          for await (const c of content) chunks.push(c);
          if (entry.name === '' || entry.name === '.') return;
          parts.push(entryHeader(entry));
          if (entry.type === 'file') parts.push(...chunks, padding(entry.size));
        },
        { maxBytes: limits.maxBytes },
      );
      parts.push(END_OF_ARCHIVE);
      const made = await run(['/bin/sh', '-c', 'mkdir -p "$1"', 'sh', destPath]);
      if (made.exitCode !== 0) throw new Error(`cannot make ${destPath} in the container: ${made.output.trim()}`);
      const res = await engine.stream('PUT', `/containers/${primaryId}/archive?path=${encodeURIComponent(destPath)}`, undefined, {}, Buffer.concat(parts));
      const text = await readAll(res);
      if ((res.statusCode ?? 0) >= 400) throw new DockerEngineError(res.statusCode ?? 0, `unpacking into ${destPath} → ${res.statusCode}: ${text}`);
      return counted;
    },
  };
  return executor;
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
  onOutput: (data: Uint8Array) => void,
): { promise: Promise<number | null>; abandon(): void } {
  let abandon: () => void = () => undefined;
  const promise = (async () => {
    const { body } = await engine.call('POST', `/containers/${container}/exec`, { AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, ...config });
    const res = await engine.stream('POST', `/exec/${body.Id}/start`, { Detach: false, Tty: false });
    if ((res.statusCode ?? 0) >= 400) {
      const text = await readAll(res);
      throw new DockerEngineError(res.statusCode ?? 0, `exec start → ${res.statusCode}: ${text}`);
    }
    const demux = demultiplex((payload) => onOutput(payload));
    await new Promise<void>((resolve, reject) => {
      abandon = () => {
        res.destroy();
        resolve();
      };
      res.on('data', (chunk: Buffer) => demux.push(chunk));
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
 * `auth` as the registry credentials.
 */
async function ensureImage(engine: DockerEngine, image: DockerImage, mirror: string | undefined, log: Logger): Promise<void> {
  try {
    await engine.call('GET', `/images/${encodeURIComponent(image.image)}/json`);
    return;
  } catch (error) {
    if (!(error instanceof DockerEngineError) || error.status !== 404) throw error;
  }
  const ref = parseImageRef(image.image);
  const viaMirror = mirror && ref.registry === 'docker.io';
  const from = viaMirror ? refText(ref, mirror) : refText(ref);
  const headers: Record<string, string> = {};
  if (image.auth) {
    headers['X-Registry-Auth'] = Buffer.from(
      JSON.stringify({ username: image.auth.username, password: image.auth.password, serveraddress: viaMirror ? mirror : ref.registry }),
    ).toString('base64url');
  }
  const repo = from.slice(0, from.length - (ref.digest ? ref.digest.length + 1 : (ref.tag?.length ?? 0) + 1));
  const query = `fromImage=${encodeURIComponent(repo)}&${ref.digest ? `tag=${encodeURIComponent(ref.digest)}` : `tag=${encodeURIComponent(ref.tag!)}`}`;
  log.info('pulling image', { image: from });
  const { body } = await engine.call('POST', `/images/create?${query}`, undefined, headers);
  // A pull reports failure inside its progress stream, with a 200 status.
  const text = typeof body === 'string' ? body : JSON.stringify(body ?? '');
  const failure = /"(?:error|errorDetail)"\s*:\s*\{?\s*"?(?:message"\s*:\s*)?"([^"]+)"/.exec(text);
  if (failure) throw new Error(`pulling ${from} failed: ${failure[1]}`);
  if (viaMirror && !ref.digest) {
    await engine.call('POST', `/images/${encodeURIComponent(from)}/tag?repo=${encodeURIComponent(image.image.replace(/:[^:/]+$/, ''))}&tag=${encodeURIComponent(ref.tag!)}`);
  }
}
