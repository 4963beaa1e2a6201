import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createLogger } from '../../runtime/logger';
import { startGyre, type Gyre } from '../../runtime/server/gyre';
import { readSettings } from '../../runtime/settings';
import { checkAnswer, type SpecViolation } from './circleci-spec';
import { createTestDatabase, type StoreKind } from './database';
import { seedEmbeddedDatabase } from './embedded-database';
import { testTempDir } from './temp-dir';

export { flowStore, testStores, type StoreKind } from './database';

/** Makes a git repository with these files committed on `main`; returns its path. */
export function makeGitRepo(files: Record<string, string>, dir = testTempDir('gyre-repo-')): string {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, stdio: 'pipe', env: gitEnv() });
  git('init', '--quiet', '--initial-branch=main');
  git('add', '-A');
  git('commit', '--quiet', '-m', 'fixture');
  return dir;
}

/** Commits more files onto a branch of a repository made by makeGitRepo. */
export function commitFiles(dir: string, branch: string, files: Record<string, string>, message = 'change'): void {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, stdio: 'pipe', env: gitEnv() });
  git('checkout', '--quiet', '-B', branch);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  git('add', '-A');
  git('commit', '--quiet', '-m', message);
}

function gitEnv() {
  return { ...process.env, GIT_AUTHOR_NAME: 'Test', GIT_AUTHOR_EMAIL: 't@example.com', GIT_COMMITTER_NAME: 'Test', GIT_COMMITTER_EMAIL: 't@example.com' };
}

export interface TestGyre {
  readonly url: string;
  readonly token: string;
  readonly dataDir: string;
  readonly gyre: Gyre;
  /** Creates a git repository with these files and registers it as a project; returns the repo path. */
  addProject(slug: string, files: Record<string, string>): Promise<string>;
  trigger(slug: string, body?: { branch?: string; tag?: string; parameters?: Record<string, unknown> }): Promise<{ id: string; number: number }>;
  api<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  /** Calls the API and returns status and parsed body, without throwing on errors. */
  raw(method: string, path: string, init?: { body?: string; headers?: Record<string, string> }): Promise<{ status: number; body: any; text: string }>;
  /** Waits until the pipeline's first job has been queued and returns its job number. */
  firstJobNumber(pipelineId: string, timeoutMs?: number): Promise<number>;
  /** Waits until every workflow of the pipeline has ended (or the pipeline errored). */
  waitForPipeline(id: string, timeoutMs?: number): Promise<{ pipeline: any; workflows: any[]; jobs: Record<string, any> }>;
  /**
   * Answers made through `api` and `raw` that do not fit CircleCI's API v2 description (a 2xx status
   * it does not list, or a JSON body outside its schema), in the order they came.
   */
  readonly specViolations: SpecViolation[];
  stop(): Promise<void>;
}

export interface TestGyreOptions {
  readonly store?: StoreKind;
  readonly env?: Record<string, string>;
}

const TERMINAL = new Set(['success', 'failed', 'error', 'canceled', 'not_run', 'unauthorized']);

/** Starts a whole Gyre in this process on a random port, with a fresh data dir and database. */
export async function startTestGyre(options: TestGyreOptions = {}): Promise<TestGyre> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gyre-data-'));
  const database = options.store === 'postgres' ? await createTestDatabase() : undefined;
  const token = `test-token-${randomBytes(12).toString('hex')}`;
  const settings = readSettings({
    GYRE_PORT: '0',
    GYRE_OPS_PORT: '0',
    GYRE_HOST: '127.0.0.1',
    GYRE_DATA_DIR: dataDir,
    GYRE_ADMIN_TOKEN: token,
    GYRE_EXAMPLE: 'false',
    GYRE_RUNNER_SLOTS: '4',
    // Steps as the test's own user, so fixtures can hand them paths; isolation tests choose theirs.
    GYRE_EXECUTOR: 'shell',
    ...(database ? { DATABASE_URL: database.url } : {}),
    ...options.env,
  });
  // The embedded database starts from a migrated copy rather than initdb and every migration.
  if (!settings.databaseUrl) await seedEmbeddedDatabase(settings.dataDir);
  const gyre = await startGyre(settings, createLogger({ level: process.env.GYRE_TEST_LOG === '1' ? 'info' : 'silent' }));
  const url = gyre.url!;
  const repos: string[] = [];
  const specViolations: SpecViolation[] = [];

  const raw: TestGyre['raw'] = async (method, path, init = {}) => {
    const res = await fetch(url + path, { method, body: init.body, headers: { 'Circle-Token': token, 'Content-Type': 'application/json', ...init.headers } });
    const text = await res.text();
    let body: any;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    const violation = body === undefined ? undefined : checkAnswer(method, path, res.status, body, res.headers.get('content-type') ?? '');
    if (violation) {
      specViolations.push(violation);
      // test/setup-spec-watch.ts fails the test too; thrown here, the stack shows the request.
      if (process.env.GYRE_TEST_SPEC !== 'collect') throw new Error(`${violation.request} does not fit CircleCI's API v2 description (${violation.operation}): ${violation.problems.join('; ')}`);
    }
    return { status: res.status, body, text };
  };
  const api: TestGyre['api'] = async (method, path, body) => {
    const r = await raw(method, path, { body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status >= 400) throw new Error(`${method} ${path} → ${r.status}: ${r.text}`);
    return r.body;
  };

  return {
    url,
    token,
    dataDir,
    gyre,
    api,
    raw,
    specViolations,
    async addProject(slug, files) {
      const [org, name] = slug.replace(/^gh\//, '').split('/');
      const repo = makeGitRepo(files);
      repos.push(repo);
      await api('POST', '/api/v2/projects', { org, name, repo_url: repo });
      return repo;
    },
    trigger: (slug, body = {}) => api('POST', `/api/v2/project/${slug.startsWith('gh/') ? slug : `gh/${slug}`}/pipeline`, body),
    async firstJobNumber(pipelineId, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const wf = (await api('GET', `/api/v2/pipeline/${pipelineId}/workflow`)).items[0];
        const number = wf ? (await api('GET', `/api/v2/workflow/${wf.id}/job`)).items[0]?.job_number : undefined;
        if (number) return number;
        if (Date.now() > deadline) throw new Error(`pipeline ${pipelineId} queued no job within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async waitForPipeline(id, timeoutMs = 50_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const pipeline = await api('GET', `/api/v2/pipeline/${id}`);
        if (pipeline.state === 'errored') return { pipeline, workflows: [], jobs: {} };
        if (pipeline.state === 'created') {
          const workflows = (await api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
          if (workflows.every((w: any) => TERMINAL.has(w.status))) {
            const jobs: Record<string, any> = {};
            for (const w of workflows) for (const j of (await api('GET', `/api/v2/workflow/${w.id}/job`)).items) jobs[j.name] = j;
            return { pipeline, workflows, jobs };
          }
        }
        if (Date.now() > deadline) throw new Error(`pipeline ${id} did not finish within ${timeoutMs} ms (state ${pipeline.state})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      await gyre.stop();
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
      for (const repo of repos) rmSync(repo, { recursive: true, force: true });
    },
  };
}
