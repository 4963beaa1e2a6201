import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import { detectIsolation, type BuildBox, type Isolation } from '../../runtime/agent/sandbox/isolation';
import type { StepProcess } from '../../runtime/agent/sandbox/step-launcher';
import { createStepHandlers } from '../../runtime/agent/steps';
import type { JobSpec } from '../../runtime/config/plan';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { SIGNALLER_MARK } from '../../runtime/agent/sandbox/keepers';

/**
 * A task's box handed out while its directories are being made (`openBox(…, { early: true })`,
 * what the agent's runner uses): the first step's shell starts beside them, its script and
 * environment in a directory of its uid's that exists before them. What a user would notice if
 * that were wrong: a command that ran before its working directory was there (or somewhere
 * else), another build reading the task's secrets from that directory, or a task's secrets left
 * there for the uid's next task.
 */
const root = process.getuid?.() === 0;
const UIDS = { first: 912220, last: 912223 };
const HELD_ROOT = '/run/gyre-build-uids-held';

/** Processes of the test's build uids that are not zombies, but for the uids' signallers. */
function processesOfUids(): string[] {
  return readdirSync('/proc').filter((pid) => {
    if (!/^\d+$/.test(pid)) return false;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`-e\0${SIGNALLER_MARK}`)) return false;
      const uid = lstatSync(`/proc/${pid}`).uid;
      return uid >= UIDS.first && uid <= UIDS.last && !/\nState:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  });
}

function run(child: StepProcess): Promise<{ output: string; code: number | null }> {
  const chunks: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  child.stderr.on('data', (c: Buffer) => chunks.push(c));
  child.on('error', () => undefined);
  return new Promise((resolve) => child.on('close', (code: number | null) => resolve({ output: Buffer.concat(chunks).toString(), code })));
}

(root && existsSync('/run') ? describe : describe.skip)('a box handed out before its directories are made (build uids, as root)', () => {
  let workRoot: string;
  let isolation: Isolation;
  beforeAll(async () => {
    workRoot = mkdtempSync(join(tmpdir(), 'gyre-early-work-'));
    chmodSync(workRoot, 0o711);
    // What a task of these uids left in their directories when its process was killed: secrets.
    for (let uid = UIDS.first; uid <= UIDS.last; uid++) {
      mkdirSync(join(HELD_ROOT, String(uid)), { recursive: true });
      writeFileSync(join(HELD_ROOT, String(uid), 'env-1-left.sh'), "export SECRET='from a task before'\n");
    }
    isolation = detectIsolation({ mode: 'sandbox', buildUids: UIDS });
    // As a runner does at its start: a uid and its keeper wait for the first task.
    await isolation.warm(1);
  });
  afterAll(async () => {
    await isolation?.close();
    rmSync(workRoot, { recursive: true, force: true });
  });

  it("runs the first step held from before its directories were made in its working directory, entered from the home, with its environment, and leaves no file of it behind", async () => {
    const taskDir = join(workRoot, 'task-a');
    const box: BuildBox = await isolation.openBox(taskDir, { early: true });
    const script = 'printf "%s|%s|%s|%s|%s\\n" "$(pwd)" "$OLDPWD" "$SECRET_A" "$(id -u)" "$0"; ls -ld "$(dirname "$0")" | cut -c1-10';
    try {
      const held = box.runScriptBeforeEnvironment(join(taskDir, 'project'), ['/bin/bash', '-eo', 'pipefail'], script);
      const ran = run(held.process);
      // Let go at once: the shell waits for the directories all the same.
      expect(held.open({ SECRET_A: 'it is me', PATH: '/usr/bin:/bin', HOME: taskDir })).toBe(true);
      const { output, code } = await ran;
      expect(code).toBe(0);
      const [line, mode] = output.trim().split('\n');
      const [pwd, oldpwd, secret, uid, scriptPath] = line!.split('|');
      expect(pwd).toBe(join(taskDir, 'project'));
      expect(oldpwd).toBe(taskDir);
      expect(secret).toBe('it is me');
      expect(Number(uid)).toBe(statSync(taskDir).uid);
      // Its script in its uid's directory, root's, the uid may only read: no other build uid may enter.
      expect(dirname(scriptPath!)).toBe(join(HELD_ROOT, uid!));
      expect(mode).toBe('drwxr-x---');
      const dir = lstatSync(join(HELD_ROOT, uid!));
      expect([dir.uid, dir.gid]).toEqual([0, Number(uid)]);
      // The uid's leftovers of a task before it were gone before this task got the uid.
      expect(readdirSync(join(HELD_ROOT, uid!))).not.toContain('env-1-left.sh');
      await box.ready;
    } finally {
      const uid = statSync(taskDir).uid;
      await box.close();
      expect(readdirSync(join(HELD_ROOT, String(uid)))).toEqual([]);
    }
  });

  it('holds a step let go at once until its directories are made, however long that takes', async () => {
    // What a task of the same name left in its temporary directory: removed before its directories are made.
    const taskDir = join(workRoot, 'task-d');
    for (let d = 0; d < 40; d++) {
      mkdirSync(join(`${taskDir}.tmp`, String(d)), { recursive: true });
      for (let f = 0; f < 150; f++) writeFileSync(join(`${taskDir}.tmp`, String(d), String(f)), '');
    }
    const box = await isolation.openBox(taskDir, { early: true });
    try {
      const held = box.runScriptBeforeEnvironment(taskDir, ['/bin/sh'], 'pwd');
      const ran = run(held.process);
      expect(held.open({ PATH: '/usr/bin:/bin' })).toBe(true);
      const { output, code } = await ran;
      expect({ output, code }).toEqual({ output: `${taskDir}\n`, code: 0 });
      expect(existsSync(join(`${taskDir}.tmp`, '0'))).toBe(false);
    } finally {
      await box.close();
    }
  });

  it('starts nothing unheld before its directories are made', async () => {
    const taskDir = join(workRoot, 'task-b');
    const box = await isolation.openBox(taskDir, { early: true });
    try {
      expect(() => box.runScript(taskDir, ['/bin/sh'], 'true', { PATH: '/usr/bin:/bin' })).toThrow(/not made yet/);
      await box.ready;
      const { code } = await run(box.runScript(taskDir, ['/bin/sh'], 'true', { PATH: '/usr/bin:/bin' }));
      expect(code).toBe(0);
    } finally {
      await box.close();
    }
  });

  it('fails the job with the reason when its directories cannot be made, having run nothing of the first step, and leaves nothing running', async () => {
    // A task directory whose parent is not there: the keeper cannot make it.
    const taskDir = join(workRoot, 'gone', 'task-c');
    const stamp = join(mkdtempSync(join(tmpdir(), 'gyre-early-drop-')), 'ran');
    chmodSync(dirname(stamp), 0o1777);
    const executor = await createShellExecutor({ taskDir, isolation, early: true });
    const reporter: TaskReporter = {
      heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
      secrets: async () => ({ env: {} }),
      stepStarted: async () => undefined,
      output: async () => undefined,
      stepFinished: async () => undefined,
      complete: async () => undefined,
    };
    const spec: JobSpec = { executor: { kind: 'shell' }, steps: [{ type: 'run', name: 'stamp', command: `touch ${stamp}`, when: 'on_success' }], environment: {}, workingDirectory: '~/project', parallelism: 1 };
    const task: TaskContext = { taskId: 't-c', nodeIndex: 0, parallelism: 1, jobId: 'j', jobName: 'early', jobNumber: 1, spec, workflowId: 'w', workflowName: 'w', pipelineId: 'p', pipelineNumber: 1, projectSlug: 'gh/o/r', projectOrg: 'o', projectName: 'r', repoUrl: '/nowhere', revision: 'abc' };
    try {
      const result = await runTask({ task, reporter, executor, handlers: createStepHandlers(), log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
      expect(result).toEqual({ outcome: 'failed' });
      await new Promise((r) => setTimeout(r, 200));
      expect(existsSync(stamp)).toBe(false);
      expect(processesOfUids()).toEqual([]);
    } finally {
      rmSync(dirname(stamp), { recursive: true, force: true });
    }
  });
});
