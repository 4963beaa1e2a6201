import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { detectIsolation } from '../../runtime/agent/sandbox/isolation';
import { testTempDir } from '../support/temp-dir';

/** The flags `lsattr -d` shows for a directory, or undefined where the filesystem has none. */
function flagsOf(dir: string): string | undefined {
  const r = spawnSync('lsattr', ['-d', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split(/\s+/)[0] : undefined;
}

const base = testTempDir('gyre-work-root-');
afterAll(() => rmSync(base, { recursive: true, force: true }));

// Whether the tests' directory is on a filesystem with ext4's flags (this machine's ext4 is).
const probe = join(base, 'probe');
mkdirSync(probe);
const extFlags = flagsOf(probe) !== undefined;
if (!extFlags) console.warn(`skipping the check of the work root's flag: ${base} is not on a filesystem whose directories have ext4's flags (lsattr)`);

describe("the work root's task directories are spread over the filesystem", () => {
  (extFlags ? it : it.skip)('marks the work root as the top of directory hierarchies, so that task directories do not all share its block group', async () => {
    const workRoot = join(base, 'work');
    await detectIsolation({ mode: 'shell' }).prepareWorkRoot(workRoot, 'GYRE_WORK_DIR');
    expect(statSync(workRoot).isDirectory()).toBe(true);
    expect(flagsOf(workRoot)).toContain('T');
    // Made again (a restart) on a root already marked: still fine.
    await detectIsolation({ mode: 'shell' }).prepareWorkRoot(workRoot, 'GYRE_WORK_DIR');
    expect(flagsOf(workRoot)).toContain('T');
  });

  (existsSync('/dev/shm') ? it : it.skip)('starts all the same where the flag cannot be set (tmpfs does not take it)', async () => {
    const shm = mkdtempSync('/dev/shm/gyre-work-root-');
    try {
      const workRoot = join(shm, 'work');
      await expect(detectIsolation({ mode: 'shell' }).prepareWorkRoot(workRoot, 'GYRE_WORK_DIR')).resolves.toBeUndefined();
      expect(statSync(workRoot).mode & 0o777).toBe(0o700);
      expect(flagsOf(workRoot) ?? '').not.toContain('T');
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });
});
