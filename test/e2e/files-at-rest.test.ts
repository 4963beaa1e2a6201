import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createLocalBlobStore } from '../../runtime/blob/local-blob-store';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { createOutputService } from '../../runtime/output/output-service';
import { openStore } from '../../runtime/store/open-store';
import { commitFiles, makeGitRepo } from '../support/gyre';
import { apiCall, startServerProcess, until } from '../support/processes';

// Files at rest: the data directory is 0700 and what Gyre writes there is its user's alone (0600,
// directories 0700), the embedded database (which PGlite writes 0666) and the task-token signing
// key in it included; an existing, too open data directory is tightened at start, and says so.

const TOKEN = 'files-at-rest-token-0123456789';

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: mkdir -p out deps && echo built > out/a.txt && echo dep > deps/d.txt
      - store_artifacts: { path: out }
      - save_cache: { key: 'rest-v1', paths: [deps] }
      - persist_to_workspace: { root: ., paths: [out] }
  use:
    docker: [{ image: cimg/base:stable }]
    steps:
      - attach_workspace: { at: . }
      - run: cat out/a.txt
workflows:
  main:
    jobs: [build, { use: { requires: [build] } }]
`;

/** Everything under `root` (links not followed) whose mode lets group or others in, as `mode path`. */
function openToOthers(root: string, skip: (rel: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const path = rel ? join(root, rel) : root;
    const info = lstatSync(path);
    if (info.isSymbolicLink() || skip(rel)) return;
    if (info.mode & 0o077) out.push(`${(info.mode & 0o7777).toString(8)} ${rel || '.'}`);
    if (info.isDirectory()) for (const name of readdirSync(path)) walk(rel ? `${rel}/${name}` : name);
  };
  walk('');
  return out;
}

describe('files at rest', () => {
  const temp = mkdtempSync(join(tmpdir(), 'gyre-rest-'));
  afterAll(() => rmSync(temp, { recursive: true, force: true }));

  test('after a real start and a pipeline run nothing in the data directory is open to others; an open one is tightened at start and the log says so', async () => {
    const dataDir = join(temp, 'data');
    // A data directory an earlier Gyre left open: the directory, a blob, and something not Gyre's.
    mkdirSync(join(dataDir, 'blobs', 'old'), { recursive: true, mode: 0o755 });
    chmodSync(dataDir, 0o755);
    chmodSync(join(dataDir, 'blobs'), 0o755);
    chmodSync(join(dataDir, 'blobs', 'old'), 0o755);
    writeFileSync(join(dataDir, 'blobs', 'old', 'leftover.bin'), 'old blob', { mode: 0o644 });
    chmodSync(join(dataDir, 'blobs', 'old', 'leftover.bin'), 0o644);
    writeFileSync(join(dataDir, 'notes.txt'), 'not Gyre’s', { mode: 0o644 });
    chmodSync(join(dataDir, 'notes.txt'), 0o644);
    const repo = makeGitRepo({ '.circleci/config.yml': CONFIG }, mkdtempSync(join(temp, 'repo-')));

    const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: TOKEN, GYRE_LOG_LEVEL: 'warn', DATABASE_URL: '' }, { firstStart: true });
    try {
      const api = (method: string, path: string, body?: unknown) => apiCall(server.url, TOKEN, method, path, body);
      await api('POST', '/api/v2/projects', { org: 'acme', name: 'rest', repo_url: repo });
      const { id } = await api('POST', '/api/v2/project/gh/acme/rest/pipeline', {});
      const workflow = await until('the pipeline to finish', async () => {
        const [w] = (await api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
        return w && ['success', 'failed', 'error', 'canceled'].includes(w.status) ? w : undefined;
      });
      expect(workflow.status).toBe('success');
      expect(server.stderr()).toMatch(/warn tightened files in the data directory that group or others could reach .* count=4 /);
    } finally {
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    }

    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    // The build's own directories (tasks/<task>) are the build's; everything else is Gyre's alone.
    expect(openToOthers(dataDir, (rel) => rel === 'notes.txt' || rel.startsWith('tasks/'))).toEqual([]);
    expect(statSync(join(dataDir, 'notes.txt')).mode & 0o777).toBe(0o644);
    // The embedded database and the blobs the run stored (artifact, cache, workspace layer) are there, 0600.
    const files = (dir: string) => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
    const pgdata = files(join(dataDir, 'pgdata'));
    expect(pgdata.length).toBeGreaterThan(100);
    expect(new Set(pgdata.map((f) => statSync(f).mode & 0o777))).toEqual(new Set([0o600]));
    const blobs = files(join(dataDir, 'blobs'));
    expect(blobs.filter((f) => /artifacts|caches|workspaces/.test(f)).length).toBeGreaterThanOrEqual(3);
    expect(new Set(blobs.map((f) => statSync(f).mode & 0o777))).toEqual(new Set([0o600]));
  }, 180_000);

  test('git mirrors are Gyre’s alone, as cloned and after later fetches, whatever the umask', async () => {
    expect(process.umask() & 0o077).not.toBe(0o077);
    const repo = makeGitRepo({ 'a.txt': 'a' }, mkdtempSync(join(temp, 'remote-')));
    const cacheDir = join(temp, 'git-mirrors');
    const forge = createGitForge({ cacheDir });
    // A URL that is not a directory path on this disk goes through a mirror.
    const url = relative(process.cwd(), repo);
    expect(await forge.defaultBranch(url)).toBe('main');
    commitFiles(repo, 'main', { 'b.txt': 'b' });
    await forge.resolve(url, { branch: 'main' });
    expect(statSync(cacheDir).mode & 0o777).toBe(0o700);
    expect(openToOthers(cacheDir, () => false)).toEqual([]);
  });

  test('uploads wait in a spool directory of Gyre’s own, in files only its user can read', async () => {
    const store = await openStore({});
    const spoolDir = join(temp, 'spools');
    const output = createOutputService({ store, blobs: createLocalBlobStore({ root: join(temp, 'blobs') }), log: createLogger({ level: 'silent' }), spoolDir });
    let seen: string[] = [];
    async function* body() {
      yield Buffer.from('first half ');
      // The spool is written as the upload arrives: look at it before the rest comes.
      const names = await until('the spool file', async () => {
        const found = await readdir(spoolDir);
        return found.length > 0 && found;
      }, 5000, 10);
      seen = await Promise.all(names.map(async (name) => `${((await stat(join(spoolDir, name))).mode & 0o777).toString(8)} ${name.replace(/^(gyre-upload-).+/, '$1ID')}`));
      yield Buffer.from('second half');
    }
    // No such job: the artifact is refused when its row is written, after it was spooled.
    await output.client.uploadArtifact({ jobId: '00000000-0000-4000-8000-000000000000', nodeIndex: 0 } as TaskContext, 'a.txt', body()).catch(() => undefined);
    expect(seen).toEqual(['600 gyre-upload-ID']);
    expect(statSync(spoolDir).mode & 0o777).toBe(0o700);
    expect(readdirSync(spoolDir)).toEqual([]);
    await store.close();
  });
});
