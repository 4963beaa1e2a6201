import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import type { AttachWorkspaceStep, PersistToWorkspaceStep, RestoreCacheStep, SaveCacheStep, StoreArtifactsStep, StoreTestResultsStep } from '../../config/plan';
import { renderCacheKey } from '../../output/cache-keys';
import { parseJUnit, type TestCase } from '../../output/junit';
import type { OutputClient } from '../../output/output-client';
import { readTar, safeRelativeName } from '../../output/tar';
import { expandHome } from '../executor';
import { resolveUnder, workingDirectoryOf, type StepContext, type StepHandler, type StepHandlers } from './step-handler';

/** Largest single test report read (bytes). */
const MAX_REPORT_BYTES = 64 * 1024 * 1024;

const ok = { status: 'success', exitCode: 0 } as const;
const failed = { status: 'failed', exitCode: null } as const;

function gzip(source: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return Readable.from(source).pipe(createGzip({ level: 3 }));
}

function gunzip(source: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return Readable.from(source).pipe(createGunzip());
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
      await client.uploadArtifact(ctx.task, path, content);
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
    await client.storeTestResults(ctx.task, cases);
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
    if (await client.cacheExists(ctx.task, key)) {
      ctx.write(`Skipping cache generation, cache already exists for key: ${key}\n`);
      return ok;
    }
    const home = ctx.executor.home;
    // Entries are relative to $HOME, so a cache restores into the next task's home wherever it is.
    const patterns: string[] = [];
    for (const p of step.paths) {
      const full = posix.normalize(expandHome(resolveUnder(p, workingDirectoryOf(ctx.task)), home));
      if (full !== home && !full.startsWith(`${home}/`)) {
        ctx.write(`Warning: ${p} is outside the home directory; this agent caches paths under $HOME only\n`);
        continue;
      }
      patterns.push(full === home ? '.' : full.slice(home.length + 1));
    }
    const { tar, missing } = await ctx.executor.archive(home, patterns);
    for (const m of missing) ctx.write(`Warning: could not find ${m}\n`);
    ctx.write(`Creating cache archive for key: ${key}\n`);
    const started = Date.now();
    const outcome = await client.saveCache(ctx.task, key, gzip(tar));
    ctx.write(outcome === 'saved' ? `Stored cache in ${((Date.now() - started) / 1000).toFixed(1)}s\n` : `Skipping: another job saved the key ${key} first\n`);
    return ok;
  };

  const restoreCache: StepHandler<RestoreCacheStep> = async (step, ctx) => {
    const keys: string[] = [];
    for (const template of step.keys) keys.push(await renderCacheKey(template, keyContext(ctx)));
    const found = await client.findCache(ctx.task, keys);
    if (!found) {
      ctx.write(`No cache is found for keys: ${keys.join(', ')}\n`);
      return ok;
    }
    ctx.write(`Found a cache from key ${found.key} (${formatBytes(found.bytes)}); restoring\n`);
    const { entries } = await ctx.executor.extract(ctx.executor.home, gunzip(await client.openCache(ctx.task, found.id)));
    ctx.write(`Restored ${entries} entries.\n`);
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
    await client.persistWorkspace(ctx.task, gzip(tar));
    ctx.write(`Persisted ${step.paths.join(', ')} from ${step.root} to the workspace.\n`);
    return ok;
  };

  const attachWorkspace: StepHandler<AttachWorkspaceStep> = async (step, ctx) => {
    const at = resolveUnder(step.at, workingDirectoryOf(ctx.task));
    const layers = await client.workspaceLayers(ctx.task);
    if (layers.length === 0) ctx.write('No workspace was persisted by an upstream job.\n');
    for (const layer of layers) {
      const { entries } = await ctx.executor.extract(at, gunzip(await client.openWorkspaceLayer(ctx.task, layer.id)));
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
