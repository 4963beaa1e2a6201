import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { createStepLauncher, type StepLauncher, type StepProcess } from '../../runtime/agent/sandbox/step-launcher';

// The step launcher (runtime/agent/sandbox/step-launcher.ts): a small resident process starts
// steps for the agent. Its steps must behave as the ChildProcess they replace: every byte of
// output, in order, before `close`; the exit code; errors for what cannot start; nothing left
// hanging when the launcher dies; and nobody else can feed a step's output.

interface Ran {
  output: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
  pid?: number;
}

function run(step: StepProcess): Promise<Ran> {
  const chunks: Buffer[] = [];
  step.stdout.on('data', (c: Buffer) => chunks.push(c));
  step.stderr.on('data', (c: Buffer) => chunks.push(c));
  let error: Error | undefined;
  step.on('error', (e: Error) => (error = e));
  return new Promise((resolve) => step.on('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ output: Buffer.concat(chunks).toString(), code, signal, error, pid: step.pid })));
}

const env = { PATH: '/usr/bin:/bin' };

describe('the step launcher', () => {
  let launcher: StepLauncher;
  beforeEach(() => (launcher = createStepLauncher()));
  afterEach(() => launcher.close());

  it('gives a step its stdout and stderr in the order written, its exit code, and closes only after the last byte', async () => {
    const script = 'echo one; echo two >&2; head -c 1048576 /dev/zero | tr "\\0" x; echo; echo three >&2; exit 3';
    const ran = await run(launcher.launch('/bin/sh', ['-c', `exec 2>&1; ${script}`], { cwd: '/tmp', env }));
    expect(ran.code).toBe(3);
    expect(ran.pid).toEqual(expect.any(Number));
    expect(ran.output.startsWith('one\ntwo\n')).toBe(true);
    expect(ran.output.endsWith('x\nthree\n')).toBe(true);
    expect(ran.output.length).toBe('one\ntwo\n'.length + 1048576 + '\nthree\n'.length);
  });

  it('loses no output of steps that end before their output connection is taken, fifty at once', async () => {
    const runs = await Promise.all(Array.from({ length: 50 }, (_, i) => run(launcher.launch('/bin/echo', [`step ${i}`], { env }))));
    expect(runs.map((r) => r.output)).toEqual(Array.from({ length: 50 }, (_, i) => `step ${i}\n`));
    expect(runs.every((r) => r.code === 0)).toBe(true);
  });

  it('runs a step in its working directory, with only the environment it was given, in a process group of its own, stdin closed', async () => {
    const ran = await run(launcher.launch('/bin/sh', ['-c', 'pwd; echo "[$SECRET_OF_SERVER][$GIVEN]"; ps -o pgid= -p $$; ps -o pid= -p $$; cat; echo read-done'], { cwd: '/usr', env: { ...env, GIVEN: 'yes' } }));
    const [pwd, vars, pgid, pid] = ran.output.split('\n');
    expect(pwd).toBe('/usr');
    expect(vars).toBe('[][yes]');
    expect(pgid.trim()).toBe(pid.trim());
    expect(ran.output).toContain('read-done');
  });

  (process.getuid?.() === 0 ? it : it.skip)('runs a step as the uid and gid it was given (root only)', async () => {
    const ran = await run(launcher.launch('/bin/sh', ['-c', 'id -u; id -g; id -G'], { env, uid: 65534, gid: 65534 }));
    expect(ran.output.trim().split('\n')).toEqual(['65534', '65534', '65534']);
  });

  it('reports a command that cannot start as an error and closes, without hanging', async () => {
    const ran = await run(launcher.launch('/no/such/command', [], { env }));
    expect(ran.error?.message).toMatch(/ENOENT/);
    expect(ran.pid).toBeUndefined();
    expect(ran.code).not.toBe(0);
  });

  it('ends the running steps as killed when the launcher dies, and starts a new launcher for the next step', async () => {
    const sleeping = launcher.launch('/bin/sh', ['-c', 'echo started; sleep 30'], { env });
    const ran = run(sleeping);
    await new Promise<void>((resolve) => sleeping.stdout.once('data', () => resolve()));
    const launcherPid = Number(execFileSync('ps', ['-o', 'ppid=', '-p', String(sleeping.pid)], { encoding: 'utf8' }).trim());
    process.kill(launcherPid, 'SIGKILL');
    const ended = await ran;
    expect(ended.output).toBe('started\n');
    expect(ended.code).toBeNull();
    expect(ended.signal).toBe('SIGKILL');
    try {
      process.kill(-sleeping.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
    const next = await run(launcher.launch('/bin/echo', ['again'], { env }));
    expect(next.output).toBe('again\n');
  });

  it("keeps its output socket in a directory only this user may enter, and a connection naming no step it started gets nothing and feeds nothing", async () => {
    // Alive long enough for its parent to be read on a loaded machine (0.5 s was not, once).
    const step = launcher.launch('/bin/sh', ['-c', 'sleep 3; echo real'], { env });
    const ran = run(step);
    await new Promise((resolve) => step.once('spawn', resolve));
    const launcherPid = Number(execFileSync('ps', ['-o', 'ppid=', '-p', String(step.pid)], { encoding: 'utf8' }).trim());
    const args = execFileSync('cat', [`/proc/${launcherPid}/cmdline`]).toString().split('\0');
    const socketPath = args[args.length - 2];
    expect(statSync(dirname(socketPath)).mode & 0o777).toBe(0o700);
    // A made-up id, a line too long to be an id, and an id-shaped guess: each connection is closed.
    for (const first of ['00000000-0000-4000-8000-000000000000\nforged output\n', 'x'.repeat(100_000), 'not-a-step\n']) {
      const socket = connect(socketPath);
      socket.on('error', () => undefined);
      socket.write(first);
      await new Promise((resolve) => socket.on('close', resolve));
    }
    const done = await ran;
    expect(done.output).toBe('real\n');
    expect(done.code).toBe(0);
  });

  // A process (a server, an agent) that ends while its launcher runs, the usual way to stop; one
  // killed first leaves its directory, which the next launcher to start removes (every keeper's
  // sweep lists the temporary directory entry by entry).
  it('leaves no directory behind when the process that started it exits, and removes those of processes killed before', () => {
    const script = join(mkdtempSync(join(tmpdir(), 'gyre-launcher-test-')), 'exits.ts');
    writeFileSync(
      script,
      `import { createStepLauncher } from ${JSON.stringify(join(__dirname, '../../runtime/agent/sandbox/step-launcher'))};
setTimeout(() => undefined, 20_000); // what a server's listening socket does: the process stays until it exits
const step = createStepLauncher().launch('/bin/sh', ['-c', 'echo ran'], { env: { PATH: '/usr/bin:/bin' } });
step.stdout.on('data', () => undefined);
step.on('close', (code: number) => {
  console.log(process.pid, code);
  process.exit(0);
});
`,
    );
    // The child's temporary directory is its own: other tests' launchers come and go meanwhile.
    const itsTmp = join(dirname(script), 'tmp');
    mkdirSync(itsTmp);
    const gone = spawnSync('true').pid!;
    const killedBefore = join(itsTmp, `gyre-launcher-${gone}-AbC123`);
    const stillRunning = join(itsTmp, `gyre-launcher-${process.pid}-AbC123`);
    for (const dir of [killedBefore, stillRunning]) {
      mkdirSync(dir);
      writeFileSync(join(dir, 'output.sock'), '');
    }
    try {
      const out = execFileSync(process.execPath, [join(__dirname, '../../bin/run-ts.js'), script], { encoding: 'utf8', env: { ...process.env, TMPDIR: itsTmp } });
      expect(out).toMatch(/^\d+ 0\n$/);
      expect(readdirSync(itsTmp).filter((n) => n.startsWith('gyre-launcher-'))).toEqual([`gyre-launcher-${process.pid}-AbC123`]);
    } finally {
      rmSync(dirname(script), { recursive: true, force: true });
    }
  });
});
