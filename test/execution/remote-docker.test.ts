import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { screen } from '../../runtime/agent/remote-docker/api-filter';
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

describe('the remote Docker API filter', () => {
  /** What the proxy says to a request: 'allowed', or the refusal's message. */
  const verdict = (method: string, target: string, body?: unknown, upgrade = false) => {
    const s = screen(method, target, upgrade);
    if (!s.allow) return s.message;
    return (body !== undefined && s.checkBody?.(body)) || 'allowed';
  };

  it('reads bodies as the engine\'s Go decoder does: any case, every duplicate, no look-alike keys', () => {
    expect(verdict('POST', '/v1.41/containers/create', { hostconfig: { privileged: true } })).toMatch(/^--privileged: remote Docker in Gyre does not allow it/);
    expect(verdict('POST', '/v1.41/containers/create', { HostConfig: { Privileged: false, PRIVILEGED: true } })).toMatch(/--privileged/);
    // U+017F folds onto s in Go: "ſecurityOpt" would be SecurityOpt.
    expect(verdict('POST', '/containers/create', { HostConfig: { '\u017fecurityOpt': ['seccomp=unconfined'] } })).toMatch(/not a Docker Engine API field/);
    expect(verdict('POST', '/v1.41/containers/create', { Image: 'busybox', HostConfig: { Binds: ['data:/data:ro'], Mounts: [{ Type: 'tmpfs', Target: '/t' }], NetworkMode: 'mynet', IpcMode: 'private', PidMode: 'container:abc', SecurityOpt: ['no-new-privileges'], MaskedPaths: null, LogConfig: { Type: '', Config: { 'max-size': '1m' } } } })).toBe('allowed');
  });

  it('refuses the host\'s namespaces, files and devices however they are spelled, and the API families a CLI job does not need', () => {
    expect({
      nsNetwork: verdict('POST', '/containers/create', { HostConfig: { NetworkMode: 'ns:/proc/1/ns/net' } }),
      slirp: verdict('POST', '/containers/create', { HostConfig: { NetworkMode: 'slirp4netns:allow_host_loopback=true' } }),
      endpoint: verdict('POST', '/containers/create', { NetworkingConfig: { EndpointsConfig: { host: {} } } }),
      relativeBind: verdict('POST', '/containers/create', { HostConfig: { Binds: ['./x:/x'] } }),
      volumePath: verdict('POST', '/containers/create', { HostConfig: { Mounts: [{ Type: 'volume', Source: '/etc', Target: '/x' }] } }),
      devices: verdict('POST', '/containers/create', { HostConfig: { Devices: [{ PathOnHost: '/dev/sda' }] } }),
      runtime: verdict('POST', '/containers/create', { HostConfig: { Runtime: 'other' } }),
      transport: verdict('POST', '/v1.41/images/create?fromImage=docker-archive:/root/x.tar'),
      importPath: verdict('POST', '/images/create?fromSrc=/etc/shadow'),
      buildTag: verdict('POST', '/build?t=dir:/etc/cron.d'),
      buildSecret: verdict('POST', '/build?secrets=id%3Dx%2Csrc%3D%2Froot'),
      buildFile: verdict('POST', '/build?dockerfile=../../../etc/shadow'),
      update: verdict('POST', '/v1.41/containers/x/update', { Devices: [{ PathOnHost: '/dev/mem' }] }),
      startBody: verdict('POST', '/v1.23/containers/x/start', { Binds: ['/:/host'] }),
      pushTo: verdict('POST', '/images/x/push?destination=oci:/etc/cron.d'),
      encoded: verdict('POST', '/v1.41/libpod%2Fcontainers/create'),
      unclean: verdict('GET', '/v1.41/containers/../libpod/info'),
      libpod: verdict('GET', '/v4.3.1/libpod/info'),
      upgradeCreate: verdict('POST', '/v1.41/containers/create', undefined, true),
      unknown: verdict('GET', '/v1.41/grpc'),
      session: verdict('POST', '/session'),
    }).toEqual({
      nsNetwork: expect.stringMatching(/^--network ns:\/proc\/1\/ns\/net: remote Docker/),
      slirp: expect.stringMatching(/^--network slirp4netns/),
      endpoint: expect.stringMatching(/^--network host/),
      relativeBind: expect.stringMatching(/^-v \.\/x:\/x/),
      volumePath: expect.stringMatching(/^--mount type=volume,source=\/etc/),
      devices: expect.stringMatching(/^--device/),
      runtime: expect.stringMatching(/^--runtime other/),
      transport: expect.stringMatching(/docker-archive:\/root\/x.tar/),
      importPath: expect.stringMatching(/docker import of \/etc\/shadow/),
      buildTag: expect.stringMatching(/dir:\/etc\/cron.d/),
      buildSecret: expect.stringMatching(/the build option secrets/),
      buildFile: expect.stringMatching(/outside the build context/),
      update: expect.stringMatching(/^--device/),
      startBody: expect.stringMatching(/^-v \/:\/host/),
      pushTo: expect.stringMatching(/oci:\/etc\/cron.d/),
      encoded: expect.stringMatching(/not a path/),
      unclean: expect.stringMatching(/not a path/),
      libpod: expect.stringMatching(/libpod API/),
      upgradeCreate: expect.stringMatching(/only attach and exec start/),
      unknown: expect.stringMatching(/not part of the Docker Engine API/),
      session: expect.stringMatching(/not part of the Docker Engine API/),
    });
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
  }, 90_000);

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
      const cwdBefore = readdirSync(process.cwd());
      expect(await runIn(a, 'dd if=/dev/zero of=/dev/null bs=400M count=1 2>/dev/null; echo status=$?')).toMatchObject({ output: expect.stringMatching(/status=137/) });
      // The kill's marker (conmon's `oom` file) stays in the engine's directory, not in the agent's working directory.
      expect(readdirSync(process.cwd()).filter((f) => !cwdBefore.includes(f))).toEqual([]);
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

  it('refuses every way out to the host through the job\'s docker CLI with a message naming the option; ordinary runs, attach, exec, build and named volumes still work', async () => {
    const provider = createPodmanRemoteDocker({ stateDir: state, log, preloadImages: [BUSYBOX_IMAGE] });
    const engine = await provider.provision({ taskId: 'filter-1', projectSlug: 'gh/acme/filter', dockerLayerCaching: false, reachableAt: '127.0.0.1' });
    const certs = mkdtempSync(join(tmpdir(), 'gyre-rd-certs-'));
    try {
      for (const [file, content] of Object.entries(engine.clientTls)) writeFileSync(join(certs, file), content);
      const b = BUSYBOX_IMAGE;
      // Each attempt prints its name and the daemon's error (the docker CLI's own words).
      const attempts: Record<string, string> = {
        privileged: `docker run --rm --privileged ${b} true`,
        rootBind: `docker run --rm -v /:/host ${b} true`,
        mountBind: `docker run --rm --mount type=bind,src=/,dst=/host ${b} true`,
        pidHost: `docker run --rm --pid host ${b} true`,
        networkHost: `docker run --rm --network host ${b} true`,
        capAdd: `docker run --rm --cap-add SYS_ADMIN ${b} true`,
        seccomp: `docker run --rm --security-opt seccomp=unconfined ${b} true`,
        bindVolume: 'docker volume create --opt type=none --opt o=bind --opt device=/ hostroot',
        execPrivileged: 'docker exec --privileged keeper true',
        buildHost: 'docker build --network host -t h:1 /tmp/ctx',
      };
      const script = [
        `docker run -d --name keeper ${b} sleep 60 >/dev/null`,
        `mkdir /tmp/ctx && printf 'FROM ${b}\\nRUN echo built > /b\\nCMD ["cat", "/b"]\\n' > /tmp/ctx/Dockerfile`,
        ...Object.entries(attempts).map(([name, command]) => `echo "${name}=$(${command} 2>&1 | grep -o 'Error response from daemon: .*' | head -1)"`),
        // What must keep working: output of a run, stdin through attach (docker run -i), a terminal, exec with stdin, a named volume, a build.
        `docker run --rm ${b} echo run-output`,
        `echo attach-stdin | docker run --rm -i ${b} cat`,
        `docker run --rm -t ${b} echo tty-output`,
        'echo exec-stdin | docker exec -i keeper cat',
        `docker volume create data >/dev/null && docker run --rm -v data:/d ${b} sh -c 'echo in-volume > /d/f' && docker run --rm --mount type=volume,src=data,dst=/d ${b} cat /d/f`,
        `docker build -q -t localhost/f:1 /tmp/ctx >/dev/null && docker run --rm localhost/f:1`,
      ].join('\n');
      const cli = await new Promise<{ code: number; output: string }>((resolve) =>
        execFile('podman', ['run', '--rm', '--network', 'host', '-v', `${certs}:/certs:ro`, '-e', `DOCKER_HOST=${engine.host}`, '-e', 'DOCKER_TLS_VERIFY=1', '-e', 'DOCKER_CERT_PATH=/certs', CLI_IMAGE, 'sh', '-c', script], { timeout: 60_000 }, (error, stdout, stderr) =>
          resolve({ code: error ? Number(error.code ?? 1) : 0, output: stdout + stderr }),
        ),
      );
      const refusedWith = (option: string) => `Error response from daemon: ${option}: remote Docker in Gyre does not allow it (the job's engine runs as root on the agent's host, so this would reach the host)`;
      const said = Object.fromEntries(cli.output.split('\n').filter((line) => /^\w+=/.test(line)).map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1).replace(/\.$/, '')]));
      expect(said).toEqual({
        privileged: refusedWith('--privileged'),
        rootBind: refusedWith("-v /:/host (a bind mount of the host's files; named volumes are allowed)"),
        mountBind: refusedWith("--mount type=bind (bind and other mounts of the host's files; volume and tmpfs mounts are allowed)"),
        pidHost: refusedWith('--pid host'),
        networkHost: refusedWith('--network host'),
        capAdd: refusedWith('--cap-add SYS_ADMIN'),
        seccomp: refusedWith('--security-opt seccomp=unconfined'),
        bindVolume: expect.stringMatching(/^Error response from daemon: docker volume create --opt \w+=\S+ \(only tmpfs volumes may have options\): remote Docker in Gyre does not allow it/),
        execPrivileged: refusedWith('docker exec --privileged'),
        buildHost: refusedWith('docker build --network host'),
      });
      expect(cli.output.split('\n').filter((line) => line && !/^\w+=/.test(line))).toEqual(['run-output', 'attach-stdin', 'tty-output\r', 'exec-stdin', 'in-volume', 'built']);
      // What the docker CLI cannot send to Podman (--device needs the server's OS) or never sends (libpod) is refused as well.
      const refused = {
        devices: await callEngine(engine.host, '/v1.41/containers/create', tlsOf(engine), 'POST', { Image: BUSYBOX_IMAGE, HostConfig: { Devices: [{ PathOnHost: '/dev/sda', PathInContainer: '/dev/sda', CgroupPermissions: 'rwm' }] } }),
        libpod: await callEngine(engine.host, '/v4.0.0/libpod/containers/create', tlsOf(engine), 'POST', { image: BUSYBOX_IMAGE, privileged: true }),
      };
      expect(refused).toEqual({
        devices: { status: 403, body: JSON.stringify({ message: refusedWith('--device').replace('Error response from daemon: ', '') }) },
        libpod: { status: 403, body: expect.stringMatching(/^\{"message":"Podman's libpod API \(only the Docker Engine API is served\): remote Docker in Gyre does not allow it/) },
      });
      // None of the refused containers was made: only the keeper is left.
      expect(JSON.parse((await callEngine(engine.host, '/v1.41/containers/json?all=1', tlsOf(engine))).body).map((c: { Names: string[] }) => c.Names)).toEqual([['/keeper']]);
    } finally {
      await engine.teardown();
      rmSync(certs, { recursive: true, force: true });
    }
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
