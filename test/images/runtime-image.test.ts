import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { Client } from 'pg';

/**
 * The runtime image as built by .ci/run (images/runtime.Dockerfile, with Podman): it has what the
 * runtime spawns, runs as its non-root user on a read-only root filesystem, and `gyre server
 * --roles=api` in it starts against PostgreSQL and answers /healthz.
 */
const IMAGE = process.env.GYRE_TEST_RUNTIME_IMAGE ?? 'localhost/gyre-runtime:ci';
const run = promisify(execFile);

function imagePresent(): boolean {
  try {
    execFileSync('podman', ['image', 'exists', IMAGE], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * .ci/run builds the image in the background while the tests run, and writes the build's exit
 * status to the file GYRE_TEST_RUNTIME_IMAGE_BUILD names when it ends (its output beside it, with
 * `.log`): then these tests wait for it, and fail with its output if it failed.
 */
const BUILD_STATUS = process.env.GYRE_TEST_RUNTIME_IMAGE_BUILD;

async function imageBuilt(): Promise<void> {
  if (!BUILD_STATUS) return;
  const deadline = Date.now() + 15 * 60_000;
  while (!existsSync(BUILD_STATUS)) {
    if (Date.now() > deadline) throw new Error(`the runtime image build (.ci/run) did not end within 15 minutes; its output so far:\n${tail(`${BUILD_STATUS}.log`)}`);
    await new Promise((r) => setTimeout(r, 2000));
  }
  const status = readFileSync(BUILD_STATUS, 'utf8').trim();
  if (status !== '0') throw new Error(`the runtime image build (.ci/run) failed with status ${status}:\n${tail(`${BUILD_STATUS}.log`)}`);
}

const tail = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-40).join('\n') : '(no output)');

const present = BUILD_STATUS !== undefined || imagePresent();
const databaseUrl = process.env.DATABASE_URL;
if (!present) console.warn(`skipping runtime image tests: ${IMAGE} is not built (bash .ci/run builds it; see .ci/runtime-image.sh)`);
const describeImage = present ? describe : describe.skip;

const freePort = () => new Promise<number>((resolve, reject) => {
  const server = createServer();
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number };
    server.close(() => resolve(port));
  });
  server.on('error', reject);
});

describeImage(`runtime image ${IMAGE}`, () => {
  beforeAll(imageBuilt, 16 * 60_000);

  const podmanRun = (args: string[]) => run('podman', ['run', '--rm', '--read-only', '--user', '10001:10001', ...args], { timeout: 60_000 });

  test('has git, ssh and the CA certificates the runtime uses', async () => {
    expect((await podmanRun(['--entrypoint', 'git', IMAGE, '--version'])).stdout).toMatch(/^git version \d+\./);
    const ssh = await podmanRun(['--entrypoint', 'ssh', IMAGE, '-V']);
    expect(ssh.stderr + ssh.stdout).toMatch(/OpenSSH_/);
    const certs = await podmanRun(['--entrypoint', 'sh', IMAGE, '-c', 'ls /etc/ssl/certs/ca-certificates.crt /opt/gyre/ca/rds-global-bundle.pem']);
    expect(certs.stdout).toContain('/etc/ssl/certs/ca-certificates.crt');
    expect(certs.stdout).toContain('/opt/gyre/ca/rds-global-bundle.pem');
  }, 240_000); // three containers, each allowed 60 s to run

  test('runs as the gyre user by default, and cannot write its root filesystem', async () => {
    const id = await run('podman', ['run', '--rm', '--read-only', '--entrypoint', 'id', IMAGE], { timeout: 60_000 });
    expect(id.stdout.trim()).toMatch(/^uid=10001\(gyre\) gid=10001\(gyre\)/);
    await expect(podmanRun(['--entrypoint', 'sh', IMAGE, '-c', 'touch /opt/gyre/written'])).rejects.toThrow(/Read-only file system/);
  }, 180_000); // two containers, each allowed 60 s to run

  const withDatabase = databaseUrl ? test : test.skip;
  if (!databaseUrl) console.warn('skipping the image start test: DATABASE_URL is not set');
  withDatabase('`gyre server --roles=api` starts read-only as non-root against PostgreSQL and answers /healthz', async () => {
    const dbName = `gyre_image_${randomBytes(4).toString('hex')}`;
    const admin = new Client({ connectionString: databaseUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${dbName}`);
    const url = new URL(databaseUrl!);
    url.pathname = `/${dbName}`;
    const [apiPort, opsPort] = [await freePort(), await freePort()];
    const name = `gyre-image-test-${randomBytes(3).toString('hex')}`;
    try {
      await run('podman', [
        'run', '-d', '--rm', '--name', name, '--read-only', '--user', '10001:10001', '--network', 'host',
        // A writable data volume, as the pod's emptyDir is. Podman 4.3 ignores `mode=` on a tmpfs
        // over an image directory (it copies the image's 0750 root-owned mode up), so `U` hands it
        // to the container's user instead.
        '--tmpfs', '/var/lib/gyre:rw,U',
        '-e', `DATABASE_URL=${url}`, '-e', `GYRE_PORT=${apiPort}`, '-e', `GYRE_OPS_PORT=${opsPort}`, '-e', 'GYRE_HOST=127.0.0.1',
        '-e', 'GYRE_RUNNER_SLOTS=0', '-e', 'GYRE_EXAMPLE=false', '-e', 'GYRE_LOG_LEVEL=warn',
        IMAGE, 'server', '--roles=api',
      ], { timeout: 60_000 });
      // The ops port (GYRE_OPS_PORT) is where every process serves /healthz; a runtime that
      // predates it serves /healthz on the API port only.
      const deadline = Date.now() + 60_000;
      let answered: string | undefined;
      while (!answered && Date.now() < deadline) {
        for (const port of [opsPort, apiPort]) {
          const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
          if (res?.status === 200) answered = `${port === opsPort ? 'ops' : 'api'} port: ${await res.text()}`;
        }
        if (!answered) await new Promise((r) => setTimeout(r, 500));
      }
      if (!answered) {
        const logs = await run('podman', ['logs', name]).catch((e) => ({ stdout: '', stderr: String(e) }));
        throw new Error(`no /healthz answer within 60 s; container output:\n${logs.stdout}${logs.stderr}`);
      }
      expect(answered).toMatch(/"status":"ok"/);
      const user = await run('podman', ['exec', name, 'id', '-u']);
      expect(user.stdout.trim()).toBe('10001');
      const git = await run('podman', ['exec', name, 'git', '--version']);
      expect(git.stdout).toMatch(/^git version/);
    } finally {
      await run('podman', ['rm', '-f', name]).catch(() => undefined);
      await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
      await admin.end();
    }
  }, 240_000);
});
