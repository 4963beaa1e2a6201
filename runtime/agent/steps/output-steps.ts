import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { PassThrough, pipeline, Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import type { AttachWorkspaceStep, PersistToWorkspaceStep, RestoreCacheStep, SaveCacheStep, StoreArtifactsStep, StoreTestResultsStep } from '../../config/plan';
import { InputError, NotFoundError } from '../../domain/errors';
import { renderCacheKey } from '../../output/cache-keys';
import { globPatternToRegExp, isGlob } from '../../output/file-sets';
import { parseJUnit, type TestCase } from '../../output/junit';
import type { CallOptions, OutputClient } from '../../output/output-client';
import { createTarWriter, readTar, readTarAs, safeRelativeName, UnsafePathError, type TarEntry, type TarView } from '../../output/tar';
import { expandHome } from '../executor';
import { resolveUnder, workingDirectoryOf, type StepContext, type StepHandler, type StepHandlers } from './step-handler';

/** Largest single test report read (bytes). */
const MAX_REPORT_BYTES = 64 * 1024 * 1024;

const ok = { status: 'success', exitCode: 0 } as const;
const failed = { status: 'failed', exitCode: null } as const;

// Through `pipeline`, so a failing source fails the reader (and a reader that stops closes the source).
function gzip(source: AsyncIterable<Uint8Array>): Readable {
  return pipeline(Readable.from(source), createGzip({ level: 3 }), () => undefined);
}

function gunzip(source: AsyncIterable<Uint8Array>): Readable {
  return pipeline(Readable.from(source), createGunzip(), () => undefined);
}

/** A path as the step gives it: absolute, `~/…`, or relative to the working directory. */
function splitPath(path: string, ctx: StepContext): { dir: string; base: string } {
  const full = posix.normalize(expandHome(resolveUnder(path, workingDirectoryOf(ctx.task)), ctx.executor.home));
  const trimmed = full.replace(/\/+$/, '') || '/';
  return { dir: posix.dirname(trimmed), base: posix.basename(trimmed) };
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

async function collect(content: AsyncIterable<Buffer>, max: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const c of content) {
    size += c.length;
    if (size > max) return undefined;
    parts.push(c);
  }
  return Buffer.concat(parts);
}

/*
 * Cache archives. Layout 1 (every cache saved before Gyre cached paths outside $HOME) holds entries
 * relative to $HOME and nothing else. Layout 2 starts with CACHE_MARKER, a small JSON file naming
 * the layout and the paths saved; then `home/…`, relative to $HOME (so they restore into the
 * restoring task's home, wherever that is), then `root/…`, relative to `/` (restored to the same
 * absolute paths). A layout 1 cache is told apart by its first entry: only layout 2 and later
 * begin with the marker. docs/output.md describes the layouts for people.
 */
const CACHE_MARKER = '.gyre-cache.json';
const CACHE_LAYOUT = 2;
/** Larger than any marker Gyre writes; a bigger first entry of that name is a user's file. */
const MAX_MARKER_BYTES = 1024 * 1024;

interface CacheMarker {
  readonly layout: number;
  /** Saved paths under $HOME, relative to it (`.` for $HOME itself); patterns as given. */
  readonly home: readonly string[];
  /** Saved absolute paths outside $HOME. */
  readonly root: readonly string[];
}

/** The marker in a cache's first entry, or undefined when that entry is not one (a layout 1 cache). */
function parseMarker(body: Buffer): CacheMarker | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  const m = value as Partial<CacheMarker> | null;
  if (typeof m !== 'object' || m === null || !Number.isInteger(m.layout) || (m.layout as number) < 2) return undefined;
  if (m.layout !== CACHE_LAYOUT) return { layout: m.layout as number, home: [], root: [] };
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  const absolute = (p: string) => p.startsWith('/') && p !== '/' && posix.normalize(p) === p && !p.endsWith('/');
  if (!strings(m.home) || !strings(m.root) || !m.root.every(absolute)) throw new InputError(`the cache's ${CACHE_MARKER} is malformed`, 'cache');
  return { layout: CACHE_LAYOUT, home: m.home, root: m.root };
}

function plural(n: number): string {
  return `${n} entr${n === 1 ? 'y' : 'ies'}`;
}

function homeLabel(pattern: string): string {
  return pattern === '.' ? '~' : `~/${pattern}`;
}

/** Whether `name` (relative to `/`) is a saved absolute path or under one. */
function underSavedPath(name: string, saved: readonly string[]): boolean {
  return saved.some((path) => {
    const dir = posix.dirname(path).slice(1);
    const base = posix.basename(path);
    const rest = dir ? (name.startsWith(`${dir}/`) ? name.slice(dir.length + 1) : undefined) : name;
    if (rest === undefined) return false;
    const first = rest.split('/')[0];
    return isGlob(base) ? globPatternToRegExp(base).test(first) : first === base;
  });
}

/** Stops a pass over a cache once the rest of it is for another destination. */
const STOP = new Error('stop reading');

/**
 * Streams the entries `onEntry` sends on from a cache archive into `ctx.executor.extract(dest)`,
 * as they are read. Either side failing stops the other; the first failure is the one thrown.
 * `view` may throw STOP to end the pass early (the rest of the archive is not read).
 */
async function extractPart(
  ctx: StepContext,
  dest: string,
  source: Readable,
  view: TarView,
  onEntry: (entry: TarEntry, content: AsyncIterable<Buffer>, send: (entry: TarEntry, content?: AsyncIterable<Uint8Array> | Uint8Array) => Promise<void>) => Promise<void>,
): Promise<{ entries: number; bytes: number }> {
  const writer = createTarWriter();
  let failure: { error: unknown } | undefined;
  const fail = (error: unknown) => {
    failure ??= { error };
    writer.fail(error instanceof Error ? error : new Error(String(error)));
  };
  const extracting = ctx.executor.extract(dest, writer.tar);
  // An extract that refuses an entry stops reading: the reading side must not wait on it.
  extracting.catch(fail);
  const reading = readTarAs(source, view, (entry, content) => onEntry(entry, content, (e, c) => writer.add(e, c)))
    .catch((error) => {
      if (error !== STOP) throw error;
    })
    .then(() => writer.end());
  reading.catch(fail);
  try {
    const [, extracted] = await Promise.allSettled([reading, extracting]);
    if (failure) throw failure.error;
    return (extracted as PromiseFulfilledResult<{ entries: number; bytes: number }>).value;
  } finally {
    // Closes the download too when the pass ended before the archive did.
    source.destroy();
  }
}

/** Closes an archive stream that will not be read (or not to its end). */
async function close(tar: AsyncIterable<Uint8Array>): Promise<void> {
  await tar[Symbol.asyncIterator]().return?.();
}

/** A call's options for a step: a retry of a transient failure is said in the step's output. */
function reported(ctx: StepContext): CallOptions {
  return { onRetry: (message) => ctx.write(`${message}\n`) };
}

/**
 * The content of the file `name` (relative to `dir`), archived anew: the body of a retried
 * upload, whose first archive went to the attempt that failed.
 */
async function fileAgain(ctx: StepContext, dir: string, name: string, label: string): Promise<AsyncIterable<Uint8Array>> {
  const { tar, missing } = await ctx.executor.archive(dir, [name]);
  if (missing.length) {
    await close(tar);
    throw new Error(`${label} is gone since the first attempt; it cannot be sent again`);
  }
  const out = new PassThrough();
  let found = false;
  readTar(tar, async (entry, content) => {
    if (found || entry.name !== name || entry.type !== 'file') return;
    found = true;
    for await (const chunk of content) {
      if (out.destroyed) throw new Error('the upload stopped reading');
      if (!out.write(chunk)) await new Promise((resolve) => out.once('drain', resolve).once('close', resolve));
    }
  }).then(
    () => (found ? out.end() : out.destroy(new Error(`${label} is no longer a file; it cannot be sent again`))),
    (error) => {
      out.destroy(error);
      void close(tar).catch(() => undefined);
    },
  );
  return out;
}

/** `source`, telling `onStop` when its reader stops before the end (an attempt that failed, a refusal). */
async function* untilStopped(source: AsyncIterable<Uint8Array>, onStop: () => void): AsyncIterable<Uint8Array> {
  let ended = false;
  try {
    yield* source;
    ended = true;
  } finally {
    if (!ended) onStop();
  }
}

/** The file steps, run through the executor's file transfer and an `OutputClient`. */
export function createOutputStepHandlers(client: OutputClient): Partial<StepHandlers> {
  const storeArtifacts: StepHandler<StoreArtifactsStep> = async (step, ctx) => {
    const { dir, base } = splitPath(step.path, ctx);
    const prefix = safeRelativeName(step.destination ?? step.path.replace(/^~\/?/, '').replace(/^\/+/, ''));
    const { tar, missing } = await ctx.executor.archive(dir, [base]);
    if (missing.length) {
      ctx.write(`No artifact files found at ${step.path}\n`);
      for await (const _ of tar) void _;
      return ok;
    }
    let count = 0;
    await readTar(tar, async (entry, content) => {
      if (entry.type !== 'file') return;
      const rest = entry.name === base ? '' : entry.name.slice(base.length + 1);
      const path = rest ? (prefix ? `${prefix}/${rest}` : rest) : prefix || base;
      ctx.write(`Uploading ${path} (${formatBytes(entry.size)})\n`);
      // The first attempt reads the file from this archive; a retry archives it again.
      let sent = false;
      const open = async () => {
        if (sent) return fileAgain(ctx, dir, entry.name, `${posix.join(dir, entry.name)}`);
        sent = true;
        return content;
      };
      await client.uploadArtifact(ctx.task, path, open, reported(ctx));
      count++;
    });
    ctx.write(`Uploaded ${count} artifact file${count === 1 ? '' : 's'}.\n`);
    return ok;
  };

  const storeTestResults: StepHandler<StoreTestResultsStep> = async (step, ctx) => {
    const { dir, base } = splitPath(step.path, ctx);
    const { tar, missing } = await ctx.executor.archive(dir, [base]);
    if (missing.length) {
      ctx.write(`No test results found at ${step.path}\n`);
      for await (const _ of tar) void _;
      return ok;
    }
    const cases: TestCase[] = [];
    await readTar(tar, async (entry, content) => {
      if (entry.type !== 'file' || !/\.xml$/i.test(entry.name)) return;
      const body = await collect(content, MAX_REPORT_BYTES);
      if (!body) {
        ctx.write(`Skipped ${entry.name}: larger than ${formatBytes(MAX_REPORT_BYTES)}\n`);
        return;
      }
      try {
        const found = parseJUnit(body.toString('utf8'));
        cases.push(...found);
        ctx.write(`${entry.name}: ${found.length} test${found.length === 1 ? '' : 's'}\n`);
      } catch (error) {
        ctx.write(`Skipped ${entry.name}: ${(error as Error).message}\n`);
      }
    });
    // All of them in one call: stored together, or (on a failure) none.
    await client.storeTestResults(ctx.task, cases, reported(ctx));
    const failures = cases.filter((c) => c.result === 'failure').length;
    ctx.write(`Stored ${cases.length} test results (${failures} failed).\n`);
    return ok;
  };

  const keyContext = (ctx: StepContext) => ({
    branch: ctx.task.branch,
    revision: ctx.task.revision,
    buildNum: ctx.task.jobNumber,
    environment: { ...ctx.env, ...ctx.task.spec.environment },
    async checksum(file: string) {
      const { dir, base } = splitPath(file, ctx);
      const { tar, missing } = await ctx.executor.archive(dir, [base]);
      const hash = createHash('sha256');
      let found = false;
      await readTar(tar, async (entry, content) => {
        if (entry.name !== base || entry.type !== 'file') return;
        found = true;
        for await (const c of content) hash.update(c);
      });
      if (missing.length || !found) throw new Error(`checksum: ${file} is not a file`);
      return hash.digest('base64');
    },
  });

  const saveCache: StepHandler<SaveCacheStep> = async (step, ctx) => {
    const key = await renderCacheKey(step.key, keyContext(ctx));
    if (await client.cacheExists(ctx.task, key, reported(ctx))) {
      ctx.write(`Skipping cache generation, cache already exists for key: ${key}\n`);
      return ok;
    }
    const home = ctx.executor.home;
    const homePatterns: string[] = [];
    const absolute = new Set<string>();
    for (const p of step.paths) {
      const full = posix.normalize(expandHome(resolveUnder(p, workingDirectoryOf(ctx.task)), home)).replace(/(.)\/+$/, '$1');
      if (full === home || full.startsWith(`${home}/`)) homePatterns.push(full === home ? '.' : full.slice(home.length + 1));
      else if (full === '/') ctx.write(`Warning: ${p} is the root directory; it is not cached\n`);
      else absolute.add(full);
    }
    // A path inside another saved path comes with it.
    const rootPaths = [...absolute].sort().filter((p, _, all) => !all.some((q) => p.startsWith(`${q}/`)));

    // Each part is an archive of the executor's; they are read one after the other into one.
    interface Part {
      readonly tar: AsyncIterable<Uint8Array>;
      /** Archives the part again, for a retried upload. */
      readonly again: () => Promise<AsyncIterable<Uint8Array>>;
      /** `home` or `root`: the part's top-level directory in the cache archive. */
      readonly base: 'home' | 'root';
      /** Where the archive's names sit under `base`. */
      readonly dir: string;
      readonly label: string;
    }
    const parts: Part[] = [];
    const marker = { layout: CACHE_LAYOUT, home: [] as string[], root: [] as string[] };
    if (homePatterns.length) {
      const { tar, missing } = await ctx.executor.archive(home, homePatterns);
      for (const m of missing) ctx.write(`Warning: could not find ${homeLabel(m)}\n`);
      marker.home = homePatterns.filter((p) => !missing.includes(p));
      const again = async () => (await ctx.executor.archive(home, marker.home)).tar;
      if (marker.home.length) parts.push({ tar, again, base: 'home', dir: '', label: marker.home.map(homeLabel).join(', ') });
      else await close(tar);
    }
    for (const path of rootPaths) {
      const dir = posix.dirname(path);
      const archived = await ctx.executor.archive(dir, [posix.basename(path)]).catch((error: unknown) => {
        if (error instanceof NotFoundError) return undefined;
        throw error;
      });
      if (!archived || archived.missing.length) {
        ctx.write(`Warning: could not find ${path}\n`);
        if (archived) await close(archived.tar);
        continue;
      }
      marker.root.push(path);
      const again = async () => (await ctx.executor.archive(dir, [posix.basename(path)])).tar;
      parts.push({ tar: archived.tar, again, base: 'root', dir: dir.slice(1), label: path });
    }

    ctx.write(`Creating cache archive for key: ${key}\n`);
    const started = Date.now();
    /** The producer's own failure (an entry it cannot cache): the reason the step fails, whatever the upload made of it. */
    let failure: { error: unknown } | undefined;
    /** Entries of each part in the last archive produced to its end (what the server has). */
    let counted: number[] = parts.map(() => 0);
    /** The archive, produced from `tars` (one per part) as the upload reads it. */
    const produce = (tars: readonly AsyncIterable<Uint8Array>[], first: boolean): AsyncIterable<Uint8Array> => {
      const writer = createTarWriter();
      const counts = parts.map(() => 0);
      let stopped = false;
      const producing = (async () => {
        const body = Buffer.from(JSON.stringify(marker));
        await writer.add({ name: CACHE_MARKER, type: 'file', size: body.length, mode: 0o644, mtime: Math.floor(Date.now() / 1000) }, body);
        for (const [i, part] of parts.entries()) {
          const rename = (name: string) => {
            const rel = safeRelativeName(name);
            return rel ? (part.dir ? `${part.dir}/${rel}` : rel) : undefined;
          };
          try {
            // Named as it will be restored (under $HOME or `/`) and checked there, as extract will
            // check it: what a restore would refuse (a link leading out, as in a Python virtualenv)
            // is left out of the cache with a warning, rather than failing every later restore.
            const skipRefused = (error: UnsafePathError) => {
              if (first) ctx.write(`Warning: not cached (a restore would refuse it): ${error.message}\n`);
              return true;
            };
            await readTarAs(tars[i], { rename, skipRefused }, async (entry, content) => {
              counts[i]++;
              const link = entry.type === 'hardlink' ? `${part.base}/${entry.linkname}` : entry.linkname;
              await writer.add({ ...entry, name: `${part.base}/${entry.name}`, linkname: link }, content);
            });
          } catch (error) {
            if (error instanceof UnsafePathError) throw new InputError(`cannot cache ${part.label}: ${error.message}`, 'path');
            throw error;
          }
        }
        await writer.end();
        counted = counts;
      })();
      producing.catch(async (error) => {
        // After the upload stopped reading, the producer fails only because of that.
        if (!stopped) failure ??= { error };
        writer.fail(error instanceof Error ? error : new Error(String(error)));
        for (const tar of tars) await close(tar).catch(() => undefined);
      });
      // An upload that gives up (a size limit, a broken connection) stops reading: the producer must not wait on it.
      return untilStopped(gzip(writer.tar), () => {
        stopped = true;
        writer.fail(new Error('the upload stopped reading the cache archive'));
      });
    };
    let opened = 0;
    const open = async () => (opened++ === 0 ? produce(parts.map((p) => p.tar), true) : produce(await Promise.all(parts.map((p) => p.again())), false));
    let saved: 'saved' | 'exists';
    try {
      saved = await client.saveCache(ctx.task, key, open, reported(ctx));
    } catch (error) {
      throw failure ? failure.error : error;
    } finally {
      // Refused before its body was read (a bad key): the archives were never read, close them.
      if (opened === 0) for (const part of parts) await close(part.tar).catch(() => undefined);
    }
    if (failure) throw failure.error;
    if (saved === 'exists') {
      ctx.write(`Skipping: another job saved the key ${key} first\n`);
      return ok;
    }
    ctx.write(`Stored cache in ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
    for (const [i, part] of parts.entries()) {
      const where = part.base === 'home' ? `relative to $HOME (${home}), restored into the home of the job that restores it` : 'restored to the same path';
      ctx.write(`  ${part.label}: ${plural(counted[i])}, ${where}\n`);
    }
    if (!parts.length) ctx.write('  nothing: none of the paths was found\n');
    return ok;
  };

  const restoreCache: StepHandler<RestoreCacheStep> = async (step, ctx) => {
    const keys: string[] = [];
    for (const template of step.keys) keys.push(await renderCacheKey(template, keyContext(ctx)));
    const found = await client.findCache(ctx.task, keys, reported(ctx));
    if (!found) {
      ctx.write(`No cache is found for keys: ${keys.join(', ')}\n`);
      const withheld = await client.withheldCache?.(ctx.task, keys, reported(ctx));
      if (withheld) ctx.write(`Not restored: ${withheld.reason}\n`);
      return ok;
    }
    ctx.write(`Found a cache from key ${found.key} (${formatBytes(found.bytes)}); restoring\n`);
    const home = ctx.executor.home;
    const open = async () => gunzip(await client.openCache(ctx.task, found.id, reported(ctx)));

    // First pass: the layout, then the part under $HOME (a layout 1 cache is all that part).
    let state: 'first' | 'layout1' | 'home' | 'rest' = 'first';
    let marker: CacheMarker | undefined;
    const homeView: TarView = {
      rename(name) {
        const rel = safeRelativeName(name);
        if (state === 'first' || state === 'layout1') return rel;
        if (state === 'home' && rel.startsWith('home/')) return rel.slice('home/'.length);
        // The `root/` part comes after the home part: a second such name ends this pass (the
        // first is skipped, or refused as a hardlink target: a home entry cannot link to it).
        // So does any entry after the marker of a layout this agent does not know.
        if (state === 'rest') throw STOP;
        if (rel.startsWith('root/')) state = 'rest';
        return undefined;
      },
    };
    const inHome = await extractPart(ctx, home, await open(), homeView, async (entry, content, send) => {
      if (state !== 'first') return send(entry, content);
      state = 'layout1';
      if (entry.name !== CACHE_MARKER || entry.type !== 'file' || entry.size > MAX_MARKER_BYTES) return send(entry, content);
      const body = (await collect(content, MAX_MARKER_BYTES))!;
      marker = parseMarker(body);
      if (!marker) return send(entry, body);
      state = marker.layout === CACHE_LAYOUT ? 'home' : 'rest';
    });
    if (!marker) {
      ctx.write(`Restored ${plural(inHome.entries)} into $HOME (${home}); the cache was saved by an earlier Gyre, with every path relative to $HOME\n`);
      return ok;
    }
    if (marker.layout !== CACHE_LAYOUT) {
      ctx.write(`Nothing restored: the cache has layout ${marker.layout}, and this agent reads layouts 1 to ${CACHE_LAYOUT} (a newer Gyre saved it)\n`);
      return ok;
    }
    if (marker.home.length) ctx.write(`Restored ${marker.home.map(homeLabel).join(', ')} into $HOME (${home}): ${plural(inHome.entries)}\n`);
    if (!marker.home.length && !marker.root.length) ctx.write('Nothing restored: the cache holds no paths\n');
    if (!marker.root.length) return ok;

    // Second pass: the `root/` part, to `/`, only what lies under the absolute paths the cache saved.
    const saved = marker.root;
    const rootView: TarView = {
      rename(name) {
        const rel = safeRelativeName(name);
        return rel.startsWith('root/') ? rel.slice('root/'.length) : undefined;
      },
      keep: (name) => underSavedPath(name, saved),
    };
    const atRoot = await extractPart(ctx, '/', await open(), rootView, (entry, content, send) => send(entry, content));
    ctx.write(`Restored ${saved.join(', ')} (same paths as saved): ${plural(atRoot.entries)}\n`);
    return ok;
  };

  const persistToWorkspace: StepHandler<PersistToWorkspaceStep> = async (step, ctx) => {
    const root = resolveUnder(step.root, workingDirectoryOf(ctx.task));
    const { tar, missing } = await ctx.executor.archive(root, step.paths);
    if (missing.length) {
      for await (const _ of tar) void _;
      ctx.write(`Nothing in ${step.root} matches: ${missing.join(', ')}\n`);
      return failed;
    }
    // The first attempt sends this archive; a retry archives the paths again.
    let opened = 0;
    const open = async () => gzip(opened++ === 0 ? tar : (await ctx.executor.archive(root, step.paths)).tar);
    try {
      await client.persistWorkspace(ctx.task, open, reported(ctx));
    } finally {
      if (opened === 0) await close(tar).catch(() => undefined);
    }
    ctx.write(`Persisted ${step.paths.join(', ')} from ${step.root} to the workspace.\n`);
    return ok;
  };

  const attachWorkspace: StepHandler<AttachWorkspaceStep> = async (step, ctx) => {
    const at = resolveUnder(step.at, workingDirectoryOf(ctx.task));
    const layers = await client.workspaceLayers(ctx.task, reported(ctx));
    if (layers.length === 0) ctx.write('No workspace was persisted by an upstream job.\n');
    for (const layer of layers) {
      const { entries } = await ctx.executor.extract(at, gunzip(await client.openWorkspaceLayer(ctx.task, layer.id, reported(ctx))));
      ctx.write(`Applied the layer from ${layer.jobName} (${entries} entries) at ${step.at}\n`);
    }
    return ok;
  };

  return {
    store_artifacts: storeArtifacts,
    store_test_results: storeTestResults,
    save_cache: saveCache,
    restore_cache: restoreCache,
    persist_to_workspace: persistToWorkspace,
    attach_workspace: attachWorkspace,
  };
}
