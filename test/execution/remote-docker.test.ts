import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeEngineCertificates } from '../../runtime/agent/remote-docker/certificates';
import { createPodmanRemoteDocker } from '../../runtime/agent/remote-docker/podman-provider';
import { setupRemoteDockerStep } from '../../runtime/agent/steps/remote-docker-step';
import type { StepContext } from '../../runtime/agent/steps/step-handler';
import { createLogger } from '../../runtime/logger';
import { startRunner, type Runner } from '../../runtime/scheduler/runner';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';
import { startTestGyre, type TestGyre } from '../support/gyre';

/** The busybox image plus Debian's docker CLI (.ci/docker-cli-image.sh). */
const CLI_IMAGE = process.env.GYRE_TEST_DOCKER_CLI_IMAGE || 'localhost/gyre-docker-cli:latest';
const socket = containerSocket();
const podmanImage = (image: string) => spawnSync('podman', ['image', 'exists', image]).status === 0;
const why = !socket ? 'no Docker Engine API socket (GYRE_TEST_DOCKER_SOCKET)' : !podmanImage(CLI_IMAGE) ? `no ${CLI_IMAGE} (.ci/docker-cli-image.sh builds it)` : undefined;
if (why) console.log(`test/execution/remote-docker: skipped, ${why}`);
const withPodman = why ? describe.skip : describe;
const log = createLogger({ level: 'silent' });

/** An Engine API call over the engine's TLS port, with (or without) a client certificate. */
function callEngine(host: string, path: string, tls: { ca: string; cert?: string; key?: string }, method = 'GET', body?: unknown): Promise<{ status: number; body: string }> {
  const url = new URL(host.replace(/^tcp:/, 'https:'));
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: Number(url.port), path, method, ca: tls.ca, cert: tls.cert, key: tls.key, timeout: 30_000, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

type Engine = Awaited<ReturnType<ReturnType<typeof createPodmanRemoteDocker>['provision']>>;
const tlsOf = (engine: Engine) => ({ ca: engine.clientTls['ca.pem'], cert: engine.clientTls['cert.pem'], key: engine.clientTls['key.pem'] });

/** Starts a busybox container in the engine, as `docker run -d` does; returns its id and address. */
async function startIn(engine: Engine, script: string): Promise<{ id: string; ip: string }> {
  const created = await callEngine(engine.host, '/v1.41/containers/create', tlsOf(engine), 'POST', { Image: BUSYBOX_IMAGE, Cmd: ['sh', '-c', script], Tty: true });
  const { Id: id } = JSON.parse(created.body);
  expect((await callEngine(engine.host, `/v1.41/containers/${id}/start`, tlsOf(engine), 'POST')).status).toBe(204);
  const inspect = JSON.parse((await callEngine(engine.host, `/v1.41/containers/${id}/json`, tlsOf(engine))).body);
  return { id, ip: inspect.NetworkSettings.IPAddress };
}

/** `docker run --rm` of a busybox script in the engine: its output (a terminal's) and exit status. */
async function runIn(engine: Engine, script: string): Promise<{ status: number; output: string }> {
  const { id } = await startIn(engine, script);
  const { StatusCode } = JSON.parse((await callEngine(engine.host, `/v1.41/containers/${id}/wait`, tlsOf(engine), 'POST')).body);
  const output = (await callEngine(engine.host, `/v1.41/containers/${id}/logs?stdout=1&stderr=1`, tlsOf(engine))).body;
  await callEngine(engine.host, `/v1.41/containers/${id}?force=1`, tlsOf(engine), 'DELETE');
  return { status: StatusCode, output };
}

describe('setup_remote_docker without a provider', () => {
  it('fails the step with a message that says how to enable it', async () => {
    let output = '';
    const ctx = { executor: {}, write: (t: string) => void (output += t), signal: new AbortController().signal } as unknown as StepContext;
    const result = await setupRemoteDockerStep({ type: 'setup_remote_docker', name: 'Setup a remote Docker engine' }, ctx);
    expect(result.status).toBe('failed');
    expect(output).toMatch(/GYRE_REMOTE_DOCKER=podman/);
  });
});

withPodman('the local Podman remote Docker provider', () => {
  const state = mkdtempSync(join(tmpdir(), 'gyre-remote-docker-test-'));
  afterAll(() => rmSync(state, { recursive: true, force: true }));

  it('serves an engine of its own storage only to the job\'s client certificate, and removes it at teardown', async () => {
    const provider = createPodmanRemoteDocker({ stateDir: state, log });
    const engine = await provider.provision({ taskId: 'unit-1', projectSlug: 'gh/acme/x', dockerLayerCaching: false, reachableAt: '127.0.0.1' });
    const dirs = readdirSync(join(state, 'engines'));
    try {
      const { clientTls } = engine;
      expect(clientTls['key.pem']).toMatch(/PRIVATE KEY/);
      const mine = { ca: clientTls['ca.pem'], cert: clientTls['cert.pem'], key: clientTls['key.pem'] };
      expect(await callEngine(engine.host, '/_ping', mine)).toEqual({ status: 200, body: 'OK' });
      // Its own storage: none of the host engine's images (busybox is there).
      expect(JSON.parse((await callEngine(engine.host, '/v1.41/images/json', mine)).body)).toEqual([]);
      // No client certificate, or one from another CA: the handshake fails.
      await expect(callEngine(engine.host, '/_ping', { ca: clientTls['ca.pem'] })).rejects.toThrow();
      const other = await makeEngineCertificates('127.0.0.1');
      await expect(callEngine(engine.host, '/_ping', { ca: clientTls['ca.pem'], cert: other.client['cert.pem'], key: other.client['key.pem'] })).rejects.toThrow();
      expect(dirs).toHaveLength(1);
    } finally {
      await engine.teardown();
    }
    // The port is closed, the service gone, its storage removed.
    await expect(callEngine(engine.host, '/_ping', { ca: engine.clientTls['ca.pem'], cert: engine.clientTls['cert.pem'], key: engine.clientTls['key.pem'] })).rejects.toThrow();
    expect(readdirSync(join(state, 'engines'))).toEqual([]);
    expect(execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })).not.toContain(join(state, 'engines', dirs[0]));
  }, 30_000);

  it('fences each engine: its containers reach its own, not another engine\'s, and together stay within the resource class', async () => {
    const provider = createPodmanRemoteDocker({ stateDir: state, log, preloadImages: [BUSYBOX_IMAGE], pidsLimit: 200 });
    const request = { projectSlug: 'gh/acme/fence', dockerLayerCaching: true, reachableAt: '127.0.0.1', resources: { cpu: 1, memoryMb: 256 } };
    // Two jobs of one project at once, both with layer caching.
    const [a, b] = await Promise.all([provider.provision({ ...request, taskId: 'fence-a' }), provider.provision({ ...request, taskId: 'fence-b' })]);
    // A TCP server of this host, on an address that is not loopback: the way out of an engine.
    const hostIp = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal && !i.address.startsWith('10.88.'))!.address;
    const hostServer = createServer((socket) => socket.end('host-answers\n'));
    await new Promise<void>((resolve) => hostServer.listen(0, '0.0.0.0', resolve));
    const ids: string[] = [];
    try {
      // Each got a cache of its own, never one both write to.
      ids.push(...readdirSync(join(state, 'engines')));
      const roots = ids.map((id) => readFileSync(join(state, 'engines', id, 'root-path'), 'utf8'));
      expect(new Set(roots).size).toBe(2);
      expect([a.summary, b.summary].join('\n')).toMatch(/new layer cache[^]*new layer cache/);
      const serverA = await startIn(a, 'echo from-engine-a > /tmp/who; httpd -f -p 8081 -h /tmp');
      const serverB = await startIn(b, 'echo from-engine-b > /tmp/who; httpd -f -p 8080 -h /tmp');
      const get = (from: Engine, ip: string, port: number) => runIn(from, `printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | nc -w 1 ${ip} ${port} | tail -1`);
      expect((await get(b, serverB.ip, 8080)).output).toMatch(/from-engine-b/);
      expect((await get(b, serverA.ip, 8081)).output).not.toMatch(/from-engine-a/);
      expect((await runIn(a, `nc -w 1 ${hostIp} ${(hostServer.address() as { port: number }).port}`)).output).toMatch(/host-answers/);
      // 256 MiB for the engine and its containers: a container that takes 400 MB is killed (its own limit is none).
      expect(await runIn(a, 'dd if=/dev/zero of=/dev/null bs=400M count=1 2>/dev/null; echo status=$?')).toMatchObject({ output: expect.stringMatching(/status=137/) });
      // 200 processes for the engine: a fork bomb's 300 stop short, while the other engine's are not counted.
      expect((await runIn(a, 'for i in $(seq 300); do sleep 1 & done 2>&1 | tail -1; wait')).output).toMatch(/can't fork/);
      expect((await runIn(b, 'for i in $(seq 150); do sleep 1 & done; wait; echo all-forked')).output).toMatch(/all-forked/);
    } finally {
      hostServer.close();
      await Promise.all([a.teardown(), b.teardown()]);
    }
    // Nothing of the fences is left: no namespace, no link, no cgroup.
    const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    expect(ids.map((id) => ({ netns: netns.includes(`gyre-rd-${id}`), cgroup: existsSync(`/sys/fs/cgroup/pids/gyre-rd/${id}`) }))).toEqual(ids.map(() => ({ netns: false, cgroup: false })));
  }, 90_000);

  describe('a docker job that builds and runs an image, through a runner', () => {
    let g: TestGyre;
    let runner: Runner;
    const work = mkdtempSync(join(tmpdir(), 'gyre-remote-docker-runner-'));
    const engines = join(state, 'job');
    beforeAll(async () => {
      g = await startTestGyre();
      await g.api('POST', '/api/v2/resource-classes', { name: 'acme/docker', cpu: 1, memory_mb: 1024, driver: 'runner' });
      const token = (await g.api('POST', '/api/v2/resource-classes/acme%2Fdocker/tokens', {})).token;
      runner = startRunner({ url: g.url, token, log, workRoot: work, executor: { choice: 'docker', dockerSocket: socket, remoteDocker: 'podman', remoteDockerDir: engines, remoteDockerImages: [BUSYBOX_IMAGE] }, pollMs: 2000 });
    });
    afterAll(async () => {
      runner?.stop();
      await runner?.done;
      await g?.stop();
      rmSync(work, { recursive: true, force: true });
    });

    it('docker build and docker run work against the job\'s engine, which sees nothing of the host\'s', async () => {
      // The image has no git: the Dockerfile is written by the step. The engine starts with the
      // base image the operator allowed (GYRE_REMOTE_DOCKER_IMAGES); nothing can be pulled here.
      await g.addProject('acme/rd', {
        '.circleci/config.yml': `version: 2.1
jobs:
  build:
    resource_class: acme/docker
    docker:
      - image: ${CLI_IMAGE}
    working_directory: /tmp/proj
    steps:
      - run: printf 'FROM ${BUSYBOX_IMAGE}\\nRUN echo built-in-remote-engine > /greeting\\nCMD ["cat", "/greeting"]\\n' > Dockerfile
      - setup_remote_docker:
          version: 20.10.24
      - run: |
          docker build -q -t localhost/hello:1 . >/dev/null
          docker run --rm localhost/hello:1
      - run: |
          echo "$DOCKER_TLS_VERIFY $(ls "$DOCKER_CERT_PATH" | tr '\\n' ' ')"
          case "$DOCKER_HOST" in tcp://*:*) echo tcp;; esac
          [ -e /run/podman/podman.sock ] && echo host-socket-visible
          docker -H unix:///run/podman/podman.sock ps >/dev/null 2>&1 && echo host-engine-reachable
          docker images --format '{{.Repository}}:{{.Tag}}' | sort
          docker ps -a --format '{{.Names}}' | wc -l
workflows:
  w:
    jobs: [build]
`,
      });
      const { id } = await g.trigger('acme/rd');
      const { jobs } = await g.waitForPipeline(id, 60_000);
      const output = async (step: number) =>
        (await fetch(`${g.url}/api/v2/project/gh/acme/rd/job/${jobs.build.job_number}/output?node_index=0&step=${step}`, { headers: { 'Circle-Token': g.token } })).text();
      const setup = await output(1);
      if (jobs.build.status !== 'success') console.log([await output(0), setup, await output(2), await output(3)].join('\n---\n'));
      expect({ status: jobs.build.status, built: await output(2) }).toEqual({ status: 'success', built: 'built-in-remote-engine\n' });
      expect(setup).toMatch(/version: 20\.10\.24 is ignored/);
      // Only its own certificate (no CA key, no server key); the host's socket neither there nor reachable;
      // the engine lists only what the job put in it, and none of the host's containers (the job's own primary among them).
      expect(await output(3)).toBe(`1 ca.pem cert.pem key.pem \ntcp\n${BUSYBOX_IMAGE}\nlocalhost/hello:1\n0\n`);
      // Torn down once the job ended (the agent reports the outcome first, then cleans up): no
      // engine directory, no service left.
      const left = () => ({
        dirs: existsSync(join(engines, 'engines')) ? readdirSync(join(engines, 'engines')) : [],
        service: execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).includes(engines),
      });
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && (left().dirs.length > 0 || left().service)) await new Promise((r) => setTimeout(r, 200));
      expect(left()).toEqual({ dirs: [], service: false });
    }, 90_000);

    it('docker_layer_caching: the project\'s next job builds from the cache; another project\'s job sees none of it', async () => {
      // A RUN whose output differs on every real run: the same marker twice means the layer was reused.
      const job = (extra = '') => `
    resource_class: acme/docker
    docker:
      - image: ${CLI_IMAGE}
    steps:
      - run: printf 'FROM ${BUSYBOX_IMAGE}\\nRUN head -c 8 /dev/urandom | od -An -tx1 | tr -d " " > /marker\\nCMD ["cat", "/marker"]\\n' > Dockerfile
      - setup_remote_docker:
          docker_layer_caching: true
      - run: |${extra}
          docker build -t localhost/dlc:1 . > build.log 2>&1 || cat build.log
          grep -o 'Using cache' build.log | head -1 || true
          docker run --rm localhost/dlc:1`;
      const config = (jobs: string, workflow: string) => `version: 2.1\njobs:${jobs}\nworkflows:\n  w:\n    jobs: ${workflow}\n`;
      await g.addProject('acme/dlc', { '.circleci/config.yml': config(`\n  first:${job()}\n  second:${job()}`, '[first, {second: {requires: [first]}}]') });
      await g.addProject('acme/other', { '.circleci/config.yml': config(`\n  peek:${job(`\n          docker images --format '{{.Repository}}' | sort | tr '\\n' ' '; echo`)}`, '[peek]') });
      const outputOf = async (slug: string, job: any) => (await fetch(`${g.url}/api/v2/project/gh/${slug}/job/${job.job_number}/output?node_index=0&step=2`, { headers: { 'Circle-Token': g.token } })).text();
      const dlc = await g.waitForPipeline((await g.trigger('acme/dlc')).id, 90_000);
      const other = await g.waitForPipeline((await g.trigger('acme/other')).id, 60_000);
      const [first, second, peek] = [await outputOf('acme/dlc', dlc.jobs.first), await outputOf('acme/dlc', dlc.jobs.second), await outputOf('acme/other', other.jobs.peek)];
      if (dlc.jobs.second.status !== 'success') console.log(await Promise.all([0, 1, 2].map((step) => fetch(`${g.url}/api/v2/project/gh/acme/dlc/job/${dlc.jobs.second.job_number}/output?node_index=0&step=${step}`, { headers: { 'Circle-Token': g.token } }).then((r) => r.text()))), first);
      expect([dlc.jobs.first.status, dlc.jobs.second.status, other.jobs.peek.status]).toEqual(['success', 'success', 'success']);
      const marker = /^[0-9a-f]{16}$/m;
      expect(first).toMatch(marker);
      expect(first).not.toMatch(/Using cache/);
      // The second job's build reused the first's layer: same marker, and the builder says so.
      expect(second).toBe(`Using cache\n${first.match(marker)![0]}\n`);
      // Another project's engine has only the preloaded base image: neither the image nor a layer of acme/dlc (its build ran the RUN afresh).
      expect(peek.split('\n')[0]).toBe(`${BUSYBOX_IMAGE.replace(/:.*/, '')} `);
      expect(peek).not.toMatch(/Using cache/);
      expect(peek.match(marker)![0]).not.toBe(first.match(marker)![0]);
    }, 150_000);
  });
});
