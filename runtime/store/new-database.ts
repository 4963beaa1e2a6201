import { spawn } from 'node:child_process';
import { migrate } from './migrate';
import { createPgliteStore } from './pglite-store';

/**
 * A new embedded database is made (PGlite's initdb) and migrated in a child process, and the
 * server then opens it as it opens one on a restart.
 *
 * Why: the process that makes a cluster keeps about 500 MiB it never uses again. PGlite's initdb
 * runs a second PGlite beside the first and copies the cluster over as a tar; that WebAssembly
 * memory and those buffers are garbage, but nothing in an idle server triggers the full collection
 * that frees them (a first start idled at 730 MiB, a restart at 250), and even after one the C heap
 * keeps 80–130 MiB it does not give back. The migrations then compile PostgreSQL code paths (DDL)
 * a running server never calls again: another 50 MiB of WebAssembly code. A process that ends
 * gives back all of it; a worker thread did not (the process still held 280 MiB after it ended).
 * docs/speed.md has the measurements.
 *
 * The child runs this file through the same TypeScript loader as `gyre` (tsx), with an empty
 * environment: it needs nothing of the server's, and the server's secrets stay out of it.
 */
export function prepareNewDatabase(dataDir: string, options: { migrate: boolean }): Promise<void> {
  const script = `require(${JSON.stringify(require.resolve('tsx/cjs'))});
require(${JSON.stringify(__filename)}).newDatabaseMain(process.argv.slice(1));`;
  const env: Record<string, string> = process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {};
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, dataDir, options.migrate ? 'migrate' : 'initdb'], { env, cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8192)));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) return resolve();
      const why = stderr.trim().split('\n').slice(-5).join('\n') || `exited with ${signal ?? code}`;
      reject(new Error(`could not make the embedded database in ${dataDir}: ${why}`));
    });
  });
}

/** The child's side: `<dataDir> initdb|migrate`. Exits 1 with the reason on stderr. */
export async function newDatabaseMain([dataDir, what]: string[]): Promise<void> {
  try {
    const store = await createPgliteStore(dataDir);
    try {
      if (what === 'migrate') await migrate(store);
    } finally {
      await store.close();
    }
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    process.exitCode = 1;
  }
}

/**
 * PGlite's file system reports a failed call as a bare `{ name: 'ErrnoError', errno }` with
 * Emscripten's numbering, not Linux's: the few a data directory meets, by name.
 */
const EMSCRIPTEN_ERRNO: Record<number, string> = { 2: 'EACCES', 19: 'EDQUOT', 20: 'EEXIST', 29: 'EIO', 44: 'ENOENT', 51: 'ENOSPC', 54: 'ENOTDIR', 63: 'EPERM', 69: 'EROFS' };

function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  const errno = (error as { errno?: unknown } | null)?.errno;
  if (typeof errno === 'number') return `the file system refused (${EMSCRIPTEN_ERRNO[errno] ?? `errno ${errno}`})`;
  return String(error);
}
