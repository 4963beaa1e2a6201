import { rmSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { makeProcessTempDir } from './process-temp-dir';

/** The file helper started through the TypeScript loader, when no bundle could be made. */
export const HELPER_THROUGH_LOADER = resolve(__dirname, '../../../bin/gyre-tree-helper.js');

let bundle: Promise<string | undefined> | undefined;

/**
 * The file helper (tree-helper.ts) as one plain JavaScript file, made once per process with
 * esbuild. A helper process starts for every file step and before a task's first step (to install
 * the job's tools); through the TypeScript loader, which must not use a cache a build could
 * write to, each start compiled its sources again: 250–300 ms a task on a 2-core machine, most of
 * the time from trigger to first command. The bundle starts in about 40 ms.
 *
 * It lives in a directory of its own made by mkdtemp (0700, this process's user): root's helper
 * loads it before giving up root for the build's uid, and a bubblewrap sandbox gets only that
 * directory, read-only, instead of Gyre's code and node_modules. Removed when the process exits, or
 * by the next process to make one when it was killed first.
 * When it cannot be made (a read-only temporary directory, no esbuild binary for this platform),
 * the answer is undefined and the helper starts through the loader as before.
 */
export function helperBundle(): Promise<string | undefined> {
  bundle ??= makeBundle().catch(() => undefined);
  return bundle;
}

const PREFIX = 'gyre-file-helper-';
/** Directories this process made, removed when it exits (one listener, however many bundles). */
const made = new Set<string>();
let listening = false;

async function makeBundle(): Promise<string> {
  // The pid in the name: a process killed before it could clean up is swept by the next one.
  const dir = makeProcessTempDir(PREFIX);
  made.add(dir);
  if (!listening) {
    listening = true;
    process.once('exit', () => made.forEach((d) => rmSync(d, { recursive: true, force: true })));
  }
  const outfile = join(dir, 'tree-helper.js');
  const esbuild = await import('esbuild');
  try {
    await esbuild.build({
      entryPoints: [join(__dirname, 'tree-helper-main.ts')],
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: `node${process.versions.node.split('.')[0]}`,
      outfile,
      logLevel: 'silent',
    });
  } finally {
    // esbuild's service process is not needed again.
    await esbuild.stop();
  }
  await chmod(outfile, 0o400);
  return outfile;
}
