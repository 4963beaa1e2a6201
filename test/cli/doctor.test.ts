import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CANARY_CONFIG } from '../../runtime/cli/doctor-canary';
import { run, type CliIo } from '../../runtime/cli/main';
import { compileConfig } from '../../runtime/config/compiler';
import { createLogger } from '../../runtime/logger';
import { startRunner, type Runner } from '../../runtime/scheduler/runner';
import { startNomadStandIn, type NomadStandIn } from '../support/nomad-stand-in';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';

/**
 * `gyre doctor` against a real Gyre started here (one process, every role) whose Nomad driver
 * talks to the Nomad stand-in, with a runner of one class running, and against what goes wrong:
 * a runner class with no runner, a Nomad with no client free, a class that does not exist, a bad
 * token, a stopped server, a Nomad that stopped, an untrusted or misnamed certificate.
 */

function capture(env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env };
  return { io, out: () => stdout, err: () => stderr };
}

/** The status doctor printed for a check, by its name. */
function statusOf(output: string, name: string): string | undefined {
  const line = output.split('\n').find((l) => l.slice(10).startsWith(name.padEnd(40)));
  return line?.slice(2, 10).trim();
}

async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A CA and a certificate it signed for `san`, made with openssl. */
function makeCertificate(dir: string, name: string, san: string, days = 30) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-ca-key.pem`, '-out', `${name}-ca.pem`, '-days', '30', '-subj', `/CN=${name} test ca`);
  writeFileSync(join(dir, `${name}.cnf`), `subjectAltName=${san}\n`);
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
  ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${name}-ca.pem`, '-CAkey', `${name}-ca-key.pem`, '-CAcreateserial', '-out', `${name}.pem`, '-days', String(days), '-extfile', `${name}.cnf`);
  return { caFile: join(dir, `${name}-ca.pem`), cert: readFileSync(join(dir, `${name}.pem`)), key: readFileSync(join(dir, `${name}-key.pem`)) };
}

/** An HTTPS front for the Gyre under test, as a load balancer terminating TLS would be. */
async function startTlsFront(target: string, cert: { cert: Buffer; key: Buffer }): Promise<{ url: string; server: Server }> {
  const upstream = new URL(target);
  const server = createHttpsServer({ cert: cert.cert, key: cert.key }, (req, res) => {
    const proxied = httpRequest({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    proxied.on('error', () => res.destroy());
    req.pipe(proxied);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('gyre doctor, without a server', () => {
  it('prints the canary config, which compiles to one workflow per place a job runs', async () => {
    const r = capture({});
    expect(await run(['doctor', '--print-canary-config'], r.io)).toBe(0);
    expect(r.out()).toBe(CANARY_CONFIG);
    const plan = async (parameters: Record<string, string | boolean>) => {
      const result = await compileConfig(r.out(), { trigger: { branch: 'main', parameters } });
      if (!result.ok) throw new Error(JSON.stringify(result.problems));
      return result.plan.workflows.map((w) => `${w.name}: ${w.jobs.map((j) => `${j.name}@${j.spec?.resourceClass ?? 'default'}`).join(' ')}`);
    };
    expect(await plan({ nonce: 'n', runner_class: 'acme/linux', nomad_class: 'acme/big' })).toEqual([
      'canary-runner: runner-write@acme/linux runner-read@acme/linux',
      'canary-nomad: nomad-write@acme/big nomad-read@acme/big',
    ]);
    expect(await plan({ nonce: 'n', default_class: true })).toEqual(['canary-default: write-default@default read-default@default']);
  });

  it('refuses bad usage with exit 2, naming the flag', async () => {
    const r = capture({});
    expect(await run(['doctor', '--project', 'acme/x'], r.io)).toBe(2);
    expect(r.err()).toContain("--project 'acme/x' must be a project slug gh/<org>/<repo>");
    const t = capture({});
    expect(await run(['doctor', '--claim-timeout', 'soon'], t.io)).toBe(2);
    expect(t.err()).toContain("--claim-timeout 'soon' must be a number of seconds above 0 and at most 3600");
  });
});

describe('gyre doctor against a live Gyre', () => {
  let nomad: NomadStandIn;
  let g: TestGyre;
  let runner: Runner;
  let env: Record<string, string>;
  const dir = mkdtempSync(join(tmpdir(), 'gyre-doctor-'));
  const repo = join(dir, 'canary-repo');

  beforeAll(async () => {
    nomad = await startNomadStandIn();
    g = await startTestGyre({ env: { NOMAD_ADDR: nomad.url, GYRE_AGENT_IMAGE: 'registry.local/gyre/agent:test' } });
    env = { GYRE_URL: g.url, GYRE_TOKEN: g.token };
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/linux', cpu: 1, memory_mb: 1024, driver: 'runner' });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/lonely', cpu: 1, memory_mb: 1024, driver: 'runner' });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/nomad', cpu: 1, memory_mb: 1024, driver: 'nomad' });
    const token = (await g.api('POST', '/api/v2/resource-classes/acme%2Flinux/tokens', {})).token;
    runner = startRunner({ url: g.url, token, log: createLogger({ level: 'silent' }), workRoot: mkdtempSync(join(dir, 'runner-')), slots: 2, pollMs: 2000, executor: { choice: 'shell' } });
  }, 60_000);
  afterAll(async () => {
    runner.stop();
    await runner.done.catch(() => undefined);
    await g.stop();
    await nomad.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a healthy install: every check ok, the canary ran on the runner and on a Nomad client and read back its artifact and cache', async () => {
    const r = capture(env);
    const code = await run(['doctor', '--runner-class', 'acme/linux', '--nomad-class', 'acme/nomad', '--ops-url', g.gyre.opsUrl, '--repo', repo], r.io);
    const out = r.out();
    expect({ code, out }).toEqual({ code: 0, out: expect.stringMatching(/\n\d+ ok\n$/) });
    for (const name of [
      'API reachable',
      'API token',
      'role api',
      'role conductor',
      'role dispatcher',
      'role scheduler',
      'role output',
      'database',
      'blob store',
      'Nomad',
      'resource classes',
      'canary project',
      'canary pipeline',
      'canary on runner class acme/linux',
      'canary on Nomad class acme/nomad',
      'database read/write',
      'blob store read/write',
    ]) {
      expect({ name, status: statusOf(out, name) }).toEqual({ name, status: 'ok' });
    }
    expect(out).toMatch(new RegExp(`ok {6}canary project {27}gh/acme/gyre-doctor-canary created over ${repo} \\(created\\)\n`));
    expect(out).toMatch(/blob store read\/write\s+runner: artifact canary\.txt and cache stored and read back; nomad: artifact canary\.txt and cache stored and read back/);
    // Each half really ran where it says: the runner claimed the runner jobs, Nomad was given the others.
    const agents = await g.gyre.store.query<{ resource_class: string; agent_id: string }>(
      `SELECT DISTINCT t.resource_class, t.agent_id FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN projects p ON p.id = j.project_id WHERE p.slug = 'gh/acme/gyre-doctor-canary' ORDER BY 1`,
    );
    expect(agents.filter((a) => a.resource_class === 'acme/linux').map((a) => a.agent_id)).toEqual([runner.id]);
    expect(nomad.registered.filter((j) => j.Meta?.gyre_resource_class === 'acme/nomad').length).toBe(2);
  }, 120_000);

  it('with no class named, the canary runs on the default class, in a project of its own organisation', async () => {
    const r = capture(env);
    expect(await run(['doctor', '--repo', repo], r.io)).toBe(0);
    expect(statusOf(r.out(), 'canary on the default resource class')).toBe('ok');
    expect(r.out()).toContain(`gh/gyre-doctor/canary created over ${repo}`);
    // Only the API's /healthz was read: Nomad is reported from it (this process runs the scheduler).
    expect(statusOf(r.out(), 'Nomad')).toBe('ok');
  }, 60_000);

  it('a runner class with no runner: FAILED, says what to check, and the waiting canary is canceled', async () => {
    const r = capture(env);
    expect(await run(['doctor', '--runner-class', 'acme/lonely', '--claim-timeout', '2', '--repo', repo], r.io)).toBe(1);
    expect(statusOf(r.out(), 'canary on runner class acme/lonely')).toBe('FAILED');
    expect(r.out()).toContain('no runner claimed the canary job in 2 s: is a runner of class acme/lonely running?');
    expect(r.out()).toContain('→ `gyre resource-class list`; start one with `gyre runner --url <GYRE_URL> --token <a token from gyre resource-class token acme/lonely>`');
    expect(statusOf(r.out(), 'blob store read/write')).toBe('skipped');
    expect(r.out()).toMatch(/\n\d+ ok, 1 FAILED, 2 skipped\n$/);
    const [latest] = (await g.api('GET', '/api/v2/project/gh/acme/gyre-doctor-canary/pipeline')).items;
    const [workflow] = (await g.api('GET', `/api/v2/pipeline/${latest.id}/workflow`)).items;
    expect(workflow).toMatchObject({ name: 'canary-runner', status: 'canceled' });
  }, 60_000);

  it('a Nomad with no client free: FAILED, the job was submitted but its agent never started', async () => {
    nomad.options = { ...nomad.options, capacity: 0 };
    try {
      const r = capture(env);
      expect(await run(['doctor', '--nomad-class', 'acme/nomad', '--claim-timeout', '2', '--repo', repo], r.io)).toBe(1);
      expect(statusOf(r.out(), 'Nomad')).toBe('ok');
      expect(statusOf(r.out(), 'canary on Nomad class acme/nomad')).toBe('FAILED');
      expect(r.out()).toContain("no Nomad client started the canary job's agent in 2 s (the scheduler submitted it; its allocation did not start)");
      expect(r.out()).toContain('`nomad node status` for a ready client');
    } finally {
      nomad.options = { ...nomad.options, capacity: 16 };
    }
  }, 60_000);

  it('a class that does not exist, or has another driver: FAILED with the command that fixes it, and no canary', async () => {
    const r = capture(env);
    expect(await run(['doctor', '--runner-class', 'acme/nothing', '--nomad-class', 'acme/linux', '--repo', repo], r.io)).toBe(1);
    expect(r.out()).toMatch(/FAILED {2}resource classes\s+acme\/nothing does not exist; acme\/linux has driver runner, not nomad\n/);
    expect(r.out()).toContain('→ gyre resource-class add acme/nothing --cpu 2 --memory 4096 --driver runner');
    expect(statusOf(r.out(), 'canary pipeline')).toBeUndefined();
  });

  it('a bad token: FAILED, and nothing that needs it is attempted', async () => {
    const r = capture({ GYRE_URL: g.url, GYRE_TOKEN: 'not-a-real-token' });
    expect(await run(['doctor', '--repo', repo], r.io)).toBe(1);
    expect(r.out()).toMatch(/FAILED {2}API token\s+the API refused GYRE_TOKEN \(401: /);
    expect(r.out()).toContain("→ set GYRE_TOKEN to a current API token of an admin (the server stack's `admin_token` output)");
    expect(statusOf(r.out(), 'role api')).toBe('ok');
    expect(r.out()).toMatch(/skipped remaining checks\s+needs an API token the server accepts/);
  });

  it('a stopped server: FAILED at the first check, naming the address', async () => {
    const port = await closedPort();
    const r = capture({ GYRE_URL: `http://127.0.0.1:${port}`, GYRE_TOKEN: g.token });
    expect(await run(['doctor'], r.io)).toBe(1);
    expect(r.out()).toContain(`FAILED  API reachable                            cannot reach http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`);
    expect(r.out()).toContain('→ is the server running and GYRE_URL its address?');
    expect(r.out()).toMatch(/\n0 ok, 1 FAILED, 1 skipped\n$/);
  });

  it('an ops URL nothing answers on: FAILED with how to reach ops ports', async () => {
    const port = await closedPort();
    const r = capture(env);
    expect(await run(['doctor', '--no-canary', '--ops-url', `http://127.0.0.1:${port}`], r.io)).toBe(1);
    expect(statusOf(r.out(), `process http://127.0.0.1:${port}`)).toBe('FAILED');
    expect(r.out()).toContain('kubectl -n gyre port-forward svc/gyre-<role> 9090');
  });

  it('HTTPS: an untrusted or misnamed certificate FAILS with what to do; with --ca-file the same install passes', async () => {
    const good = makeCertificate(dir, 'front', 'IP:127.0.0.1');
    const misnamed = makeCertificate(dir, 'other', 'DNS:gyre.example.com');
    const expiring = makeCertificate(dir, 'soon', 'IP:127.0.0.1', 5);
    const front = await startTlsFront(g.url, good);
    const wrong = await startTlsFront(g.url, misnamed);
    const soon = await startTlsFront(g.url, expiring);
    try {
      const untrusted = capture({ GYRE_URL: front.url, GYRE_TOKEN: g.token });
      expect(await run(['doctor', '--no-canary'], untrusted.io)).toBe(1);
      expect(untrusted.out()).toMatch(/FAILED {2}TLS certificate\s+not trusted: UNABLE_TO_VERIFY_LEAF_SIGNATURE \(CN=front, issued by CN=front test ca, for IP Address:127\.0\.0\.1, valid until \d{4}-/);
      expect(untrusted.out()).toContain('pass --ca-file <the CA certificate, PEM>');
      expect(statusOf(untrusted.out(), 'API reachable')).toBeUndefined();

      const trusted = capture({ GYRE_URL: front.url, GYRE_TOKEN: g.token });
      expect(await run(['doctor', '--no-canary', '--ca-file', good.caFile], trusted.io)).toBe(0);
      expect(trusted.out()).toMatch(/ok {6}TLS certificate\s+trusted \(CN=front, issued by CN=front test ca.*; (29|30) days left\)/);
      expect(statusOf(trusted.out(), 'API token')).toBe('ok');

      const name = capture({ GYRE_URL: wrong.url, GYRE_TOKEN: g.token });
      expect(await run(['doctor', '--no-canary', '--ca-file', misnamed.caFile], name.io)).toBe(1);
      expect(name.out()).toMatch(/FAILED {2}TLS certificate\s+not trusted: .*IP: 127\.0\.0\.1 is not in the cert's list/);
      expect(name.out()).toContain('the certificate does not name this host');

      // Close to expiry: a warning, not a failure.
      const warned = capture({ GYRE_URL: soon.url, GYRE_TOKEN: g.token });
      expect(await run(['doctor', '--no-canary', '--ca-file', expiring.caFile], warned.io)).toBe(0);
      expect(warned.out()).toMatch(/warn {4}TLS certificate\s+expires in [45] days \(CN=soon/);
      expect(warned.out()).toContain('→ renew it (docs/deploying.md#certificate-rotation)');
    } finally {
      front.server.close();
      wrong.server.close();
      soon.server.close();
    }
  }, 30_000);

  // Last: it stops the Nomad stand-in.
  it('Nomad stopped: the scheduler is not ready and Nomad FAILED, with what to check', async () => {
    await nomad.close();
    // The health report is reused for a second, then refreshed: wait until it has seen Nomad gone
    // (a fixed 1.1 s could end before a slow refresh did).
    await until('/healthz to see Nomad gone', async () => ((await (await fetch(`${g.url}/healthz`)).json()) as { status: string }).status !== 'ok', 20_000, 200);
    const r = capture(env);
    expect(await run(['doctor', '--no-canary', '--nomad-class', 'acme/nomad'], r.io)).toBe(1);
    expect(r.out()).toMatch(/FAILED {2}Nomad\s+the scheduler cannot reach Nomad: http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    expect(r.out()).toMatch(/FAILED {2}role scheduler\s+not ready at http:\/\/127\.0\.0\.1:\d+: nomad: /);
    expect(r.out()).toContain('→ check NOMAD_ADDR, the scheduler token Secret (NOMAD_TOKEN)');
  });
});
