import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import { detectIsolation, parseUidRange } from '../../runtime/agent/sandbox/isolation';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import { readExecutorSettings } from '../../runtime/agent/task-executor';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { ConfigurationError } from '../../runtime/domain/errors';
import { createLogger } from '../../runtime/logger';
import { decompressChunk } from '../../runtime/output/log-chunk';

/** An ordinary user on a host where bubblewrap cannot be found: no isolation is possible. */
const NO_WAY = { uid: 1000, bubblewrap: '/nonexistent/bwrap' } as const;

describe('choosing how builds are isolated', () => {
  it('falls back to no isolation only under auto, and then says so for every job', () => {
    const isolation = detectIsolation({ mode: 'auto', ...NO_WAY });
    expect(isolation.kind).toBe('none');
    expect(isolation.summary).toMatch(/WITHOUT isolation.*GYRE_REQUIRE_ISOLATION=true/);
    expect(isolation.notice).toMatch(/^WARNING: this build runs without isolation/);
  });

  it('refuses to start without isolation when asked to, naming the setting and why', () => {
    expect(() => detectIsolation({ mode: 'auto', requireIsolation: true, ...NO_WAY })).toThrow(ConfigurationError);
    expect(() => detectIsolation({ mode: 'auto', requireIsolation: true, ...NO_WAY })).toThrow(/^GYRE_REQUIRE_ISOLATION: builds cannot be isolated: .*bubblewrap \(bwrap\) is not installed at \/nonexistent\/bwrap/);
    expect(() => detectIsolation({ mode: 'sandbox', ...NO_WAY })).toThrow(/^GYRE_EXECUTOR: 'sandbox' needs isolation/);
    expect(() => detectIsolation({ mode: 'shell', requireIsolation: true })).toThrow(/^GYRE_EXECUTOR: 'shell' runs builds without isolation, which GYRE_REQUIRE_ISOLATION=true refuses/);
    // `shell` on purpose is no isolation without the per-job warning.
    expect(detectIsolation({ mode: 'shell' }).notice).toBeUndefined();
  });

  it('reads the executor settings, with errors that name the setting and what is allowed', () => {
    expect(readExecutorSettings({})).toMatchObject({ choice: 'auto', buildUids: { first: 900000, last: 900255 }, requireIsolation: false });
    expect(readExecutorSettings({ GYRE_EXECUTOR: 'docker', GYRE_DOCKER_SOCKET: '/x.sock', GYRE_BUILD_UIDS: '5000-5009', GYRE_REQUIRE_ISOLATION: 'true' })).toMatchObject({
      choice: 'docker',
      dockerSocket: '/x.sock',
      buildUids: { first: 5000, last: 5009 },
      requireIsolation: true,
    });
    expect(() => readExecutorSettings({ GYRE_EXECUTOR: 'vm' })).toThrow("GYRE_EXECUTOR: 'vm' is not an executor (allowed: auto, sandbox, docker, shell)");
    expect(() => readExecutorSettings({ GYRE_REQUIRE_ISOLATION: 'maybe' })).toThrow("GYRE_REQUIRE_ISOLATION: 'maybe' is not a boolean");
    expect(readExecutorSettings({ GYRE_REMOTE_DOCKER: 'podman', GYRE_REMOTE_DOCKER_IMAGES: ' localhost/a:1, ,b ' })).toMatchObject({ remoteDocker: 'podman', remoteDockerImages: ['localhost/a:1', 'b'] });
    expect(() => readExecutorSettings({ GYRE_REMOTE_DOCKER: 'dockerd' })).toThrow("GYRE_REMOTE_DOCKER: 'dockerd' is not a remote Docker provider (allowed: off, podman)");
    expect(() => parseUidRange('100-50', 'GYRE_BUILD_UIDS')).toThrow(/^GYRE_BUILD_UIDS: '100-50' is not a range of uids like 900000-900255/);
    expect(() => parseUidRange('0-10', 'GYRE_BUILD_UIDS')).toThrow(/first at least 1000/);
  });

  it("puts the executor's notice first in the job's output", async () => {
    const taskDir = mkdtempSync(join(tmpdir(), 'gyre-notice-'));
    const outputs: Buffer[] = [];
    const reporter: TaskReporter = {
      heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
      stepStarted: async () => undefined,
      output: async (step, _seq, chunk) => void (step === 0 && outputs.push(await decompressChunk(chunk))),
      stepFinished: async () => undefined,
      complete: async () => undefined,
    };
    const task = {
      taskId: 't',
      nodeIndex: 0,
      parallelism: 1,
      jobId: 'j',
      jobName: 'job',
      jobNumber: 1,
      spec: { executor: { kind: 'shell' }, steps: [{ type: 'run', name: 'hello', command: 'echo hello', when: 'on_success' }], environment: {}, workingDirectory: '~/project', parallelism: 1 },
      workflowId: 'w',
      workflowName: 'w',
      pipelineId: 'p',
      pipelineNumber: 1,
      projectSlug: 'gh/o/r',
      projectOrg: 'o',
      projectName: 'r',
      repoUrl: '/nowhere',
      revision: 'abc',
    } as TaskContext;
    const isolation = detectIsolation({ mode: 'auto', ...NO_WAY });
    try {
      const result = await runTask({
        task,
        reporter,
        executor: () => createShellExecutor({ taskDir: join(taskDir, 'task'), isolation }),
        log: createLogger({ level: 'silent' }),
        heartbeatMs: 10_000,
      });
      expect(result).toEqual({ outcome: 'success' });
      expect(Buffer.concat(outputs).toString()).toBe(`${isolation.notice}\nhello\n`);
    } finally {
      await isolation.close();
      rmSync(taskDir, { recursive: true, force: true });
    }
  });

  it('fails the job with the reason when its environment cannot be made (an image that cannot be pulled)', async () => {
    const outputs: Buffer[] = [];
    const finished: unknown[] = [];
    let outcome: string | undefined;
    const reporter: TaskReporter = {
      heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
      stepStarted: async () => undefined,
      output: async (_step, _seq, chunk) => void outputs.push(await decompressChunk(chunk)),
      stepFinished: async (step) => void finished.push(step),
      complete: async (o) => void (outcome = o),
    };
    const task = {
      taskId: 't',
      spec: { executor: { kind: 'docker', images: [{ image: 'nowhere/to-be:found' }] }, steps: [{ type: 'checkout', name: 'Checkout code', when: 'on_success' }], environment: {}, parallelism: 1 },
    } as unknown as TaskContext;
    const result = await runTask({
      task,
      reporter,
      executor: async () => {
        throw new Error('pulling docker.io/nowhere/to-be:found failed: manifest unknown');
      },
      log: createLogger({ level: 'silent' }),
      heartbeatMs: 10_000,
    });
    expect(result).toEqual({ outcome: 'failed' });
    expect(outcome).toBe('failed');
    expect(Buffer.concat(outputs).toString()).toBe("The job's environment could not be made: pulling docker.io/nowhere/to-be:found failed: manifest unknown\n");
    expect(finished).toEqual([{ index: 0, status: 'failed', exitCode: null }]);
  });
});
