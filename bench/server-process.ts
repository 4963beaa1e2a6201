import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../test/support/database';
import { apiCall, startServerProcess } from '../test/support/processes';

/** A `gyre server` process a benchmark drives through its public interfaces. */
export interface ServerProcess {
  readonly url: string;
  /** The admin token (`Circle-Token`). */
  readonly token: string;
  readonly child: ChildProcess;
  /** Its data directory, and its database's URL on PostgreSQL (unset: the embedded one in the data directory). */
  readonly dataDir: string;
  readonly databaseUrl?: string;
  /** An API call with the admin token. */
  api(method: string, path: string, body?: unknown): Promise<any>;
  /** Stops the process (SIGTERM, SIGKILL after 15 s); its data stays until `stop`. */
  stopServer(): Promise<void>;
  /** Stops it and removes its data directory and database. */
  stop(): Promise<void>;
}

/**
 * `gyre server` in a process of its own with `npm start` settings, as a user runs it: only what a
 * harness must set differs (a fresh data directory and, on PostgreSQL, a fresh database, a known
 * admin token, ports the kernel picks, no example project).
 */
export async function startUserServer(store: 'pglite' | 'postgres', name: string): Promise<ServerProcess> {
  const dataDir = mkdtempSync(join(tmpdir(), `gyre-bench-${name}-`));
  const token = `bench-${randomBytes(12).toString('hex')}`;
  const db = store === 'postgres' ? await createTestDatabase() : undefined;
  // BENCH_CPU_PROFILE=<dir>: each server writes a V8 CPU profile there when it stops (open it in
  // Chrome's DevTools, Performance tab). The profiler costs the server some CPU: not for figures.
  const profileDir = process.env.BENCH_CPU_PROFILE;
  const server = await startServerProcess(
    { GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: token, GYRE_EXECUTOR: 'auto', GYRE_LOG_LEVEL: 'info', DATABASE_URL: db?.url ?? '' },
    { firstStart: true, ...(profileDir ? { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {}) },
  );
  const stopServer = async () => {
    if (server.child.exitCode !== null || server.child.signalCode !== null) return;
    server.child.kill('SIGTERM');
    await new Promise((r) => {
      const timer = setTimeout(() => (server.child.kill('SIGKILL'), r(undefined)), 15_000);
      server.child.once('exit', () => (clearTimeout(timer), r(undefined)));
    });
  };
  return {
    url: server.url,
    token,
    child: server.child,
    dataDir,
    ...(db ? { databaseUrl: db.url } : {}),
    api: (method, path, body) => apiCall(server.url, token, method, path, body),
    stopServer,
    async stop() {
      await stopServer();
      await db?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
