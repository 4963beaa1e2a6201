import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
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
function callEngine(host: string, path: string, tls: { ca: string; cert?: string; key?: string }): Promise<{ status: number; body: string }> {
  const url = new URL(host.replace(/^tcp:/, 'https:'));
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: Number(url.port), path, ca: tls.ca, cert: tls.cert, key: tls.key, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
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
  });
});
