import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { ROLE_NAMES } from '../../runtime/roles/names';
import { ROLES, START_ORDER } from '../../runtime/roles/registry';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { startServerProcess } from '../support/processes';
import { seedEmbeddedDatabase } from '../support/embedded-database';

/**
 * The HTTP boundary's promises a user or an operator notices: rate limits answered 429 with
 * Retry-After, TLS on the listener, /healthz and /metrics on the ops port (readiness that reflects
 * the dependencies, a metrics token), and one module per role behind every role name.
 */

const get = (url: string, headers: Record<string, string> = {}) => fetch(url, { headers });

describe('rate limits', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_RUNNER_SLOTS: '0', GYRE_RATE_LIMIT_ANONYMOUS: '5', GYRE_RATE_LIMIT_TOKEN: '8' } });
  });
  afterAll(() => g?.stop());

  it('limits an address without credentials, and counts bad tokens against the address, answering 429 with Retry-After', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push((await get(`${g.url}/api/v2/me`, { 'Circle-Token': `guess-${i}` })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    const limited = await get(`${g.url}/healthz`);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await limited.json()) as { message: string }).message).toMatch(/Too many requests: the limit is 5 a minute; try again in \d+ s\./);
    // A valid token has a bucket of its own: guessing from this address does not lock its owner out.
    expect((await get(`${g.url}/api/v2/me`, { 'Circle-Token': g.token })).status).toBe(200);
  });

  it('limits each token on its own', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 9; i++) statuses.push((await get(`${g.url}/api/v2/projects`, { 'Circle-Token': g.token })).status);
    // One request of this token was spent by the test above.
    expect(statuses.filter((s) => s === 200)).toHaveLength(7);
    expect(statuses.slice(7)).toEqual([429, 429]);
  });
});

describe('TLS on the API listener', () => {
  let dir: string;
  let server: Awaited<ReturnType<typeof startServerProcess>> | undefined;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-tls-'));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
  });
  afterAll(async () => {
    server?.child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves HTTPS with the configured certificate and says so in its URL and HSTS header', async () => {
    server = await startServerProcess({ GYRE_TLS_CERT: join(dir, 'cert.pem'), GYRE_TLS_KEY: join(dir, 'key.pem'), GYRE_DATA_DIR: join(dir, 'data'), DATABASE_URL: '' });
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const ca = readFileSync(join(dir, 'cert.pem'));
    const answer = await new Promise<{ status: number; hsts?: string; body: string }>((resolve, reject) => {
      const req = httpsRequest(`${server!.url}/healthz`, { ca }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, hsts: res.headers['strict-transport-security'] as string | undefined, body }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(answer.status).toBe(200);
    expect(answer.hsts).toMatch(/max-age=\d+/);
    // Plain HTTP on the TLS port gets no API.
    await expect(fetch(server.url.replace('https:', 'http:') + '/healthz')).rejects.toThrow();
  }, 90_000);

  it('refuses to start with a certificate but no key, naming the setting', () => {
    const out = (() => {
      try {
        execFileSync(process.execPath, [join(__dirname, '../../bin/gyre.js'), 'server'], { env: { ...process.env, GYRE_TLS_CERT: join(dir, 'cert.pem'), GYRE_TLS_KEY: '', DATABASE_URL: '' }, stdio: 'pipe', timeout: 30_000 });
        return { status: 0, stderr: '' };
      } catch (error) {
        const e = error as { status: number; stderr: Buffer };
        return { status: e.status, stderr: e.stderr.toString() };
      }
    })();
    expect(out).toEqual({ status: 2, stderr: expect.stringMatching(/GYRE_TLS_KEY: TLS needs both GYRE_TLS_CERT and GYRE_TLS_KEY/) });
  });
});

describe('the ops listener', () => {
  it('serves /metrics only with the metrics token, and never queries the database for a scrape', async () => {
    // Queue gauges refreshed once an hour: what a scrape shows is what the dispatcher last read.
    const g = await startTestGyre({ env: { GYRE_METRICS_TOKEN: 'metrics-token-0123456789', GYRE_METRICS_REFRESH_MS: '3600000', GYRE_RUNNER_SLOTS: '0' } });
    try {
      expect((await get(`${g.gyre.opsUrl}/metrics`)).status).toBe(401);
      expect((await get(`${g.gyre.opsUrl}/metrics`, { Authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
      await g.addProject('acme/queued', {
        '.circleci/config.yml': 'version: 2.1\njobs:\n  a:\n    machine: true\n    resource_class: acme/none\n    steps: [{run: "true"}]\nworkflows:\n  w:\n    jobs: [a]\n',
      });
      await g.api('POST', '/api/v2/resource-classes', { name: 'acme/none', cpu: 1, memory_mb: 512, driver: 'runner' });
      const { id } = await g.trigger('acme/queued');
      await g.firstJobNumber(id);
      const res = await get(`${g.gyre.opsUrl}/metrics`, { Authorization: 'Bearer metrics-token-0123456789' });
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toMatch(/^gyre_process_cpu_seconds_total /m);
      // Requests are counted by route pattern, never by path.
      expect(text).toMatch(/^gyre_http_request_duration_seconds_count\{route="\/api\/v2\/projects",method="POST",status="201"\} 1$/m);
      expect(text).toMatch(/^gyre_http_request_duration_seconds_count\{route="\/api\/v2\/project\/:vcs\/:org\/:repo\/pipeline",method="POST",status="201"\} 1$/m);
      expect(text).not.toMatch(/gyre_queue_depth\{resource_class="acme\/none"\}/);
      // Not on the API listener.
      expect((await get(`${g.url}/metrics`, { 'Circle-Token': g.token })).status).toBe(404);
    } finally {
      await g.stop();
    }
  });

  it('answers /healthz 503 naming the dependency that does not answer', async () => {
    const g = await startTestGyre({ env: { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'nowhere', GYRE_S3_ENDPOINT: 'http://127.0.0.1:9', GYRE_S3_FORCE_PATH_STYLE: 'true', GYRE_RUNNER_SLOTS: '0' } });
    try {
      for (const url of [g.gyre.opsUrl, g.url]) {
        const res = await get(`${url}/healthz`);
        expect(res.status).toBe(503);
        const body = (await res.json()) as { status: string; checks: Record<string, { ok: boolean; error?: string }> };
        expect(body.status).toBe('unavailable');
        expect(body.checks.database).toEqual({ ok: true });
        expect(body.checks.blobs).toEqual({ ok: false, error: expect.any(String) });
      }
    } finally {
      await g.stop();
    }
  });

  it('runs in every process: a conductor-only server has no API listener but answers its probes on the ops port', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-roles-'));
    await seedEmbeddedDatabase(dir);
    const child = spawn(process.execPath, [join(__dirname, '../../bin/gyre.js'), 'server', '--roles=conductor'], {
      env: { ...process.env, GYRE_HOST: '127.0.0.1', GYRE_OPS_PORT: '0', GYRE_DATA_DIR: dir, DATABASE_URL: '', GYRE_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      const opsUrl = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ops address in: ${out}`)), 60_000);
        child.stdout!.on('data', (d) => {
          out += d;
          const m = /Health and metrics: (http:\/\/[^\s]+)\/healthz/.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]);
          }
        });
      });
      expect(out).toMatch(/^Gyre is running \(embedded database in .*; roles: conductor\)\./m);
      const health = await fetch(`${opsUrl}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'ok', roles: ['conductor'], checks: { database: { ok: true }, blobs: { ok: true } } });
      expect((await fetch(`${opsUrl}/metrics`)).status).toBe(200);
      expect((await fetch(`${opsUrl}/api/v2/projects`)).status).toBe(401);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe('a start that cannot finish', () => {
  it('ends the process with exit code 1 and the reason (here: the API port is taken)', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), 'gyre-nostart-'));
    await seedEmbeddedDatabase(dir);
    try {
      const result = spawnSync(process.execPath, [join(__dirname, '../../bin/gyre.js'), 'server'], {
        env: { ...process.env, GYRE_HOST: '127.0.0.1', GYRE_PORT: String(port), GYRE_OPS_PORT: '0', GYRE_DATA_DIR: dir, DATABASE_URL: '', GYRE_EXAMPLE: 'false', GYRE_LOG_LEVEL: 'silent' },
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 1, stderr: expect.stringMatching(/gyre server: could not start: .*EADDRINUSE/) });
    } finally {
      taken.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe('the role registry', () => {
  it('has a module for every role name the settings and the Kubernetes constructs use, started in an order naming each once', () => {
    expect(Object.keys(ROLES).sort()).toEqual([...ROLE_NAMES].sort());
    for (const name of ROLE_NAMES) expect(ROLES[name].name).toBe(name);
    expect([...START_ORDER].sort()).toEqual([...ROLE_NAMES].sort());
    expect(START_ORDER.indexOf('dispatcher')).toBeLessThan(START_ORDER.indexOf('api'));
    expect(START_ORDER.indexOf('api')).toBeLessThan(START_ORDER.indexOf('scheduler'));
  });
});
