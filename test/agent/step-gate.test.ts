import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import { createStepHandlers } from '../../runtime/agent/steps';
import { detectIsolation, type Isolation } from '../../runtime/agent/sandbox/isolation';
import { SIGNALLER_MARK } from '../../runtime/agent/sandbox/keepers';
import type { JobSpec } from '../../runtime/config/plan';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { createLogger } from '../../runtime/logger';

/**
 * A `run` step's command is started while its start is being recorded and held before its first
 * line until the record is in: what a user would notice if that were wrong is a command that ran
 * before (or without) its step being recorded under the task's lease, or one that ran although the
 * lease was lost at that moment (a second agent would run it too).
 */
const root = process.getuid?.() === 0;

/** Processes of `uid` that are not zombies, but for the uid's signaller (Gyre's, kept by its keeper: runtime/agent/sandbox/keepers.ts). */
function processesOf(uid: number): string[] {
  return readdirSync('/proc').filter((pid) => {
    if (!/^\d+$/.test(pid)) return false;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`-e\0${SIGNALLER_MARK}`)) return false;
      return lstatSync(`/proc/${pid}`).uid === uid && !/\nState:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  });
}

(root ? describe : describe.skip)("a run step held until its start is recorded (build uids, as root)", () => {
  let workRoot: string;
  let drop: string;
  let isolation: Isolation;
  beforeAll(() => {
    workRoot = mkdtempSync(join(tmpdir(), 'gyre-gate-work-'));
    chmodSync(workRoot, 0o711);
    drop = mkdtempSync(join(tmpdir(), 'gyre-gate-drop-'));
    chmodSync(drop, 0o1777);
    isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: 912210, last: 912213 } });
  });
  afterAll(async () => {
    await isolation?.close();
    rmSync(workRoot, { recursive: true, force: true });
    rmSync(drop, { recursive: true, force: true });
  });

  const taskOf = (id: string, command: string): TaskContext => {
    const spec: JobSpec = { executor: { kind: 'shell' }, steps: [{ type: 'run', name: 'stamp', command, when: 'on_success' }], environment: {}, workingDirectory: '~/project', parallelism: 1 };
    return { taskId: id, nodeIndex: 0, parallelism: 1, jobId: `j-${id}`, jobName: 'gate', jobNumber: 1, spec, workflowId: 'w', workflowName: 'w', pipelineId: 'p', pipelineNumber: 1, projectSlug: 'gh/o/r', projectOrg: 'o', projectName: 'r', repoUrl: '/nowhere', revision: 'abc' };
  };

  /**
   * Waits until the build uid of `taskDir` runs something, noting how many processes, or 5 s (on a
   * loaded machine 300 ms was not always enough to start a shell).
   */
  const untilRunning = async (taskDir: string, seen: { running: number }) => {
    for (const until = Date.now() + 5000; Date.now() < until; ) {
      await new Promise((r) => setTimeout(r, 20));
      // A box handed out early (as the server's runner has it) makes its directories meanwhile.
      const uid = statSync(taskDir, { throwIfNoEntry: false })?.uid;
      if (uid === undefined) continue;
      seen.running = processesOf(uid).length;
      if (seen.running > 0) return;
    }
  };

  /** A reporter whose step start lasts until the build uid runs something (up to 5 s), 100 ms more, then `settle`s; what the uid ran is noted. */
  const reporterFor = (taskDir: string, settle: () => void, seen: { running: number }): TaskReporter => ({
    heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
    stepStarted: async () => {
      // The step's shell comes, as the build's uid, and waits while this record is still held.
      await untilRunning(taskDir, seen);
      await new Promise((r) => setTimeout(r, 100));
      settle();
    },
    output: async () => undefined,
    stepFinished: async () => undefined,
    complete: async () => undefined,
  });

  it('starts the command only once the start is recorded, its shell already running meanwhile', async () => {
    const taskDir = join(workRoot, 'task-a');
    const executor = await createShellExecutor({ taskDir, isolation });
    let recordedAt = 0;
    const seen = { running: 0 };
    const stamp = join(drop, 'a');
    const result = await runTask({ task: taskOf('t-a', `date +%s%3N > ${stamp}`), reporter: reporterFor(taskDir, () => (recordedAt = Date.now()), seen), executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
    expect(result).toEqual({ outcome: 'success' });
    expect(seen.running).toBeGreaterThan(0);
    expect(Number(readFileSync(stamp, 'utf8'))).toBeGreaterThanOrEqual(recordedAt);
  });

  it('runs nothing of the command when the lease is lost as its start is recorded, and leaves nothing running', async () => {
    const taskDir = join(workRoot, 'task-b');
    const executor = await createShellExecutor({ taskDir, isolation });
    const seen = { running: 0 };
    const stamp = join(drop, 'b');
    let uid = -1;
    const reporter = reporterFor(taskDir, () => undefined, seen);
    const lost: TaskReporter = {
      ...reporter,
      stepStarted: async (step) => {
        await reporter.stepStarted(step);
        uid = statSync(taskDir).uid;
        throw new StaleLeaseError('t-b', 'lease-b');
      },
    };
    const result = await runTask({ task: taskOf('t-b', `touch ${stamp}`), reporter: lost, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
    expect(result).toEqual({ lostLease: true });
    expect(seen.running).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(stamp)).toBe(false);
    expect(processesOf(uid)).toEqual([]);
  });

  /**
   * The first step's shell is started before the task's secrets are in, its environment given at
   * its gate. What a user would notice if that were wrong: a variable that arrives changed (quotes,
   * newlines, `$`), a secret the job's own `environment:` should have overridden, a shell variable
   * set the way a shell at its start would not, or a command that ran although the task was
   * refused its secrets.
   */
  describe('the first step started before its secrets are in', () => {
    const withEnvironment = (id: string, command: string, environment: Record<string, string>): TaskContext => {
      const task = taskOf(id, command);
      return { ...task, spec: { ...task.spec, environment } };
    };
    /** A reporter whose secrets come once the build's uid runs something (up to 5 s) and `answer` says. */
    const secretsOnceStarted = (taskDir: string, seen: { running: number }, answer: Awaited<ReturnType<NonNullable<TaskReporter['secrets']>>>): TaskReporter => ({
      ...reporterFor(taskDir, () => undefined, { running: 0 }),
      stepStarted: async () => undefined,
      secrets: async () => {
        await untilRunning(taskDir, seen);
        return answer;
      },
    });

    it("gets every variable byte for byte, the job's own over the secrets, its shell already running while they were read", async () => {
      const taskDir = join(workRoot, 'task-c');
      const executor = await createShellExecutor({ taskDir, isolation });
      const seen = { running: 0 };
      const odd = `it's "quoted" $HOME \`uname\` \\n\nsecond line\n'' end`;
      const out = join(drop, 'c');
      const reporter = secretsOnceStarted(taskDir, seen, { env: { SECRET_ODD: odd, SHARED: 'from the secret', SECRET_EMPTY: '' } });
      const command = `printf '%s|%s|%s|%s|%s' "$SECRET_ODD" "$SHARED" "\${SECRET_EMPTY-unset}" "$TMPDIR" "$(env | grep -c '^SECRET_')" > ${out}`;
      const result = await runTask({ task: withEnvironment('t-c', command, { SHARED: 'from the job' }), reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
      expect(result).toEqual({ outcome: 'success' });
      expect(seen.running).toBeGreaterThan(0);
      expect(readFileSync(out, 'utf8')).toBe(`${odd}|from the job||${taskDir}.tmp|2`);
    });

    // `gyre server`'s runner gives the agent handlers of its own for the file steps (they write
    // under the lease), and an executor handed out while its directories are made: its first
    // `run` step is started early all the same.
    it("is started early with the server runner's handlers and executor too (its own file steps, the built-in run step, its directories made meanwhile)", async () => {
      const taskDir = join(workRoot, 'task-f');
      const executor = await createShellExecutor({ taskDir, isolation, early: true });
      const seen = { running: 0 };
      const out = join(drop, 'f');
      const reporter = secretsOnceStarted(taskDir, seen, { env: { SECRET_F: 'from the secret' } });
      const handlers = createStepHandlers({ store_artifacts: async () => ({ status: 'success', exitCode: 0 }) });
      const result = await runTask({ task: taskOf('t-f', `printf '%s' "$SECRET_F" > ${out}`), reporter, executor, handlers, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
      expect(result).toEqual({ outcome: 'success' });
      expect(seen.running).toBeGreaterThan(0);
      expect(readFileSync(out, 'utf8')).toBe('from the secret');
    });

    it('is started again with its environment when a variable is one a shell sets at its start (SHLVL counts up as before)', async () => {
      const taskDir = join(workRoot, 'task-d');
      const executor = await createShellExecutor({ taskDir, isolation });
      const out = join(drop, 'd');
      const reporter = secretsOnceStarted(taskDir, { running: 0 }, { env: {} });
      const result = await runTask({ task: withEnvironment('t-d', `printf '%s' "$SHLVL" > ${out}`, { SHLVL: '5' }), reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
      expect(result).toEqual({ outcome: 'success' });
      expect(readFileSync(out, 'utf8')).toBe('6');
    });

    it('runs nothing of the command when the task is refused its secrets, and leaves nothing running', async () => {
      const taskDir = join(workRoot, 'task-e');
      const executor = await createShellExecutor({ taskDir, isolation });
      const seen = { running: 0 };
      const stamp = join(drop, 'e');
      const reporter = secretsOnceStarted(taskDir, seen, { refused: 'the context is restricted' });
      const uid = statSync(taskDir).uid;
      const result = await runTask({ task: taskOf('t-e', `touch ${stamp}`), reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
      expect(result).toEqual({ outcome: 'failed' });
      expect(seen.running).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 200));
      expect(existsSync(stamp)).toBe(false);
      expect(processesOf(uid)).toEqual([]);
    });
  });
});
