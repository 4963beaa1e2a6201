import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { uidKeepers } from '../support/keeper-processes';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import type { Executor } from '../../runtime/agent/executor';
import { detectIsolation, type BuildBox, type Isolation } from '../../runtime/agent/sandbox/isolation';
import type { JobSpec } from '../../runtime/config/plan';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { jobFiles, jobFilesTar } from '../../runtime/agent/job-tools/job-dir';
import { createShellExecutor } from '../../runtime/agent/shell-executor';

/**
 * The job directory (the in-job `circleci` command, test timings) is written by the agent itself
 * before anything of the build has run, and handed to the build's uid: no helper process per task.
 * What a user would notice if that were wrong: a job that cannot run `circleci` or leave the halt
 * marker, or (the attack) a build that gets the agent to write as root through a link it planted.
 */
const root = process.getuid?.() === 0;

/** Kills the uid keeper of `uid` (`node -e <keeper> <uid>` under flock) and waits until it is gone. */
function killKeeperOf(uid: number): void {
  const keepers = uidKeepers(uid).map((k) => k.pid);
  expect(keepers).toHaveLength(1);
  process.kill(Number(keepers[0]), 'SIGKILL');
  spawnSync('sh', ['-c', `while [ -e /proc/${keepers[0]}/cmdline ] && ! grep -q '^State:.*Z' /proc/${keepers[0]}/status; do sleep 0.01; done`]);
}
(root ? describe : describe.skip)('the job directory written before the build runs (build uids, as root)', () => {
  let workRoot: string;
  let isolation: Isolation;
  beforeAll(() => {
    workRoot = mkdtempSync(join(tmpdir(), 'gyre-seed-work-'));
    chmodSync(workRoot, 0o711);
    isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: 912200, last: 912203 } });
  });
  afterAll(async () => {
    await isolation?.close();
    rmSync(workRoot, { recursive: true, force: true });
  });

  const run = async (box: BuildBox, script: string) => {
    const child = box.runScript(box.home, ['/bin/sh'], script, { PATH: '/usr/bin:/bin', HOME: box.home });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    return { code, out };
  };

  it('belongs to the build: it runs circleci from it and leaves the halt marker in it', async () => {
    const taskDir = join(workRoot, 'task-a');
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      await executor.jobDir!.install(jobFiles([{ file: 'a.test.js', classname: 'a', name: 'adds', seconds: 1.5 }]));
      const dir = join(taskDir, '.gyre-job');
      const uid = statSync(taskDir).uid;
      expect(uid).toBeGreaterThanOrEqual(912200);
      for (const path of [dir, join(dir, 'bin'), join(dir, 'bin', 'circleci'), join(dir, 'timings')]) expect(lstatSync(path).uid).toBe(uid);
      expect(statSync(join(dir, 'bin', 'circleci')).mode & 0o777).toBe(0o755);
      expect(statSync(join(dir, 'timings')).mode & 0o777).toBe(0o644);
      const made = executor.start(
        { script: 'id -u; printf "a.test.js\\nb.test.js\\n" | ~/.gyre-job/bin/circleci tests split --split-by=name --total=2 --index=0; touch ~/.gyre-job/halt && echo halted', shell: '/bin/sh -e', env: { PATH: '/usr/bin:/bin', HOME: taskDir }, cwd: '~' },
        () => undefined,
        new AbortController().signal,
      );
      const result = await made.done;
      expect(result.exitCode).toBe(0);
      expect(await executor.jobDir!.has('halt')).toBe(true);
    } finally {
      await executor.cleanup();
    }
  });

  it('once the build has run, the agent no longer writes there itself: a planted link leads nowhere', async () => {
    const taskDir = join(workRoot, 'task-b');
    const rootOnly = mkdtempSync(join(tmpdir(), 'gyre-root-only-'));
    const box = await isolation.openBox(taskDir);
    try {
      // The build plants the job directory's name as a link to a directory only root may write.
      expect((await run(box, `ln -s ${rootOnly} .gyre-job`)).code).toBe(0);
      expect(await box.seed('.gyre-job', jobFiles([]))).toBe(false);
      // What the executor does then: writes as the build, which may not write there.
      await expect(box.extract(join(box.home, '.gyre-job'), jobFilesTar(jobFiles([])))).rejects.toThrow(/EACCES|permission denied/i);
      expect(readdirSync(rootOnly)).toEqual([]);
      // And a path that climbs out is refused outright.
      await expect(box.seed('../x', [])).resolves.toBe(false);
    } finally {
      await box.close();
      rmSync(rootOnly, { recursive: true, force: true });
    }
  });

  it('is not written over a directory that is already there', async () => {
    const taskDir = join(workRoot, 'task-c');
    const box = await isolation.openBox(taskDir);
    try {
      await expect(box.seed('../x', [])).rejects.toThrow(/not a plain relative path/);
      expect(await box.seed('.gyre-job', jobFiles([]))).toBe(true);
      expect(await box.seed('.gyre-job', jobFiles([]))).toBe(false);
    } finally {
      await box.close();
    }
  });

  // The agent sends the working directory and the job directory without waiting between them.
  it('makes seeds sent one after another without waiting, where a later one lies in an earlier one', async () => {
    const taskDir = join(workRoot, 'task-g');
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      // A working directory through the job directory's name: the job directory is then there,
      // made by the first seed, and the job directory's files are written as the build instead.
      const both = await Promise.all([executor.makeWorkingDirectory!('~/.gyre-job/src/app'), executor.jobDir!.install(jobFiles([])), executor.makeWorkingDirectory!('~/.gyre-job/src/other')]);
      expect(both).toHaveLength(3);
      const uid = statSync(taskDir).uid;
      for (const path of ['.gyre-job', '.gyre-job/src', '.gyre-job/src/app', '.gyre-job/src/other', '.gyre-job/bin/circleci']) expect(lstatSync(join(taskDir, path)).uid).toBe(uid);
      const made = executor.start({ script: 'cd ~/.gyre-job/src/other && ~/.gyre-job/bin/circleci tests glob "*.none" ; echo ran', shell: '/bin/sh', env: { PATH: '/usr/bin:/bin', HOME: taskDir }, cwd: '~/.gyre-job/src/app' }, () => undefined, new AbortController().signal);
      expect((await made.done).exitCode).toBe(0);
    } finally {
      await executor.cleanup();
    }
  });

  // The job's working directory is made the same way, before the first step: otherwise the step's
  // wrapper starts `mkdir` for it, a process on the way to every job's first command.
  it("makes the job's working directory before the first step, the build's own, as its own mkdir -p would", async () => {
    const taskDir = join(workRoot, 'task-d');
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      await executor.makeWorkingDirectory!('~/go/src/app');
      const uid = statSync(taskDir).uid;
      for (const dir of ['go', 'go/src', 'go/src/app']) {
        const info = lstatSync(join(taskDir, dir));
        expect([info.isDirectory(), info.uid, info.gid, info.mode & 0o777]).toEqual([true, uid, uid, 0o755]);
      }
      // A second one beside it, through a directory that is there; one outside the home is the step's to make.
      await executor.makeWorkingDirectory!('~/go/src/other/');
      expect(lstatSync(join(taskDir, 'go/src/other')).uid).toBe(uid);
      const outside = join(workRoot, 'outside-the-home');
      await executor.makeWorkingDirectory!(outside);
      expect(lstatSync(outside, { throwIfNoEntry: false })).toBeUndefined();
      // A working_directory from a branch's config that climbs out of the home is the step's too.
      for (const climbing of ['~/../climbed-out', '~/go/../../climbed-out', 'project/../../../climbed-out']) await executor.makeWorkingDirectory!(climbing);
      expect(lstatSync(join(workRoot, 'climbed-out'), { throwIfNoEntry: false })).toBeUndefined();
      expect(lstatSync(join(workRoot, '..', 'climbed-out'), { throwIfNoEntry: false })).toBeUndefined();
      // The build uses it as its own.
      const made = executor.start({ script: 'pwd; touch made-here && mkdir -p sub && echo ok', shell: '/bin/sh -e', env: { PATH: '/usr/bin:/bin', HOME: taskDir }, cwd: '~/go/src/app' }, () => undefined, new AbortController().signal);
      expect((await made.done).exitCode).toBe(0);
      expect(lstatSync(join(taskDir, 'go/src/app/made-here')).uid).toBe(uid);
    } finally {
      await executor.cleanup();
    }
  });

  it('once the build has run, leaves the working directory to the steps: a planted link leads nowhere', async () => {
    const taskDir = join(workRoot, 'task-e');
    const rootOnly = mkdtempSync(join(tmpdir(), 'gyre-root-only-'));
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      const planted = executor.start({ script: `ln -s ${rootOnly} project`, shell: '/bin/sh -e', env: { PATH: '/usr/bin:/bin', HOME: taskDir }, cwd: '~' }, () => undefined, new AbortController().signal);
      expect((await planted.done).exitCode).toBe(0);
      await executor.makeWorkingDirectory!('~/project/app');
      expect(readdirSync(rootOnly)).toEqual([]);
    } finally {
      await executor.cleanup();
      rmSync(rootOnly, { recursive: true, force: true });
    }
  });

  it('the agent makes it before the first step starts, so the step finds it there', async () => {
    const taskDir = join(workRoot, 'task-f');
    const shell = await createShellExecutor({ taskDir, isolation });
    const seen: string[] = [];
    // The shell executor as the agent sees it, noting what was there when each step was let run
    // (its process may be started before, held at its gate: ExecRequest.gate).
    const there = () => (lstatSync(join(taskDir, 'src/app'), { throwIfNoEntry: false })?.isDirectory() ? 'there' : 'missing');
    const executor: Executor = {
      ...shell,
      makeWorkingDirectory: shell.makeWorkingDirectory!.bind(shell),
      start(request, onOutput, signal) {
        if (request.gate) void request.gate.then(() => seen.push(`${request.cwd}: ${there()}`));
        else seen.push(`${request.cwd}: ${there()}`);
        return shell.start(request, onOutput, signal);
      },
    };
    const spec: JobSpec = { executor: { kind: 'shell' }, steps: [{ type: 'run', name: 'first', command: 'test "$(pwd)" = "$HOME/src/app"', when: 'on_success' }], environment: {}, workingDirectory: '~/src/app', parallelism: 1 };
    const task: TaskContext = { taskId: 't-wd', nodeIndex: 0, parallelism: 1, jobId: 'j-wd', jobName: 'first', jobNumber: 1, spec, workflowId: 'w', workflowName: 'w', pipelineId: 'p', pipelineNumber: 1, projectSlug: 'gh/o/r', projectOrg: 'o', projectName: 'r', repoUrl: '/nowhere', revision: 'abc' };
    const reporter: TaskReporter = {
      heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
      stepStarted: async () => undefined,
      output: async () => undefined,
      stepFinished: async () => undefined,
      complete: async () => undefined,
    };
    expect(await runTask({ task, reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 })).toEqual({ outcome: 'success' });
    expect(seen).toEqual(['~/src/app: there']);
  });

  // The uid's keeper removes them after its sweep; when it is gone (killed: here by the test) the
  // agent removes them itself. Either way nothing of the task is left, and a link the build left
  // is not followed.
  it.each([
    ['a few files', 5, 'keeper'],
    ['a checkout of 3,000 files', 3000, 'keeper'],
    ['a few files, the keeper killed', 5, 'agent'],
  ])("removes the task's directories when it ends: %s, and a link to outside left as a link", async (_label, files, remover) => {
    const taskDir = join(workRoot, `task-end-${files}-${remover}`);
    const outside = mkdtempSync(join(tmpdir(), 'gyre-outside-'));
    writeFileSync(join(outside, 'keep'), 'kept');
    chmodSync(outside, 0o755);
    const box = await isolation.openBox(taskDir);
    try {
      const made = await run(box, `mkdir -p project/a/b && cd project && for i in $(seq 1 ${files}); do : > a/b/f$i; done && ln -s ${outside} link && ln -s ${outside} ${taskDir}.tmp/link && echo made`);
      expect(made).toEqual({ code: 0, out: 'made\n' });
      if (remover === 'agent') killKeeperOf(statSync(taskDir).uid);
    } finally {
      await box.close();
    }
    for (const dir of [taskDir, `${taskDir}.tmp`, `${taskDir}.ctl`]) expect(lstatSync(dir, { throwIfNoEntry: false })).toBeUndefined();
    expect(readdirSync(outside)).toEqual(['keep']);
    rmSync(outside, { recursive: true, force: true });
  });
});
