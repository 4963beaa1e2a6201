import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// A directory named for its process (the step launcher's, the file helper's bundle): a process
// that starts removes those of this user's processes that are gone. The shared temporary
// directory is writable by every build uid, so a build may plant entries under the same names for
// a server running as root to remove: only real directories this user owns go, never what a link
// points at nor another user's directory. Each case starts a process of its own with a temporary
// directory of the test's (TMPDIR), as a server or an agent starting would.

/** What a process starting with `tmp` as its temporary directory makes: the path of its directory. */
function startIn(tmp: string): { made: string; pid: number } {
  const script = `const { makeProcessTempDir } = require(${JSON.stringify(join(__dirname, '../../runtime/agent/sandbox/process-temp-dir'))});
console.log(process.pid, makeProcessTempDir('gyre-test-'));`;
  const out = execFileSync(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script], { encoding: 'utf8', env: { ...process.env, TMPDIR: tmp } });
  const [pid, made] = out.trim().split(' ');
  return { made: made!, pid: Number(pid) };
}

describe('a directory named for its process', () => {
  let tmp: string;
  beforeEach(() => (tmp = mkdtempSync(join(tmpdir(), 'gyre-process-dir-test-'))));
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));
  const gonePid = () => spawnSync('true').pid!;

  it("is private to this user and named for this process, and removes this user's leftovers of gone processes only", () => {
    const gone = join(tmp, `gyre-test-${gonePid()}-Left01`);
    const running = join(tmp, `gyre-test-${process.ppid}-Run001`);
    const otherPrefix = join(tmp, `gyre-other-${gonePid()}-Keep01`);
    for (const dir of [gone, running, otherPrefix]) {
      mkdirSync(dir);
      writeFileSync(join(dir, 'output.sock'), '');
    }
    const { made, pid } = startIn(tmp);
    expect(made.startsWith(join(tmp, `gyre-test-${pid}-`))).toBe(true);
    expect(lstatSync(made).mode & 0o777).toBe(0o700);
    expect(existsSync(gone)).toBe(false);
    expect(existsSync(running)).toBe(true);
    expect(existsSync(otherPrefix)).toBe(true);
  });

  it('leaves a link planted under its name in place, and what the link points at untouched', () => {
    const precious = mkdtempSync(join(tmpdir(), 'gyre-precious-'));
    writeFileSync(join(precious, 'keep'), 'data');
    const link = join(tmp, `gyre-test-${gonePid()}-Link01`);
    symlinkSync(precious, link);
    try {
      startIn(tmp);
      expect(readFileSync(join(precious, 'keep'), 'utf8')).toBe('data');
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
    } finally {
      rmSync(precious, { recursive: true, force: true });
    }
  });

  const asRoot = process.getuid?.() === 0 ? it : it.skip;
  asRoot("does not remove another user's directory under its name (a build uid's, as root)", () => {
    const planted = join(tmp, `gyre-test-${gonePid()}-Build1`);
    mkdirSync(planted);
    writeFileSync(join(planted, 'theirs'), 'data');
    chownSync(planted, 65534, 65534);
    startIn(tmp);
    expect(readdirSync(planted)).toEqual(['theirs']);
  });
});
