import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A new directory for a test's own files (a fixture repository, an operator's files, synth output):
 * in the test run's own directory (GYRE_TEST_RUN_DIR, made by test/global-setup.js and removed with
 * everything in it at the run's end), so a run leaves nothing behind in the machine's temporary
 * directory, which every build uid's sweep lists entry by entry (docs/speed.md); in the machine's
 * temporary directory outside a test run (a bench). As there, others may pass through the run's
 * directory but not list it, and the new directory is this user's alone until the test hands it on.
 */
export function testTempDir(prefix: string): string {
  return mkdtempSync(join(process.env.GYRE_TEST_RUN_DIR ?? tmpdir(), prefix));
}
