import { createDockerEngine } from '../../runtime/agent/docker-engine';
import { createDockerExecutor } from '../../runtime/agent/docker-executor';
import type { Executor } from '../../runtime/agent/executor';
import { createLogger } from '../../runtime/logger';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';
import { startEcrStandIn, type EcrStandIn } from '../support/ecr-stand-in';
import { startStsStandIn, type StsStandIn } from '../support/sts-stand-in';
import { startFakeDockerEngine, type EngineRequest, type FakeDockerEngine } from '../support/fake-docker-engine';

/**
 * The Docker executor's images: pulls (registry mirror, credentials), and the primary container's
 * own entrypoint and command. Nothing can be pulled on this machine, so what the engine is asked
 * is checked against a recording stand-in, and that the engine accepts it against Podman.
 */
const log = createLogger({ level: 'silent' });

/** The X-Registry-Auth header decoded as Docker and Podman decode it (Go's base64.URLEncoding: URL alphabet, padding required). */
function decodeRegistryAuth(header: string | string[] | undefined): unknown {
  const value = String(header);
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(value) || value.length % 4 !== 0) throw new Error(`not padded URL-safe base64: ${value}`);
  return JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
}

const calls = (engine: FakeDockerEngine, method: string, path: RegExp): EngineRequest[] => engine.requests.filter((r) => r.method === method && path.test(r.path));

describe('Docker executor image pulls, against a recording engine', () => {
  let engine: FakeDockerEngine;
  afterEach(async () => engine?.close());

  it("pulls a Docker Hub image through the registry mirror with the job's credentials, then tags it with the job's name", async () => {
    engine = await startFakeDockerEngine();
    const executor = await createDockerExecutor({
      socketPath: engine.socketPath,
      taskId: 'pull-1',
      log,
      registryMirror: 'mirror.local:5000',
      images: [{ image: 'cimg/node:20.1', auth: { username: 'bot', password: 'p@ss' } }],
    });
    await executor.cleanup();

    const [pull] = calls(engine, 'POST', /^\/images\/create$/);
    expect({ fromImage: pull.query.get('fromImage'), tag: pull.query.get('tag') }).toEqual({ fromImage: 'mirror.local:5000/cimg/node', tag: '20.1' });
    expect(decodeRegistryAuth(pull.headers['x-registry-auth'])).toEqual({ username: 'bot', password: 'p@ss', serveraddress: 'mirror.local:5000' });
    const [tag] = calls(engine, 'POST', /\/tag$/);
    expect({ path: tag.path, repo: tag.query.get('repo'), tag: tag.query.get('tag') }).toEqual({ path: '/images/mirror.local:5000/cimg/node:20.1/tag', repo: 'cimg/node', tag: '20.1' });
    expect(calls(engine, 'POST', /^\/containers\/create$/).map((r) => r.body.Image)).toEqual(['cimg/node:20.1']);
  });

  it('credentials of every length are sent padded (an unpadded header is refused by the engine)', async () => {
    engine = await startFakeDockerEngine();
    for (const password of ['a', 'ab', 'abc']) {
      const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: `pull-${password}`, log, images: [{ image: `registry.corp:5000/team/app:${password}`, auth: { username: 'u', password } }] });
      await executor.cleanup();
    }
    const pulls = calls(engine, 'POST', /^\/images\/create$/);
    expect(pulls.map((p) => decodeRegistryAuth(p.headers['x-registry-auth']))).toEqual(['a', 'ab', 'abc'].map((password) => ({ username: 'u', password, serveraddress: 'registry.corp:5000' })));
  });

  it('an image of another registry is pulled from that registry, not the mirror, and not re-tagged', async () => {
    engine = await startFakeDockerEngine();
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'pull-2', log, registryMirror: 'mirror.local:5000', images: [{ image: 'registry.corp:5000/team/app:1.2' }] });
    await executor.cleanup();
    const [pull] = calls(engine, 'POST', /^\/images\/create$/);
    expect({ fromImage: pull.query.get('fromImage'), tag: pull.query.get('tag'), auth: pull.headers['x-registry-auth'] }).toEqual({ fromImage: 'registry.corp:5000/team/app', tag: '1.2', auth: undefined });
    expect(calls(engine, 'POST', /\/tag$/)).toEqual([]);
  });

  it('an official image by digest comes through the mirror, and containers are created from the name it was pulled as', async () => {
    engine = await startFakeDockerEngine();
    const digest = `sha256:${'ab'.repeat(32)}`;
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'pull-3', log, registryMirror: 'mirror.local:5000', images: [{ image: `busybox@${digest}` }] });
    await executor.cleanup();
    const [pull] = calls(engine, 'POST', /^\/images\/create$/);
    expect({ fromImage: pull.query.get('fromImage'), tag: pull.query.get('tag') }).toEqual({ fromImage: 'mirror.local:5000/library/busybox', tag: digest });
    expect(calls(engine, 'POST', /\/tag$/)).toEqual([]);
    expect(calls(engine, 'POST', /^\/containers\/create$/).map((r) => r.body.Image)).toEqual([`mirror.local:5000/library/busybox@${digest}`]);
  });

  it('an image the engine has is used as it is, not pulled', async () => {
    engine = await startFakeDockerEngine({ images: ['cimg/base:2024.01', 'redis:7'] });
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'pull-4', log, registryMirror: 'mirror.local:5000', images: [{ image: 'cimg/base:2024.01' }, { image: 'redis:7' }] });
    await executor.cleanup();
    expect(calls(engine, 'POST', /^\/images\//)).toEqual([]);
    expect(calls(engine, 'POST', /^\/containers\/create$/).map((r) => r.body.Image)).toEqual(['cimg/base:2024.01', 'redis:7']);
  });

  it("a pull that fails inside its progress stream stops start-up with the registry's whole message, and removes the task's network", async () => {
    const message = 'unauthorized: authentication required for "team/app"';
    engine = await startFakeDockerEngine({ pullError: message });
    await expect(createDockerExecutor({ socketPath: engine.socketPath, taskId: 'pull-5', log, images: [{ image: 'registry.corp:5000/team/app:1' }] })).rejects.toThrow(
      `pulling registry.corp:5000/team/app:1 failed: ${message}`,
    );
    const [network] = calls(engine, 'POST', /^\/networks\/create$/);
    expect(calls(engine, 'DELETE', /^\/networks\//).map((r) => r.path)).toEqual([`/networks/${network.body.Name}`]);
    expect(calls(engine, 'POST', /^\/containers\/create$/)).toEqual([]);
  });
});

describe('Docker executor pulls of ECR images with aws_auth', () => {
  const registry = '123456789012.dkr.ecr.us-west-2.amazonaws.com';
  const awsAuth = { aws_access_key_id: 'AKIATESTKEY', aws_secret_access_key: 'test/secret+key' };
  let engine: FakeDockerEngine;
  let ecr: EcrStandIn;
  /** A stand-in for ECR's API (GetAuthorizationToken, JSON 1.1 protocol), held to AWS's API model. */
  const startEcr = startEcrStandIn;
  afterEach(async () => {
    await engine?.close();
    await ecr?.close();
  });

  it("gets a registry password from ECR with the job's keys, signed, and pulls with it", async () => {
    engine = await startFakeDockerEngine();
    ecr = await startEcr({ status: 200, body: { authorizationData: [{ authorizationToken: Buffer.from('AWS:ecr-password').toString('base64'), expiresAt: 1_900_000_000, proxyEndpoint: `https://${registry}` }] } });
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'ecr-1', log, ecrEndpoint: ecr.url, images: [{ image: `${registry}/team/app:7`, awsAuth }] });
    await executor.cleanup();

    const [pull] = calls(engine, 'POST', /^\/images\/create$/);
    expect(pull.query.get('fromImage')).toBe(`${registry}/team/app`);
    expect(decodeRegistryAuth(pull.headers['x-registry-auth'])).toEqual({ username: 'AWS', password: 'ecr-password', serveraddress: registry });
    // The request is GetAuthorizationToken as AWS's API model and the awsJson1_1 protocol say, signed for the registry's region.
    expect(ecr.problems).toEqual([]);
    expect(ecr.requests).toHaveLength(1);
    expect(String(ecr.requests[0].headers.authorization)).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIATESTKEY\/\d{8}\/us-west-2\/ecr\/aws4_request, /);
  });

  it("stops start-up with ECR's message when it refuses, and says what aws_auth cannot do", async () => {
    engine = await startFakeDockerEngine();
    ecr = await startEcr({ status: 400, body: { __type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' } });
    await expect(createDockerExecutor({ socketPath: engine.socketPath, taskId: 'ecr-2', log, ecrEndpoint: ecr.url, images: [{ image: `${registry}/team/app:7`, awsAuth }] })).rejects.toThrow(
      `ECR GetAuthorizationToken for ${registry} → 400: The security token included in the request is invalid.`,
    );
    await expect(createDockerExecutor({ socketPath: engine.socketPath, taskId: 'ecr-3', log, ecrEndpoint: ecr.url, images: [{ image: `${registry}/team/app:7`, awsAuth: { oidc_role_arn: 'arn:aws:iam::123456789012:role/ci' } }] })).rejects.toThrow(/oidc_role_arn needs the job's OIDC token/);
    await expect(createDockerExecutor({ socketPath: engine.socketPath, taskId: 'ecr-4', log, ecrEndpoint: ecr.url, images: [{ image: 'registry.corp:5000/team/app:7', awsAuth }] })).rejects.toThrow(/aws_auth is for Amazon ECR images.*registry\.corp:5000/);
    expect(calls(engine, 'POST', /^\/images\/create$/)).toEqual([]);
  });
});

/**
 * `$NAME` in an image's `auth` and `aws_auth`: the job spec holds the reference, and the executor
 * expands it from the task's secrets as it pulls. What reaches the engine (the X-Registry-Auth
 * header) and ECR is what a registry that wants those credentials would get.
 */
describe('Docker executor registry credentials that name the task\'s variables', () => {
  const registry = '123456789012.dkr.ecr.us-west-2.amazonaws.com';
  let engine: FakeDockerEngine;
  let ecr: EcrStandIn | undefined;
  let sts: StsStandIn | undefined;
  afterEach(async () => {
    await engine?.close();
    await ecr?.close();
    await sts?.close();
    ecr = sts = undefined;
  });

  it('expands $NAME and ${NAME} from the secrets and hands the values to the engine; other values go as written', async () => {
    engine = await startFakeDockerEngine();
    const secrets = { REG_USER: 'deploy-bot', REG_PASS: 'hunter2-from-a-context' };
    const images = [
      { image: 'registry.corp:5000/team/app:1', auth: { username: '$REG_USER', password: '${REG_PASS}' } },
      // A plaintext password in the config, `$` and all: CircleCI allows it.
      { image: 'registry.corp:5000/team/db:1', auth: { username: 'plain', password: 'pa$REG_PASS$' } },
    ];
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'refs-1', log, images, secrets });
    await executor.cleanup();
    const pulls = calls(engine, 'POST', /^\/images\/create$/);
    expect(pulls.map((p) => decodeRegistryAuth(p.headers['x-registry-auth']))).toEqual([
      { username: 'deploy-bot', password: 'hunter2-from-a-context', serveraddress: 'registry.corp:5000' },
      { username: 'plain', password: 'pa$REG_PASS$', serveraddress: 'registry.corp:5000' },
    ]);
  });

  it('a name the task has no variable for fails the start naming it and the image, before anything is made, with no value in the message', async () => {
    engine = await startFakeDockerEngine({ images: ['registry.corp:5000/team/app:2'] });
    const secrets = { REG_USER: 'deploy-bot', OTHER: 'other-secret-value' };
    const error: Error = await createDockerExecutor({
      socketPath: engine.socketPath,
      taskId: 'refs-2',
      log,
      secrets,
      // The engine has this image already: the job fails all the same, as it would on an engine that has to pull it.
      images: [{ image: 'registry.corp:5000/team/app:2', auth: { username: '$REG_USER', password: '$DOCKER_PASS' } }],
    }).then(
      () => new Error('the executor started'),
      (e) => e,
    );
    expect(error.message).toMatch(/^cannot pull registry\.corp:5000\/team\/app:2: auth\.password is \$DOCKER_PASS, and this job has no variable DOCKER_PASS/);
    for (const value of Object.values(secrets)) expect(error.message).not.toContain(value);
    expect(engine.requests).toEqual([]);
  });

  it("expands aws_auth's keys from the secrets and signs ECR's GetAuthorizationToken with them", async () => {
    engine = await startFakeDockerEngine();
    ecr = await startEcrStandIn({ status: 200, body: { authorizationData: [{ authorizationToken: Buffer.from('AWS:ecr-password').toString('base64'), expiresAt: 1_900_000_000 }] } });
    const secrets = { AWS_KEY: 'AKIAFROMPROJECTVAR01', AWS_SECRET: 'secret/from+project' };
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'refs-3', log, ecrEndpoint: ecr.url, secrets, images: [{ image: `${registry}/team/app:7`, awsAuth: { aws_access_key_id: '$AWS_KEY', aws_secret_access_key: '${AWS_SECRET}' } }] });
    await executor.cleanup();
    expect(ecr.problems).toEqual([]);
    expect(String(ecr.requests[0].headers.authorization)).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIAFROMPROJECTVAR01\/\d{8}\/us-west-2\/ecr\/aws4_request, /);
    expect(decodeRegistryAuth(calls(engine, 'POST', /^\/images\/create$/)[0].headers['x-registry-auth'])).toEqual({ username: 'AWS', password: 'ecr-password', serveraddress: registry });
  });

  it("with aws_auth.oidc_role_arn, assumes the role with the task's CIRCLE_OIDC_TOKEN and pulls with ECR's password for it", async () => {
    engine = await startFakeDockerEngine();
    sts = await startStsStandIn({
      output: {
        Credentials: { AccessKeyId: 'ASIAROLESESSION00002', SecretAccessKey: 'role-secret', SessionToken: 'role-session-token', Expiration: '2030-01-01T00:00:00Z' },
        AssumedRoleUser: { Arn: 'arn:aws:sts::123456789012:assumed-role/pull/gyre-refs-4', AssumedRoleId: 'AROAEXAMPLE:gyre-refs-4' },
      },
    });
    ecr = await startEcrStandIn({ status: 200, body: { authorizationData: [{ authorizationToken: Buffer.from('AWS:role-ecr-password').toString('base64'), expiresAt: 1_900_000_000 }] } });
    const secrets = { CIRCLE_OIDC_TOKEN: 'header.claims.signature-of-the-job', ROLE: 'arn:aws:iam::123456789012:role/pull' };
    const executor = await createDockerExecutor({ socketPath: engine.socketPath, taskId: 'refs-4', log, ecrEndpoint: ecr.url, stsEndpoint: sts.url, secrets, images: [{ image: `${registry}/team/app:8`, awsAuth: { oidc_role_arn: '$ROLE' } }] });
    await executor.cleanup();
    expect(sts.problems).toEqual([]);
    expect(sts.requests.map((r) => [r.params.RoleArn, r.params.WebIdentityToken, r.params.RoleSessionName])).toEqual([[secrets.ROLE, secrets.CIRCLE_OIDC_TOKEN, 'gyre-refs-4']]);
    expect(ecr.problems).toEqual([]);
    expect(String(ecr.requests[0].headers.authorization)).toMatch(/Credential=ASIAROLESESSION00002\//);
    expect(decodeRegistryAuth(calls(engine, 'POST', /^\/images\/create$/)[0].headers['x-registry-auth'])).toEqual({ username: 'AWS', password: 'role-ecr-password', serveraddress: registry });
  });
});

const socket = containerSocket();
if (!socket) console.log('test/execution/docker-images: engine tests skipped, no Docker Engine API socket (set GYRE_TEST_DOCKER_SOCKET or start `podman system service`)');
const withEngine = socket ? describe : describe.skip;

withEngine('Docker executor images, on a Docker Engine API socket', () => {
  it("a Docker Hub image is pulled through the mirror with the job's credentials, in a form the engine accepts", async () => {
    // The mirror (nothing listens on port 1) cannot answer; what matters is what the engine tried.
    const auth = { username: 'gyre', password: 'secret-x' };
    expect(Buffer.byteLength(JSON.stringify({ ...auth, serveraddress: '127.0.0.1:1' })) % 3).not.toBe(0); // the base64 needs padding
    const taskId = `mirror-${Date.now()}`;
    const attempt = createDockerExecutor({ socketPath: socket!, taskId, log, registryMirror: '127.0.0.1:1', images: [{ image: 'gyre-test/never-pulled:1.0', auth }] });
    const error: Error = await attempt.then(
      () => new Error('the pull succeeded'),
      (e) => e,
    );
    // The engine took the credentials (no "X-Registry-Auth" complaint) and went to the mirror for the Hub name.
    expect(error.message).not.toMatch(/X-Registry-Auth|parse/i);
    expect(error.message).toMatch(/^pulling 127\.0\.0\.1:1\/gyre-test\/never-pulled:1\.0 failed: .*127\.0\.0\.1:1.*(refused|connect)/s);
    const engine = createDockerEngine(socket!);
    const { body: networks } = await engine.call<any[]>('GET', `/networks?filters=${encodeURIComponent(JSON.stringify({ label: [`gyre.task=${taskId}`] }))}`);
    expect(networks).toEqual([]);
  }, 60_000);

  it("the primary container runs the job's entrypoint and command instead of being kept alive by Gyre; steps still run in it", async () => {
    let executor: Executor | undefined;
    try {
      executor = await createDockerExecutor({
        socketPath: socket!,
        taskId: `entry-${Date.now()}`,
        log,
        images: [{ image: BUSYBOX_IMAGE, entrypoint: ['/bin/sh', '-c'], command: ['echo "started with $0" > /tmp/started; exec sleep 600', 'the-command'] }],
      });
      const chunks: Uint8Array[] = [];
      const { done } = executor.start({ script: 'for i in $(seq 1 50); do [ -f /tmp/started ] && break; sleep 0.1; done; cat /tmp/started; tr "\\0" " " < /proc/1/cmdline; echo', shell: '/bin/sh -e', env: {}, cwd: '/' }, (c) => void chunks.push(c), new AbortController().signal);
      expect((await done).exitCode).toBe(0);
      // The command got its argument from the entrypoint's `-c`, and it, not Gyre's keep-alive, is the container's process.
      expect(Buffer.concat(chunks).toString('utf8')).toBe('started with the-command\nsleep 600 \n');
    } finally {
      await executor?.cleanup();
    }
  }, 60_000);
});
