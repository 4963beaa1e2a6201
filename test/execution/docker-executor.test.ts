import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createDockerEngine } from '../../runtime/agent/docker-engine';
import { createDockerExecutor, parseImageRef, removeOrphanedContainers } from '../../runtime/agent/docker-executor';
import type { Executor } from '../../runtime/agent/executor';
import { createLogger } from '../../runtime/logger';
import { readTar } from '../../runtime/output/tar';
import { END_OF_ARCHIVE, entryHeader, padding } from '../support/tar';
import { startRunner, type Runner } from '../../runtime/scheduler/runner';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';

const ROOT = resolve(__dirname, '../..');
const socket = containerSocket();
if (!socket) console.log('test/execution/docker-executor: skipped, no Docker Engine API socket (set GYRE_TEST_DOCKER_SOCKET or start `podman system service`)');
const withEngine = socket ? describe : describe.skip;
const log = createLogger({ level: 'silent' });

/** Runs a step; `onOutput` hears of each chunk as it arrives (to act once a step has begun). */
async function exec(
  executor: Executor,
  script: string,
  options: { env?: Record<string, string>; cwd?: string; signal?: AbortSignal; timeoutMs?: number; onOutput?: () => void } = {},
) {
  const chunks: Uint8Array[] = [];
  const execution = executor.start(
    { script, shell: '/bin/sh -eo pipefail', env: options.env ?? {}, cwd: options.cwd ?? '~/project', noOutputTimeoutMs: options.timeoutMs },
    (c) => {
      chunks.push(c);
      options.onOutput?.();
    },
    options.signal ?? new AbortController().signal,
  );
  const result = await execution.done;
  return { ...result, output: Buffer.concat(chunks).toString('utf8') };
}

describe('image references', () => {
  it('reads registries, Hub short names, tags and digests as Docker does', () => {
    expect(parseImageRef('busybox')).toEqual({ registry: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: undefined });
    expect(parseImageRef('cimg/node:20.1')).toMatchObject({ registry: 'docker.io', repository: 'cimg/node', tag: '20.1' });
    expect(parseImageRef('registry.local:5000/team/app@sha256:abc')).toMatchObject({ registry: 'registry.local:5000', repository: 'team/app', digest: 'sha256:abc', tag: undefined });
    expect(parseImageRef('localhost/gyre-busybox:latest')).toMatchObject({ registry: 'localhost', repository: 'gyre-busybox' });
  });
});

withEngine('the Docker executor on a Docker Engine API socket', () => {
  const engine = socket ? createDockerEngine(socket) : undefined!;
  const containersOf = async (taskId: string) =>
    (await engine.call<any[]>('GET', `/containers/json?all=true&filters=${encodeURIComponent(JSON.stringify({ label: [`gyre.task=${taskId}`] }))}`)).body;

  it('runs steps in the primary container with environment, user and working directory; a service answers by name on the task network', async () => {
    const taskId = `t-${Date.now()}`;
    const executor = await createDockerExecutor({
      socketPath: socket!,
      taskId,
      log,
      images: [
        { image: BUSYBOX_IMAGE, environment: { FROM_IMAGE: 'primary-env' }, user: 'nobody' },
        { image: BUSYBOX_IMAGE, name: 'svc', entrypoint: ['/bin/sh', '-c'], command: ['mkdir -p /www && echo served-by-service > /www/x && exec httpd -f -p 8080 -h /www'] },
      ],
    });
    try {
      expect(await executor.hasBash()).toBe(false);
      const r = await exec(executor, 'echo "$FROM_IMAGE $STEP_ENV $(id -un) $PWD"; for i in $(seq 100); do wget -qO- http://svc:8080/x && break; sleep 0.3; done', {
        env: { STEP_ENV: 'step-env', PATH: '/host/only' },
        cwd: '/tmp/work/dir',
      });
      expect(r).toMatchObject({ exitCode: 0, timedOut: false, canceled: false });
      expect(r.output).toBe('primary-env step-env nobody /tmp/work/dir\nserved-by-service\n');
      expect(await exec(executor, 'echo out; echo err >&2; exit 7')).toMatchObject({ exitCode: 7, output: 'out\nerr\n' });
      expect((await containersOf(taskId)).length).toBe(2);
    } finally {
      await executor.cleanup();
    }
    expect(await containersOf(taskId)).toEqual([]);
  }, 60_000);

  it("knows the image user's home and whether the image has bash, whether the primary keeps its entrypoint or runs its own", async () => {
    // Kept: the agent's keep-alive runs as the primary's first process and says both as it
    // starts. Overridden: the image's own entrypoint runs, and the executor asks with an exec.
    const cases = [
      { label: 'keep-alive', image: { image: BUSYBOX_IMAGE, user: 'nobody' } },
      { label: 'own entrypoint', image: { image: BUSYBOX_IMAGE, user: 'nobody', entrypoint: ['/bin/sh', '-c'], command: ['sleep 300'] } },
      { label: 'keep-alive as root', image: { image: BUSYBOX_IMAGE } },
    ];
    const seen: Record<string, unknown> = {};
    for (const { label, image } of cases) {
      // The keep-alive is waited for a minute here: if it never said, the start would take that long.
      const started = Date.now();
      const executor = await createDockerExecutor({ socketPath: socket!, taskId: `h-${Date.now()}`, log, images: [image], probeWaitMs: 60_000 });
      try {
        seen[label] = { home: executor.home, bash: await executor.hasBash(), tilde: (await exec(executor, 'cd ~ && pwd', { cwd: '/' })).output.trim(), startedWithin20s: Date.now() - started < 20_000 };
      } finally {
        await executor.cleanup();
      }
    }
    // A step's output is the keep-alive's stdout (/proc/1/fd/1), which the agent's attach carries.
    // What a process a step left running writes there between steps is read and dropped: it never
    // blocks that process, the container or the next step.
    const executor = await createDockerExecutor({ socketPath: socket!, taskId: `w-${Date.now()}`, log, images: [{ image: BUSYBOX_IMAGE }] });
    try {
      const loud = await exec(executor, 'head -c 20000000 /dev/zero > /proc/1/fd/1; echo wrote', { timeoutMs: 60_000 });
      expect({ exitCode: loud.exitCode, bytes: loud.output.length, end: loud.output.slice(-6) }).toEqual({ exitCode: 0, bytes: 20_000_006, end: 'wrote\n' });
      expect(await exec(executor, '(sleep 1; head -c 5000000 /dev/zero > /proc/1/fd/1; touch /tmp/written) >/dev/null 2>&1 & echo started')).toMatchObject({ exitCode: 0, output: 'started\n' });
      await new Promise((r) => setTimeout(r, 6000));
      // Blocked on a paused stream, the writer would never finish (a loaded machine may need more
      // than the 6 s).
      await until('the writer to finish', async () => (await exec(executor, 'test -e /tmp/written && echo next')).output === 'next\n', 30_000, 500);
    } finally {
      await executor.cleanup();
    }
    expect(seen).toEqual({
      'keep-alive': { home: '/tmp', bash: false, tilde: '/tmp', startedWithin20s: true },
      'own entrypoint': { home: '/tmp', bash: false, tilde: '/tmp', startedWithin20s: true },
      'keep-alive as root': { home: '/root', bash: false, tilde: '/root', startedWithin20s: true },
    });
  }, 240_000);

  it('runs steps through the keep-alive with any environment value and output, and with an exec what it cannot carry', async () => {
    const taskId = `k-${Date.now()}`;
    const executor = await createDockerExecutor({ socketPath: socket!, taskId, log, images: [{ image: BUSYBOX_IMAGE }] });
    try {
      // Values that would run commands if the keep-alive's line were not quoted whole.
      const hostile = {
        QUOTE: "'; touch /tmp/pwned-quote; echo '",
        SUBST: '$(touch /tmp/pwned-subst)`touch /tmp/pwned-tick`',
        LINES: 'one\ntwo\n; touch /tmp/pwned-line\n',
        SLASH: 'back\\slash \\n \\036 %s %b',
      };
      const script = 'printf "%s|%s|%s|%s\\n" "$QUOTE" "$SUBST" "$LINES" "$SLASH"; ls /tmp | grep -c pwned || true';
      expect(await exec(executor, script, { env: hostile })).toMatchObject({
        exitCode: 0,
        output: `${hostile.QUOTE}|${hostile.SUBST}|${hostile.LINES}|${hostile.SLASH}\n0\n`,
      });
      // Output that looks like a step's end (the keep-alive's trailer, with a nonce the step cannot know) is output.
      expect(await exec(executor, 'printf "\\036%s:0\\036 and more" deadbeef; exit 5')).toMatchObject({ exitCode: 5, output: '\u001edeadbeef:0\u001e and more' });
      // A name the shell cannot export (the keep-alive's line would break) goes through an exec.
      // (An exec'd process's parent is outside the container: its PPID is 0. The keep-alive's steps have a parent inside.)
      expect(await exec(executor, 'echo "ran $PLAIN $PPID"', { env: { 'odd-name; touch /tmp/pwned-name': 'x', PLAIN: 'too' } })).toMatchObject({ exitCode: 0, output: 'ran too 0\n' });
      expect(await exec(executor, '[ "$PPID" != 0 ] && echo "in the keep-alive"')).toMatchObject({ exitCode: 0, output: 'in the keep-alive\n' });
      expect(await exec(executor, 'ls /tmp | grep -c pwned || true')).toMatchObject({ output: '0\n' });
      expect(await exec(executor, 'echo "${#BIG}"', { env: { BIG: 'x'.repeat(100_000) } })).toMatchObject({ exitCode: 0, output: '100000\n' });
      // Steps one after another, as fast as the agent asks: each gets its own output and status.
      for (let i = 0; i < 20; i++) expect(await exec(executor, `echo step-${i}; exit ${i % 3}`)).toMatchObject({ exitCode: i % 3, output: `step-${i}\n` });
      // The container stopped from outside while a step runs in its keep-alive: the step fails, saying so.
      let begun!: () => void;
      const printed = new Promise<void>((resolve) => (begun = resolve));
      const running = exec(executor, 'echo before; sleep 30', { onOutput: () => begun() });
      await printed;
      const [primary] = (await containersOf(taskId)).filter((c: any) => c.Labels['gyre.role'] === 'primary');
      await engine.call('POST', `/containers/${primary.Id}/kill?signal=KILL`);
      expect(await running).toMatchObject({ exitCode: 1, output: 'before\n\nthe primary container ended while the step ran\n' });
    } finally {
      await executor.cleanup();
    }
  }, 60_000);

  it('stops a step on cancel and on an output timeout', async () => {
    const executor = await createDockerExecutor({ socketPath: socket!, taskId: `c-${Date.now()}`, log, images: [{ image: BUSYBOX_IMAGE }] });
    try {
      const controller = new AbortController();
      let asked = 0;
      // Canceled once the step has printed (a fixed delay raced podman's start under load).
      const cancel = () => {
        if (asked) return;
        asked = Date.now();
        controller.abort();
      };
      const canceled = await exec(executor, 'echo begin; sleep 60; echo never', { signal: controller.signal, onOutput: cancel });
      expect(canceled).toMatchObject({ canceled: true, exitCode: null, output: 'begin\n' });
      // Under 1 s when idle; the bound leaves room for a loaded machine and is far under the sleep.
      expect(Date.now() - asked).toBeLessThan(10_000);
      const timed = await exec(executor, 'echo begin; sleep 60', { timeoutMs: 500 });
      expect(timed).toMatchObject({ timedOut: true, exitCode: null });
    } finally {
      await executor.cleanup();
    }
  }, 60_000);

  it('stops reading a step while the agent is not ready for more output, without counting it as time without output', async () => {
    const executor = await createDockerExecutor({ socketPath: socket!, taskId: `b-${Date.now()}`, log, images: [{ image: BUSYBOX_IMAGE }] });
    try {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      let bytes = 0;
      let settled = false;
      // 32 MiB; the taker is not ready after the first piece. A no-output timeout of 1 s.
      const execution = executor.start(
        { script: `head -c ${32 * 1024 * 1024} /dev/zero | tr '\\0' x; echo; echo finished`, shell: '/bin/sh -eo pipefail', env: {}, cwd: '~', noOutputTimeoutMs: 1000 },
        (chunk) => {
          bytes += chunk.byteLength;
          return gate;
        },
        new AbortController().signal,
      );
      void execution.done.then(() => (settled = true));
      try {
        await new Promise((r) => setTimeout(r, 3000));
        // What was already on its way (the engine's and the sockets' buffers) arrives; the rest waits.
        expect(bytes).toBeGreaterThan(0);
        expect(bytes).toBeLessThan(8 * 1024 * 1024);
        expect(settled).toBe(false);
      } finally {
        open();
      }
      expect(await execution.done).toMatchObject({ exitCode: 0, timedOut: false });
      expect(bytes).toBe(32 * 1024 * 1024 + '\nfinished\n'.length);
    } finally {
      await executor.cleanup();
    }
  }, 60_000);

  it('moves files in and out of the primary container as tar (archive with patterns, extract with checks)', async () => {
    const executor = await createDockerExecutor({ socketPath: socket!, taskId: `f-${Date.now()}`, log, images: [{ image: BUSYBOX_IMAGE }] });
    const collect = async (tar: AsyncIterable<Uint8Array>) => {
      const chunks: Uint8Array[] = [];
      for await (const c of tar) chunks.push(c);
      return Buffer.concat(chunks);
    };
    try {
      await exec(executor, 'mkdir -p build/sub && echo one > build/a.txt && echo two > build/sub/b.log && echo no > other.txt', { cwd: '~/project' });
      const { tar, missing } = await executor.archive('~/project', ['build/**/*.log', 'build/a.txt', 'nothing-here']);
      expect(missing).toEqual(['nothing-here']);
      const bytes = await collect(tar);
      const names: string[] = [];
      await readTar((async function* () { yield bytes; })(), async (entry, content) => {
        for await (const _ of content) void _;
        names.push(`${entry.type}:${entry.name}`);
      });
      expect(names.sort()).toEqual(['directory:build', 'directory:build/sub', 'file:build/a.txt', 'file:build/sub/b.log']);
      const result = await executor.extract('/tmp/restored', (async function* () { yield bytes; })());
      expect(result.entries).toBe(4);
      expect((await exec(executor, 'cat /tmp/restored/build/a.txt /tmp/restored/build/sub/b.log; ls /tmp/restored/build')).output).toBe('one\ntwo\na.txt\nsub\n');
      const evil = Buffer.concat([entryHeader({ name: '../escape.txt', type: 'file', size: 3, mode: 0o644, mtime: 0 }), Buffer.from('bad'), padding(3), END_OF_ARCHIVE]);
      await expect(executor.extract('/tmp/evil', (async function* () { yield evil; })())).rejects.toThrow(/escape|outside|\.\./);
      expect((await exec(executor, 'ls /tmp/escape.txt 2>&1 || echo absent')).output).toContain('absent');
      await expect(executor.archive('/no/such/dir', ['.'])).rejects.toThrow(/no\/such\/dir/);
    } finally {
      await executor.cleanup();
    }
  }, 60_000);

  it("gives every container of a task its resource class's CPU, memory and process limits", async () => {
    const taskId = `limits-${Date.now()}`;
    const executor = await createDockerExecutor({
      socketPath: socket!,
      taskId,
      log,
      resources: { cpu: 1.5, memoryMb: 300 },
      pidsLimit: 64,
      images: [{ image: BUSYBOX_IMAGE }, { image: BUSYBOX_IMAGE, name: 'svc', entrypoint: ['/bin/sh', '-c'], command: ['sleep 300'] }],
    });
    try {
      const containers = await containersOf(taskId);
      expect(containers).toHaveLength(2);
      for (const c of containers) {
        const { body } = await engine.call('GET', `/containers/${c.Id}/json`);
        expect({ cpu: body.HostConfig.NanoCpus, memory: body.HostConfig.Memory, pids: body.HostConfig.PidsLimit }).toEqual({ cpu: 1_500_000_000, memory: 300 * 1024 * 1024, pids: 64 });
      }
    } finally {
      await executor.cleanup();
    }
  }, 60_000);

  it('ends the containers of an agent that is killed: the primary at once, the rest by the watchdog', async () => {
    const taskId = `orphan-${Date.now()}`;
    // An agent in a process of its own, killed with SIGKILL while a step runs in its container.
    const agent = spawn(
      process.execPath,
      [
        '-e',
        `require('tsx/cjs');
         const { createDockerExecutor } = require(${JSON.stringify(join(ROOT, 'runtime/agent/docker-executor.ts'))});
         const log = { info() {}, warn() {}, error() {}, child() { return log; } };
         (async () => {
           const executor = await createDockerExecutor({ socketPath: ${JSON.stringify(socket)}, taskId: ${JSON.stringify(taskId)}, log,
             images: [{ image: ${JSON.stringify(BUSYBOX_IMAGE)} }, { image: ${JSON.stringify(BUSYBOX_IMAGE)}, name: 'svc', entrypoint: ['/bin/sh', '-c'], command: ['sleep 300'] }] });
           executor.start({ script: 'sleep 300', shell: '/bin/sh', env: {}, cwd: '/' }, () => {}, new AbortController().signal);
           setTimeout(() => process.stdout.write('ready\\n'), 500);
         })();`,
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      agent.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      agent.once('exit', (code) => reject(new Error(`the agent exited (${code}) before its step ran`)));
    });
    const running = async () => (await containersOf(taskId)).filter((c: any) => c.State === 'running').map((c: any) => c.Labels['gyre.role']).sort();
    expect(await running()).toEqual(['primary', 'service']);
    agent.kill('SIGKILL');
    // The primary (and the step in it) dies with the agent's connection to the engine.
    const deadline = Date.now() + 30_000;
    while ((await running()).includes('primary') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await running()).toEqual(['service']);
    // The watchdog of any agent on this host removes what the dead one left.
    expect(await removeOrphanedContainers(socket!, log)).toBeGreaterThanOrEqual(2);
    expect(await containersOf(taskId)).toEqual([]);
  }, 60_000);

  describe('a pipeline with a service container, through a runner', () => {
    let g: TestGyre;
    let runner: Runner;
    const work = mkdtempSync(join(tmpdir(), 'gyre-docker-runner-'));
    beforeAll(async () => {
      g = await startTestGyre();
      await g.api('POST', '/api/v2/resource-classes', { name: 'acme/containers', cpu: 1, memory_mb: 1024, driver: 'runner' });
      const token = (await g.api('POST', '/api/v2/resource-classes/acme%2Fcontainers/tokens', {})).token;
      runner = startRunner({ url: g.url, token, log, workRoot: work, executor: { choice: 'docker', dockerSocket: socket }, pollMs: 2000 });
    });
    afterAll(async () => {
      runner.stop();
      await runner.done;
      await g.stop();
      rmSync(work, { recursive: true, force: true });
    });

    it('runs the job in containers and ends success', async () => {
      await g.addProject('acme/dock', {
        '.circleci/config.yml': `version: 2.1
jobs:
  build:
    resource_class: acme/containers
    docker:
      - image: ${BUSYBOX_IMAGE}
      - image: ${BUSYBOX_IMAGE}
        name: cache
        entrypoint: ["/bin/sh", "-c"]
        command: ["echo pong > /tmp/ping && exec httpd -f -p 6379 -h /tmp"]
    working_directory: /tmp/proj
    steps:
      - run: |
          echo "in $PWD node $CIRCLE_NODE_INDEX"
          for i in $(seq 100); do wget -qO- http://cache:6379/ping && break; sleep 0.3; done
workflows:
  w:
    jobs: [build]
`,
      });
      const { id } = await g.trigger('acme/dock');
      const { jobs } = await g.waitForPipeline(id, 60_000);
      const res = await fetch(`${g.url}/api/v2/project/gh/acme/dock/job/${jobs.build.job_number}/output?node_index=0&step=0`, { headers: { 'Circle-Token': g.token } });
      expect({ status: jobs.build.status, output: await res.text() }).toEqual({ status: 'success', output: 'in /tmp/proj node 0\npong\n' });
    }, 90_000);
  });
});
