import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { rawRequest, startHostileTarget, type HostileTarget } from '../support/hostile-server';

/**
 * Property: whatever bytes a client sends as a request, Gyre answers it (with a status below 500)
 * and stays healthy. 2,000 generated raw requests, each on its own connection, against a server
 * running as its own process: request lines, targets aimed at every route with hostile
 * parameters, credentials good and bad, cookies, encodings, ranges and bodies.
 */

const ROUTES = [
  'GET /healthz',
  'GET /',
  'GET /login',
  'GET /ui/app.js',
  'GET /api/v2/me',
  'GET /api/v2/projects',
  'POST /api/v2/projects',
  'GET /api/v2/project/{vcs}/{org}/{repo}',
  'POST /api/v2/project/{vcs}/{org}/{repo}/pipeline',
  'GET /api/v2/project/{vcs}/{org}/{repo}/pipeline',
  'GET /api/v2/pipeline/{id}',
  'GET /api/v2/pipeline/{id}/workflow',
  'GET /api/v2/pipeline/{id}/config',
  'POST /api/v2/pipeline/continue',
  'GET /api/v2/workflow/{id}',
  'GET /api/v2/workflow/{id}/job',
  'POST /api/v2/workflow/{id}/cancel',
  'POST /api/v2/workflow/{id}/approve/{id}',
  'GET /api/v2/project/{vcs}/{org}/{repo}/job/{n}',
  'GET /api/v2/project/{vcs}/{org}/{repo}/job/{n}/steps',
  'GET /api/v2/project/{vcs}/{org}/{repo}/job/{n}/output',
  'GET /api/v2/project/{vcs}/{org}/{repo}/{n}/artifacts',
  'GET /api/v2/project/{vcs}/{org}/{repo}/{n}/tests',
  'GET /api/v2/insights/{vcs}/{org}/{repo}/flaky-tests',
  'GET /output/artifact/{id}/{sig}/{name}',
  'POST /api/v2/compile-config-with-defaults',
  'GET /api/v2/orbs',
  'POST /api/v2/orbs',
  'GET /api/v2/resource-classes',
  'POST /api/v2/resource-classes',
  'POST /api/v2/resource-classes/{name}/tokens',
  'PUT /api/v2/concurrency-limits/{scope}/{rest}',
  'POST /api/v2/agent/claim',
  'GET /api/v2/agent/task/{task}',
  'POST /api/v2/agent/task/{task}/heartbeat',
  'GET /api/v2/agent/task/{task}/cancellation',
  'POST /api/v2/agent/task/{task}/step/{n}/started',
  'PUT /api/v2/agent/task/{task}/step/{n}/output/{n}',
  'POST /api/v2/agent/task/{task}/step/{n}/finished',
  'GET /api/v2/agent/task/{task}/test-timings',
  'GET /api/v2/agent/task/{task}/previous-test-results',
  'PUT /api/v2/agent/task/{task}/artifacts',
  'GET /api/v2/agent/task/{task}/cache',
  'POST /api/v2/agent/task/{task}/cache/find',
  'PUT /api/v2/agent/task/{task}/cache',
  'GET /api/v2/agent/task/{task}/cache/{id}',
  'POST /api/v2/agent/task/{task}/workspace',
  'GET /api/v2/agent/task/{task}/workspace/layers',
  'GET /api/v2/agent/task/{task}/workspace/layers/{id}',
  'PUT /api/v2/agent/task/{task}/test-results',
  'POST /api/v2/agent/task/{task}/test-results',
  'GET /api/v2/agent/task/{task}/secrets',
  'POST /api/v2/workflow/{id}/rerun',
  'POST /api/v2/project/{vcs}/{org}/{repo}/job/{n}/cancel',
  'POST /api/v2/jobs/{id}/cancel',
  'GET /api/v2/project/{vcs}/{org}/{repo}/settings',
  'PATCH /api/v2/project/{vcs}/{org}/{repo}/settings',
  'GET /api/v2/project/{vcs}/{org}/{repo}/envvar',
  'POST /api/v2/project/{vcs}/{org}/{repo}/envvar',
  'DELETE /api/v2/project/{vcs}/{org}/{repo}/envvar/{name}',
  'GET /api/v2/context',
  'POST /api/v2/context',
  'GET /api/v2/context/{id}',
  'PUT /api/v2/context/{id}/environment-variable/{name}',
  'POST /api/v2/context/{id}/restrictions',
  'GET /org/{id}/.well-known/jwks-pub.json',
  'POST /api/v2/project/{vcs}/{org}/{repo}/schedule',
  'GET /api/v2/project/{vcs}/{org}/{repo}/schedule',
  'GET /api/v2/schedule/{id}',
  'PATCH /api/v2/schedule/{id}',
  'DELETE /api/v2/schedule/{id}',
];

/** Text that breaks parsers: encodings, traversal, numbers past 2^31, NUL, unicode, very long. */
const nasty = fc.oneof(
  fc.constantFrom(
    '..',
    '%2e%2e',
    '..%2F..%2Fetc',
    '%00',
    '%',
    '%zz',
    '%E0%A4%A',
    '-1',
    '2147483648',
    '99999999999999999999',
    '1e309',
    'NaN',
    '0x10',
    '00000000-0000-0000-0000-000000000000',
    'ᚠᛇᚻ',
    '😀',
    '[',
    '//[',
    '__proto__',
    'constructor',
    "'; DROP TABLE users; --",
    '<script>alert(1)</script>',
    '${jndi:ldap://x}',
    'a'.repeat(3000),
  ),
  fc.string({ maxLength: 40 }).map(encodeURIComponent),
  fc.integer({ min: -5, max: 2 ** 40 }).map(String),
);

const methods = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS') },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,12}$/) },
  { weight: 1, arbitrary: fc.constantFrom('G ET', 'GET\t', 'get', '', 'CONNECT', 'TRACE', 'PRI') },
);

function targetArb(t: HostileTarget): fc.Arbitrary<{ method?: string; path: string }> {
  const real = {
    vcs: 'gh',
    org: 'acme',
    repo: 'target',
    id: t.pipelineId,
    n: String(t.jobNumber),
    task: t.claimed.task.taskId,
    name: 'acme%2Fhostile',
    scope: 'project',
    rest: 'gh/acme/target',
    sig: 'abc',
  } as Record<string, string>;
  const fromRoute = fc
    .tuple(fc.constantFrom(...ROUTES), fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }), fc.array(nasty, { minLength: 12, maxLength: 12 }), fc.option(fc.dictionary(nasty, nasty, { maxKeys: 4 })))
    .map(([route, keep, values, query]) => {
      const [method, template] = route.split(' ');
      let i = 0;
      const path = template.replace(/\{(\w+)\}/g, (_, name: string) => {
        const k = i++;
        return keep[k] ? real[name] : values[k];
      });
      const qs = query ? Object.entries(query).map(([k, v]) => `${k}=${v}`).join('&') : '';
      return { method, path: qs ? `${path}?${qs}` : path };
    });
  const weird = fc.oneof(
    fc.constantFrom('//[', '*', 'http://evil.example/api/v2/me', '/%', '/..%2f..%2fetc%2fpasswd', '/api/v2/../../etc/passwd', '/api/v2/project/gh/acme/target/../../../me', '?', '/api/v2/projects?page-token=eyJhZnRlciI6MX0', '/api/v2/projects?page-token=%7B%7D'),
    fc.string({ maxLength: 200 }).map((s) => `/${s}`),
    fc.string({ minLength: 1, maxLength: 20 }).map((s) => `/api/v2/${'x/'.repeat(200)}${encodeURIComponent(s)}`),
  );
  return fc.oneof({ weight: 6, arbitrary: fromRoute }, { weight: 1, arbitrary: weird.map((path) => ({ path })) });
}

function headersArb(t: HostileTarget): fc.Arbitrary<[string, string][]> {
  const value = fc.oneof(nasty, fc.string({ maxLength: 60 }).filter((s) => !/[\r\n]/.test(s)));
  const credential = fc.oneof(
    fc.constant<[string, string]>(['Circle-Token', t.token]),
    fc.constant<[string, string]>(['Authorization', `Bearer ${t.claimed.token}`]),
    fc.constant<[string, string]>(['Authorization', `Bearer ${t.other.token}`]),
    fc.constant<[string, string]>(['Authorization', `Bearer ${t.runnerToken}`]),
    fc.constant<[string, string]>(['Authorization', `Basic ${Buffer.from(`${t.token}:`).toString('base64')}`]),
    fc.constant<[string, string]>(['Cookie', `gyre_session=${encodeURIComponent(t.token)}`]),
    value.map<[string, string]>((v) => ['Circle-Token', v]),
    value.map<[string, string]>((v) => ['Authorization', `Bearer ${v}`]),
    value.map<[string, string]>((v) => ['Authorization', `Basic ${v}`]),
    value.map<[string, string]>((v) => ['Cookie', `gyre_session=${v}; other=${v}`]),
    fc.constant<[string, string]>(['Authorization', `Bearer gyre-task.${t.claimed.task.taskId}.00000000-0000-0000-0000-000000000000.99999999999.AAAA`]),
  );
  const other = fc.oneof(
    fc.tuple(fc.constant('Content-Type'), fc.constantFrom('application/json', 'text/plain', 'application/x-ndjson', 'application/octet-stream', 'multipart/form-data; boundary=x', 'application/json; charset=utf-16', '*/*', '')),
    fc.tuple(fc.constant('Content-Encoding'), fc.constantFrom('gzip', 'br', 'deflate', 'identity', 'gzip, gzip', '')),
    fc.tuple(fc.constant('X-Gyre-Output-Bytes'), nasty),
    fc.tuple(fc.constant('Range'), fc.oneof(fc.constantFrom('bytes=0-', 'bytes=5-', 'bytes=-5', 'bytes=0-1,2-3', 'bytes=99999999999999999-', 'items=0-'), value)),
    fc.tuple(fc.constant('If-Range'), value),
    fc.tuple(fc.constant('Idempotency-Key'), value),
    fc.tuple(fc.constant('X-Forwarded-For'), value),
    fc.tuple(fc.constant('Accept'), fc.constantFrom('text/event-stream', 'application/json', '*/*')),
    fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,30}$/), value),
  );
  return fc.tuple(fc.option(credential, { freq: 4 }), fc.array(other, { maxLength: 6 })).map(([c, rest]) => (c ? [c, ...rest] : rest));
}

const bodyArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(Buffer.alloc(0)) },
  { weight: 4, arbitrary: fc.json({ maxDepth: 4 }).map((j) => Buffer.from(j)) },
  {
    weight: 3,
    arbitrary: fc
      .record({ branch: nasty, tag: fc.option(nasty), parameters: fc.option(fc.dictionary(nasty, fc.oneof(nasty, fc.integer(), fc.boolean(), fc.constant(null)))), keys: fc.option(fc.array(nasty)), outcome: nasty, status: nasty, exit_code: fc.oneof(fc.integer(), fc.double()), wait_ms: fc.oneof(fc.integer(), nasty) }, { requiredKeys: [] })
      .map((o) => Buffer.from(JSON.stringify(o))),
  },
  { weight: 1, arbitrary: fc.constantFrom('{"__proto__": {"isAdmin": true}}', '{"constructor": {"prototype": {"x": 1}}}', '{', '[]', 'null', '"x"', '{"a":'.repeat(5000)).map((s) => Buffer.from(s)) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((a) => gzipSync(a)) },
  { weight: 1, arbitrary: fc.constant(gzipSync(Buffer.alloc(2_000_000))) },
);

/** One request as bytes; mostly well framed (Content-Length or chunked), sometimes not. */
function requestBytes(method: string, path: string, headers: [string, string][], body: Buffer, framing: 'length' | 'chunked' | 'lying'): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...headers.map(([k, v]) => `${k}: ${v}`)];
  if (framing === 'chunked') {
    lines.push('Transfer-Encoding: chunked');
    const parts: Buffer[] = [];
    for (let i = 0; i < body.length; i += 700) {
      const piece = body.subarray(i, i + 700);
      parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
    }
    parts.push(Buffer.from('0\r\n\r\n'));
    return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), ...parts]);
  }
  // A lying length says less than was sent: the rest reads as a second (garbage) request, which must be answered too.
  lines.push(`Content-Length: ${framing === 'lying' ? Math.floor(body.length / 2) : body.length}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
}

describe('a fuzzed HTTP boundary', () => {
  let t: HostileTarget;
  beforeAll(async () => {
    t = await startHostileTarget();
  }, 120_000);
  afterAll(async () => {
    await t?.stop();
  });

  it('answers 2,000 generated raw requests, none with a 5xx, and stays healthy', async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(methods, targetArb(t), headersArb(t), bodyArb, fc.constantFrom<'length' | 'chunked' | 'lying'>('length', 'length', 'length', 'chunked', 'lying'), fc.boolean(), async (method, target, headers, body, framing, routeMethod) => {
        const bytes = requestBytes(target.method && routeMethod ? target.method : method, target.path, headers, body, framing);
        const answer = await rawRequest(t.port, bytes);
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        // 503 is the one server-side status allowed: a handler timeout, never a crash.
        if (answer.status >= 500 && answer.status !== 503) throw new Error(`${answer.status} for ${JSON.stringify(bytes.subarray(0, 300).toString('latin1'))}: ${answer.body.slice(0, 300)}`);
      }),
      { numRuns: 2000, endOnFailure: true },
    );
    expect(t.child.exitCode).toBeNull();
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    const me = await fetch(`${t.url}/api/v2/me`, { headers: { 'Circle-Token': t.token } });
    expect(me.status).toBe(200);
    // The generator reached past the boundary: handlers answered, not only the parser and the auth check.
    expect([...statuses.keys()]).toEqual(expect.arrayContaining([200, 400, 401, 404]));
    expect(t.stderr()).not.toMatch(/request failed/);
    expect(t.strays()).toEqual([]);
  }, 600_000);
});
