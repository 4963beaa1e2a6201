import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { apiCall, startServerProcess, until } from '../support/processes';

/**
 * The README's promise: `npm start` with nothing configured runs the example pipeline to success,
 * as root (builds as build uids) or as an ordinary user (builds in bubblewrap sandboxes), and the
 * builds are isolated without anyone asking for it.
 */
const ROOT = resolve(__dirname, '../..');
const TOKEN = 'quick-start-token-0123456789';
const NOBODY = 65534;

function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** Paths under `dir` that anyone but their owner may read, write or enter. */
function openToOthers(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => (statSync(join(dir, p)).mode & 0o077) !== 0);
}

function readableBy(uid: number): boolean {
  return spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', `require(${JSON.stringify(join(ROOT, 'package.json'))})`]).status === 0;
}

const root = process.getuid?.() === 0;
const bwrap = spawnSync('bwrap', ['--version']).status === 0;
const CASES: [string, number | undefined, string][] = [
  ...(root ? [['as root', undefined, 'each running task runs as a uid of its own'] as [string, undefined, string]] : []),
  ...(root && bwrap && readableBy(NOBODY) ? [['as an ordinary user', NOBODY, 'each step runs in a bubblewrap sandbox'] as [string, number, string]] : []),
];

describe('npm start on a fresh machine', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  (CASES.length ? it.each(CASES) : it.skip.each([['-', undefined, '']]))(
    '%s: runs the example pipeline to success, isolated by default',
    async (_label, uid, isolation) => {
      const dataDir = mkdtempSync(join(tmpdir(), 'gyre-quick-start-'));
      dirs.push(dataDir);
      if (uid !== undefined) spawnSync('chown', [`${uid}:${uid}`, dataDir]);
      // Nothing about executors is set: the defaults decide (GYRE_EXECUTOR empty is `auto`).
      const server = await startServerProcess(
        { GYRE_DATA_DIR: dataDir, DATABASE_URL: '', GYRE_ADMIN_TOKEN: TOKEN, GYRE_EXAMPLE: 'true', GYRE_EXECUTOR: '', GYRE_LOG_LEVEL: 'info', ...(uid !== undefined ? { HOME: '/nonexistent' } : {}) },
        // A user's first start: the database is made and migrated here, not copied.
        { uid, firstStart: true },
      );
      children.push(server.child);
      // Read at once. The new database was made and migrated in a child process
      // (runtime/store/new-database.ts), so a first start holds about what a restart does (about
      // 250 MiB); one that made it itself held 730 MiB, or 360–400 MiB when a full garbage
      // collection happened to run during a slow start. 237–268 MiB on a loaded 2-core machine.
      expect(rssMiB(server.child.pid!)).toBeLessThan(330);
      // The database the child made is the server's user's alone, as one made in-process was.
      expect(openToOthers(join(dataDir, 'pgdata'))).toEqual([]);
      const api = (method: string, path: string) => apiCall(server.url, TOKEN, method, path);
      const workflow = await until(
        'the example pipeline to finish',
        async () => {
          const [pipeline] = (await api('GET', '/api/v2/project/gh/gyre/example/pipeline')).items;
          const [w] = pipeline ? (await api('GET', `/api/v2/pipeline/${pipeline.id}/workflow`)).items : [];
          return w && !['running', 'on_hold', 'not_run'].includes(w.status) ? w : undefined;
        },
        120_000,
        250,
      );
      const jobs = (await api('GET', `/api/v2/workflow/${workflow.id}/job`)).items;
      expect(jobs.map((j: any) => [j.name, j.status]).sort()).toEqual([
        ['build', 'success'],
        ['deploy', 'success'],
        ['lint', 'success'],
        ['unit-tests', 'success'],
      ]);
      expect(server.stderr()).toContain(isolation);
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    },
    180_000,
  );
});
