import { gzipSync } from 'node:zlib';
import { hostileConfig } from './hostile-compile';
import type { HostileTarget } from './hostile-server';

/**
 * The hostile-input catalogue: requests an attacker would send, each with the answer Gyre must give
 * (a 4xx naming what was wrong, or a compile error with a message). Shared by the catalogue test
 * (test/api/hostile-catalogue.test.ts) and the benchmark that times it (bench/hostile-catalogue.ts).
 * Archive and JUnit cases, which the agent handles, are in the test file.
 */

export interface HostileRequest {
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  /** A JSON value (sent as JSON), or the exact bytes. */
  readonly json?: unknown;
  readonly body?: string | Buffer;
  /** Bytes written to the socket as they are (for what an HTTP client would refuse to send). */
  readonly raw?: Buffer;
}

export type HostileExpectation =
  /** This status, with a `{ message }` matching. */
  | { readonly status: number; readonly message: RegExp }
  /** A 200 compile answer that is not valid, its first error matching. */
  | { readonly compileError: RegExp };

export interface HostileCase {
  readonly group: 'auth' | 'routing' | 'body' | 'ids and pages' | 'continuation' | 'admin' | 'agent' | 'agent files' | 'compile' | 'names and slugs';
  readonly name: string;
  readonly request: (t: HostileTarget) => HostileRequest;
  readonly expect: HostileExpectation;
}

const uuid0 = '00000000-0000-4000-8000-000000000000';
const task = (t: HostileTarget, path = '') => `/api/v2/agent/task/${t.claimed.task.taskId}${path}`;
const agent = (t: HostileTarget, extra: Record<string, string> = {}) => ({ Authorization: `Bearer ${t.claimed.token}`, ...extra });
const admin = (t: HostileTarget) => ({ 'Circle-Token': t.token });
const page = (cursor: unknown) => encodeURIComponent(Buffer.from(JSON.stringify(cursor)).toString('base64url'));
const slug = '/api/v2/project/gh/acme/target';

/** A config YAML as the compile route takes it. */
const compile = (config_yaml: string, extra: Record<string, unknown> = {}): ((t: HostileTarget) => HostileRequest) => (t) => ({
  method: 'POST',
  path: '/api/v2/compile-config-with-defaults',
  headers: admin(t),
  json: { config_yaml, options: { pipeline_values: { 'pipeline.git.branch': 'main' }, ...extra } },
});
const job = (steps: string) => `version: 2.1\njobs:\n  a:\n    docker: [{image: x}]\n    steps: ${steps}\nworkflows:\n  w:\n    jobs: [a]\n`;

function billionLaughs(): string {
  const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i <= 9; i++) lines.push(`a${i}: &a${i} [*a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}, *a${i - 1}]`);
  return `version: 2.1\n${lines.join('\n')}\njobs: {a: {docker: [{image: x}], steps: [{run: {command: 'true', environment: {X: *a9}}}]}}\nworkflows: {w: {jobs: [a]}}\n`;
}

function mergeBomb(): string {
  const lines = ['m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}'];
  for (let i = 1; i <= 12; i++) lines.push(`m${i}: &m${i} {k${i}a: {<<: *m${i - 1}}, k${i}b: {<<: *m${i - 1}}, k${i}c: *m${i - 1}, k${i}d: *m${i - 1}}`);
  return `version: 2.1\n${lines.join('\n')}\njobs: {a: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [a]}}\n`;
}

export const HOSTILE_CASES: readonly HostileCase[] = [
  // ── Who is calling ─────────────────────────────────────────────────────────────────────────
  { group: 'auth', name: 'no token', request: () => ({ method: 'GET', path: '/api/v2/me' }), expect: { status: 401, message: /log in first/ } },
  { group: 'auth', name: 'an unknown Circle-Token', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { 'Circle-Token': 'gyre_0000' } }), expect: { status: 401, message: /not valid/ } },
  { group: 'auth', name: 'basic auth that is not base64', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Authorization: 'Basic ***not base64***' } }), expect: { status: 401, message: /not valid|log in/ } },
  { group: 'auth', name: 'a cookie with broken percent-encoding', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Cookie: 'gyre_session=%E0%A4%A' } }), expect: { status: 401, message: /not valid|log in|session has ended/ } },
  { group: 'auth', name: 'an empty Bearer', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Authorization: 'Bearer ' } }), expect: { status: 401, message: /log in first/ } },
  { group: 'auth', name: 'a 12 KB token', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { 'Circle-Token': 'x'.repeat(12_000) } }), expect: { status: 401, message: /not valid/ } },
  { group: 'auth', name: 'a task token used as an API token', request: (t) => ({ method: 'GET', path: '/api/v2/me', headers: { 'Circle-Token': t.claimed.token } }), expect: { status: 401, message: /not valid/ } },
  { group: 'auth', name: 'a runner token used as an API token', request: (t) => ({ method: 'GET', path: '/api/v2/projects', headers: { 'Circle-Token': t.runnerToken } }), expect: { status: 401, message: /not valid/ } },
  { group: 'auth', name: 'an API token used as a task token', request: (t) => ({ method: 'GET', path: task(t), headers: { Authorization: `Bearer ${t.token}` } }), expect: { status: 401, message: /task token is not valid/ } },
  { group: 'auth', name: 'headers larger than the server takes', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Cookie: `x=${'a'.repeat(20_000)}` } }), expect: { status: 431, message: /too large/ } },
  { group: 'auth', name: 'a session cookie sent twice', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Cookie: 'gyre_session=a; gyre_session=b' } }), expect: { status: 401, message: /session has ended/ } },
  { group: 'auth', name: 'an API token sent as the session cookie', request: (t) => ({ method: 'GET', path: '/api/v2/me', headers: { Cookie: `gyre_session=${t.token}` } }), expect: { status: 401, message: /session has ended/ } },
  { group: 'auth', name: 'a 4 KB session cookie', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Cookie: `gyre_session=${'s'.repeat(4096)}` } }), expect: { status: 401, message: /session has ended/ } },
  { group: 'auth', name: 'a token sign-in with a body that is not an object', request: () => ({ method: 'POST', path: '/auth/token', body: '"gyre_x"', headers: { 'Content-Type': 'application/json' } }), expect: { status: 400, message: /body/ } },
  { group: 'auth', name: 'a password sign-in to a provider that is not configured', request: () => ({ method: 'POST', path: '/auth/ldap', body: '{"username":"*)(uid=*","password":"x"}', headers: { 'Content-Type': 'application/json' } }), expect: { status: 404, message: /sign-in provider not found/ } },
  { group: 'auth', name: 'a lower-case bearer scheme with a forged token', request: () => ({ method: 'GET', path: '/api/v2/me', headers: { Authorization: 'bearer forged' } }), expect: { status: 401, message: /not valid/ } },

  // ── Paths and methods ──────────────────────────────────────────────────────────────────────
  { group: 'routing', name: 'GET //[ (crashed the process once)', request: (t) => ({ method: 'GET', path: '//[', raw: Buffer.from(`GET //[ HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nConnection: close\r\n\r\n`) }), expect: { status: 404, message: /route not found/ } },
  { group: 'routing', name: 'GET //[ without a token (routes are not shown to strangers)', request: () => ({ method: 'GET', path: '//[', raw: Buffer.from('GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n') }), expect: { status: 401, message: /log in first/ } },
  { group: 'routing', name: 'an unknown route', request: (t) => ({ method: 'GET', path: '/api/v2/nope', headers: admin(t) }), expect: { status: 404, message: /route not found: GET \/api\/v2\/nope/ } },
  { group: 'routing', name: 'a method the path does not take', request: (t) => ({ method: 'DELETE', path: '/api/v2/projects', headers: admin(t) }), expect: { status: 405, message: /DELETE is not allowed on \/api\/v2\/projects \(allowed: GET, POST\)/ } },
  { group: 'routing', name: 'CONNECT', request: () => ({ method: 'CONNECT', path: 'x', raw: Buffer.from('CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n') }), expect: { status: 405, message: /CONNECT is not allowed/ } },
  { group: 'routing', name: 'a method that is not HTTP', request: () => ({ method: 'X', path: '/', raw: Buffer.from('G ET / HTTP/1.1\r\nHost: x\r\n\r\n') }), expect: { status: 400, message: /not valid HTTP|could not be read/ } },
  { group: 'routing', name: 'a request line with a bare LF and NUL', request: () => ({ method: 'X', path: '/', raw: Buffer.from('GET /\0 HTTP/1.1\nHost: x\n\n') }), expect: { status: 400, message: /./ } },
  { group: 'routing', name: 'an absolute-form target naming another host, without a token', request: () => ({ method: 'GET', path: 'http://evil.example/api/v2/me', raw: Buffer.from('GET http://evil.example/api/v2/me HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n') }), expect: { status: 401, message: /log in first/ } },
  { group: 'routing', name: 'dot segments out of the API', request: (t) => ({ method: 'GET', path: '/api/v2/../../etc/passwd', raw: Buffer.from(`GET /api/v2/../../etc/passwd HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nConnection: close\r\n\r\n`) }), expect: { status: 404, message: /route not found/ } },
  { group: 'routing', name: 'a path of 15 KB', request: (t) => ({ method: 'GET', path: `/api/v2/${'a/'.repeat(7_500)}`, headers: admin(t) }), expect: { status: 404, message: /route not found/ } },
  { group: 'routing', name: 'a percent sign that encodes nothing', request: (t) => ({ method: 'GET', path: '/api/v2/pipeline/%zz', headers: admin(t) }), expect: { status: 400, message: /not valid URL encoding/ } },
  { group: 'routing', name: 'an encoded slash in a pipeline id', request: (t) => ({ method: 'GET', path: '/api/v2/pipeline/..%2F..%2Fme', headers: admin(t) }), expect: { status: 404, message: /pipeline not found/ } },
  { group: 'routing', name: 'an encoded NUL in a path segment', request: (t) => ({ method: 'GET', path: '/api/v2/pipeline/%00', headers: admin(t) }), expect: { status: 400, message: /path\.id holds a NUL/ } },

  // ── Bodies ─────────────────────────────────────────────────────────────────────────────────
  { group: 'body', name: 'JSON that does not parse', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json' }, body: '{"branch": ' }), expect: { status: 400, message: /not valid JSON/ } },
  { group: 'body', name: 'a list where an object belongs', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: [] }), expect: { status: 400, message: /body must be an object/ } },
  { group: 'body', name: 'a string where an object belongs', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: 'main' }), expect: { status: 400, message: /body must be an object/ } },
  { group: 'body', name: 'null where an object belongs', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json' }, body: 'null' }), expect: { status: 400, message: /body must be an object/ } },
  { group: 'body', name: '__proto__ in a body', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json' }, body: '{"__proto__": {"isAdmin": true}}' }), expect: { status: 400, message: /__proto__ or constructor\.prototype, which is not allowed/ } },
  { group: 'body', name: 'constructor.prototype in a body', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json' }, body: '{"constructor": {"prototype": {"x": 1}}}' }), expect: { status: 400, message: /__proto__ or constructor\.prototype, which is not allowed/ } },
  { group: 'body', name: 'a branch that is a number', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { branch: 5 } }), expect: { status: 400, message: /body\.branch must be a string/ } },
  { group: 'body', name: 'a branch of 2,000 characters', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { branch: 'b'.repeat(2000) } }), expect: { status: 400, message: /body\.branch must NOT have more than 1024/ } },
  { group: 'body', name: 'a branch with a NUL', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { branch: 'main\0' } }), expect: { status: 400, message: /body\.branch holds a NUL/ } },
  { group: 'body', name: 'parameters that are a list', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { parameters: [1, 2] } }), expect: { status: 400, message: /body\.parameters/ } },
  { group: 'body', name: 'a parameter value that is an object', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { parameters: { x: { y: 1 } } } }), expect: { status: 400, message: /body\.parameters/ } },
  { group: 'body', name: '1,001 parameters', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { parameters: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`p${i}`, i])) } }), expect: { status: 400, message: /body\.parameters must NOT have more than 1000 properties/ } },
  { group: 'body', name: 'a parameter name with a NUL', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { parameters: { 'a\0b': 1 } } }), expect: { status: 400, message: /NUL/ } },
  { group: 'body', name: 'a body over 1 MiB', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { branch: 'main', pad: 'x'.repeat(1_100_000) } }), expect: { status: 413, message: /larger than this route accepts/ } },
  { group: 'body', name: 'Content-Length of 10 GB with no body', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, raw: Buffer.from(`POST ${slug}/pipeline HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{`) }), expect: { status: 413, message: /larger than this route accepts/ } },
  { group: 'body', name: 'a chunked body over 1 MiB', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, raw: chunked(`${slug}/pipeline`, { 'Circle-Token': t.token, 'Content-Type': 'application/json' }, Buffer.from(JSON.stringify({ pad: 'x'.repeat(1_200_000) }))) }), expect: { status: 413, message: /larger than this route accepts/ } },
  { group: 'body', name: 'two Content-Length headers that disagree', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, raw: Buffer.from(`POST ${slug}/pipeline HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}`) }), expect: { status: 400, message: /./ } },
  { group: 'body', name: 'Content-Length with Transfer-Encoding (smuggling)', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, raw: Buffer.from(`POST ${slug}/pipeline HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v2/me HTTP/1.1\r\n\r\n`) }), expect: { status: 400, message: /./ } },
  { group: 'body', name: 'JSON nested 100,000 deep', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json' }, body: '['.repeat(100_000) + ']'.repeat(100_000) }), expect: { status: 400, message: /not valid JSON|body must be an object/ } },
  { group: 'body', name: 'a gzip bomb sent as a JSON body', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' }, body: gzipSync(Buffer.alloc(50_000_000, 32)) }), expect: { status: 400, message: /not valid JSON/ } },
  { group: 'body', name: 'JSON declared as UTF-16 but sent as bytes', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: { ...admin(t), 'Content-Type': 'application/json; charset=utf-16' }, body: Buffer.from([0xff, 0xfe, 0x7b, 0x00]) }), expect: { status: 400, message: /not valid JSON/ } },
  { group: 'body', name: 'a trigger for a branch the repository does not have', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { branch: 'no-such-branch' } }), expect: { status: 400, message: /branch 'no-such-branch' does not exist in gh\/acme\/target's repository/ } },
  { group: 'body', name: 'a branch that is a git option', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { branch: '--output=/tmp/gyre-pwned' } }), expect: { status: 400, message: /branch '--output=\/tmp\/gyre-pwned' does not exist/ } },
  { group: 'body', name: 'a tag that climbs out of refs', request: (t) => ({ method: 'POST', path: `${slug}/pipeline`, headers: admin(t), json: { tag: '../../HEAD' } }), expect: { status: 400, message: /tag '\.\.\/\.\.\/HEAD' does not exist/ } },

  // ── Ids and pages ──────────────────────────────────────────────────────────────────────────
  { group: 'ids and pages', name: 'a page token that is not base64 JSON', request: (t) => ({ method: 'GET', path: `${slug}/pipeline?page-token=%%%`, headers: admin(t) }), expect: { status: 400, message: /URL encoding|page-token/ } },
  { group: 'ids and pages', name: 'a page token of the wrong shape (crashed once)', request: (t) => ({ method: 'GET', path: `${slug}/pipeline?page-token=${page({ before: 'x' })}`, headers: admin(t) }), expect: { status: 400, message: /page-token '.*' is not a token this API gave out/ } },
  { group: 'ids and pages', name: 'a page token past 2^31', request: (t) => ({ method: 'GET', path: `${slug}/pipeline?page-token=${page({ before: 2 ** 40 })}`, headers: admin(t) }), expect: { status: 400, message: /page-token/ } },
  { group: 'ids and pages', name: 'a page token that is a list', request: (t) => ({ method: 'GET', path: `${slug}/pipeline?page-token=${page([1])}`, headers: admin(t) }), expect: { status: 400, message: /page-token/ } },
  { group: 'ids and pages', name: 'a page token of 5,000 characters', request: (t) => ({ method: 'GET', path: `${slug}/pipeline?page-token=${'A'.repeat(5000)}`, headers: admin(t) }), expect: { status: 400, message: /page-token/ } },
  { group: 'ids and pages', name: 'a projects page token that is a number', request: (t) => ({ method: 'GET', path: `/api/v2/projects?page-token=${page({ after: 5 })}`, headers: admin(t) }), expect: { status: 400, message: /page-token/ } },
  { group: 'ids and pages', name: 'an artifacts page token that is text', request: (t) => ({ method: 'GET', path: `${slug}/${t.jobNumber}/artifacts?page-token=${page({ after: 'x' })}`, headers: admin(t) }), expect: { status: 400, message: /page-token/ } },
  { group: 'ids and pages', name: 'a tests page token below -1', request: (t) => ({ method: 'GET', path: `${slug}/${t.jobNumber}/tests?page-token=${page({ after: -5 })}`, headers: admin(t) }), expect: { status: 400, message: /page-token/ } },
  { group: 'ids and pages', name: 'a pipeline id that is not a UUID', request: (t) => ({ method: 'GET', path: '/api/v2/pipeline/not-a-uuid', headers: admin(t) }), expect: { status: 404, message: /pipeline not found: not-a-uuid/ } },
  { group: 'ids and pages', name: 'a pipeline id nobody made', request: (t) => ({ method: 'GET', path: `/api/v2/pipeline/${uuid0}`, headers: admin(t) }), expect: { status: 404, message: /pipeline not found/ } },
  { group: 'ids and pages', name: 'the config of a pipeline nobody made', request: (t) => ({ method: 'GET', path: `/api/v2/pipeline/${uuid0}/config`, headers: admin(t) }), expect: { status: 404, message: /pipeline not found/ } },
  { group: 'ids and pages', name: 'a workflow id with SQL in it', request: (t) => ({ method: 'GET', path: `/api/v2/workflow/${encodeURIComponent("x' OR '1'='1")}`, headers: admin(t) }), expect: { status: 404, message: /workflow not found/ } },
  { group: 'ids and pages', name: 'cancelling a workflow nobody made', request: (t) => ({ method: 'POST', path: `/api/v2/workflow/${uuid0}/cancel`, headers: admin(t) }), expect: { status: 404, message: /workflow not found/ } },
  { group: 'ids and pages', name: 'approving with a request id that is not a UUID', request: (t) => ({ method: 'POST', path: `/api/v2/workflow/${t.workflowId}/approve/nope`, headers: admin(t) }), expect: { status: 404, message: /approval request not found/ } },
  { group: 'ids and pages', name: 'approving a job that is not an approval', request: (t) => ({ method: 'POST', path: `/api/v2/workflow/${t.workflowId}/approve/${uuid0}`, headers: admin(t) }), expect: { status: 404, message: /not found/ } },
  { group: 'ids and pages', name: 'a job number that is a word', request: (t) => ({ method: 'GET', path: `${slug}/job/abc`, headers: admin(t) }), expect: { status: 404, message: /job not found: abc/ } },
  { group: 'ids and pages', name: 'a job number past 2^31', request: (t) => ({ method: 'GET', path: `${slug}/job/99999999999`, headers: admin(t) }), expect: { status: 404, message: /job not found/ } },
  { group: 'ids and pages', name: 'a negative job number', request: (t) => ({ method: 'GET', path: `${slug}/job/-1`, headers: admin(t) }), expect: { status: 404, message: /job not found/ } },
  { group: 'ids and pages', name: 'a node index that is a word', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/steps?node_index=abc`, headers: admin(t) }), expect: { status: 400, message: /query\.node_index must be a whole number/ } },
  { group: 'ids and pages', name: 'a node index past the largest', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/steps?node_index=99999`, headers: admin(t) }), expect: { status: 400, message: /query\.node_index must be <= 9999/ } },
  { group: 'ids and pages', name: 'output without a step', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/output`, headers: admin(t) }), expect: { status: 400, message: /query\.step is required/ } },
  { group: 'ids and pages', name: 'output of step -1', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/output?step=-1`, headers: admin(t) }), expect: { status: 400, message: /query\.step must be >= 0/ } },
  { group: 'ids and pages', name: 'output of step 1.5', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/output?step=1.5`, headers: admin(t) }), expect: { status: 400, message: /query\.step must be a whole number/ } },
  { group: 'ids and pages', name: 'output of step 2^31', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/output?step=2147483648`, headers: admin(t) }), expect: { status: 400, message: /query\.step must be <= 99999/ } },
  { group: 'ids and pages', name: 'output of a step that never ran', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/output?step=7`, headers: admin(t) }), expect: { status: 404, message: /step not found: 7 of node 0/ } },
  { group: 'ids and pages', name: 'a live log of node "x"', request: (t) => ({ method: 'GET', path: `${slug}/job/${t.jobNumber}/output/stream?node_index=x`, headers: admin(t) }), expect: { status: 400, message: /query\.node_index/ } },
  { group: 'ids and pages', name: 'a branch filter of 2,000 characters', request: (t) => ({ method: 'GET', path: `${slug}/pipeline?branch=${'b'.repeat(2000)}`, headers: admin(t) }), expect: { status: 400, message: /query\.branch must NOT have more than 1024/ } },
  { group: 'ids and pages', name: 'an artifact link with a forged signature', request: () => ({ method: 'GET', path: `/output/artifact/${uuid0}/forged/x.txt` }), expect: { status: 404, message: /artifact not found/ } },
  { group: 'ids and pages', name: 'an artifact link with an id that is not a UUID', request: () => ({ method: 'GET', path: '/output/artifact/x/forged/x.txt' }), expect: { status: 404, message: /artifact not found: x/ } },
  { group: 'ids and pages', name: 'an artifact link with a 500-character signature', request: () => ({ method: 'GET', path: `/output/artifact/${uuid0}/${'s'.repeat(500)}/x` }), expect: { status: 400, message: /path\.signature must NOT have more than 200/ } },

  // ── Continuation (public, key in the body) ─────────────────────────────────────────────────
  { group: 'continuation', name: 'no key', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { configuration: 'version: 2.1' } }), expect: { status: 400, message: /body\.continuation-key is required/ } },
  { group: 'continuation', name: 'a key nobody issued', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': uuid0, configuration: 'version: 2.1\n' } }), expect: { status: 401, message: /continuation key/ } },
  { group: 'continuation', name: 'a key of 2,000 characters', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': 'k'.repeat(2000), configuration: 'x' } }), expect: { status: 400, message: /must NOT have more than 1024/ } },
  { group: 'continuation', name: 'an empty configuration', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': 'k', configuration: '' } }), expect: { status: 400, message: /body\.configuration must NOT have fewer than 1/ } },
  { group: 'continuation', name: 'a configuration of blanks', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': 'k', configuration: '   \n' } }), expect: { status: 400, message: /configuration is required/ } },
  { group: 'continuation', name: 'parameters as a string that is not JSON', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': 'k', configuration: 'x', parameters: '{nope' } }), expect: { status: 400, message: /parameters must be an object/ } },
  { group: 'continuation', name: 'parameters as a JSON list', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': 'k', configuration: 'x', parameters: '[1]' } }), expect: { status: 400, message: /parameters must be an object/ } },
  { group: 'continuation', name: 'a 20 MB body (refused before it is read)', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', raw: Buffer.from('POST /api/v2/pipeline/continue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n{"continuation-key": "') }), expect: { status: 413, message: /larger than this route accepts/ } },
  { group: 'continuation', name: 'a parameter value that is a list', request: () => ({ method: 'POST', path: '/api/v2/pipeline/continue', json: { 'continuation-key': 'k', configuration: 'x', parameters: { a: [1] } } }), expect: { status: 400, message: /body\.parameters/ } },

  // ── Admin routes ───────────────────────────────────────────────────────────────────────────
  { group: 'admin', name: 'a resource class name with spaces', request: (t) => ({ method: 'POST', path: '/api/v2/resource-classes', headers: admin(t), json: { name: 'a b', cpu: 1, memory_mb: 512 } }), expect: { status: 400, message: /name 'a b' must be/ } },
  { group: 'admin', name: 'a resource class with -1 CPUs', request: (t) => ({ method: 'POST', path: '/api/v2/resource-classes', headers: admin(t), json: { name: 'acme/neg', cpu: -1, memory_mb: 512 } }), expect: { status: 400, message: /cpu \(-1\) must be/ } },
  { group: 'admin', name: 'a resource class with memory in words', request: (t) => ({ method: 'POST', path: '/api/v2/resource-classes', headers: admin(t), json: { name: 'acme/words', cpu: 1, memory_mb: 'lots' } }), expect: { status: 400, message: /memory \(lots\) must be whole MiB/ } },
  { group: 'admin', name: 'a token for a resource class nobody made', request: (t) => ({ method: 'POST', path: '/api/v2/resource-classes/acme%2Fnone/tokens', headers: admin(t), json: {} }), expect: { status: 404, message: /resource class not found: acme\/none/ } },
  { group: 'admin', name: 'a concurrency limit on a scope that does not exist', request: (t) => ({ method: 'PUT', path: '/api/v2/concurrency-limits/galaxy/x', headers: admin(t), json: { max_running: 1 } }), expect: { status: 400, message: /path\.scope must be one of "project", "org"/ } },
  { group: 'admin', name: 'a concurrency limit of 0', request: (t) => ({ method: 'PUT', path: '/api/v2/concurrency-limits/org/acme', headers: admin(t), json: { max_running: 0 } }), expect: { status: 400, message: /body\.max_running/ } },
  { group: 'admin', name: 'a concurrency limit of 1.5', request: (t) => ({ method: 'PUT', path: '/api/v2/concurrency-limits/org/acme', headers: admin(t), json: { max_running: 1.5 } }), expect: { status: 400, message: /body\.max_running/ } },
  { group: 'admin', name: 'a concurrency limit sent as text', request: (t) => ({ method: 'PUT', path: '/api/v2/concurrency-limits/org/acme', headers: admin(t), json: { max_running: '5' } }), expect: { status: 400, message: /body\.max_running/ } },
  { group: 'admin', name: 'a project without a repository', request: (t) => ({ method: 'POST', path: '/api/v2/projects', headers: admin(t), json: { org: 'acme', name: 'x' } }), expect: { status: 400, message: /body\.repo_url is required/ } },
  { group: 'admin', name: 'a repository that is a git option', request: (t) => ({ method: 'POST', path: '/api/v2/projects', headers: admin(t), json: { org: 'acme', name: 'opt', repo_url: '--upload-pack=touch /tmp/gyre-pwned' } }), expect: { status: 400, message: /cannot read git repository/ } },
  { group: 'admin', name: 'a repository over the ext:: transport', request: (t) => ({ method: 'POST', path: '/api/v2/projects', headers: admin(t), json: { org: 'acme', name: 'ext', repo_url: 'ext::sh -c touch% /tmp/gyre-pwned' } }), expect: { status: 400, message: /cannot read git repository/ } },
  { group: 'admin', name: 'protected branch patterns that are not a list', request: (t) => ({ method: 'PUT', path: `${slug}/protected-branches`, headers: admin(t), json: { patterns: 'main' } }), expect: { status: 400, message: /body\.patterns must be a list/ } },
  { group: 'admin', name: '101 protected branch patterns', request: (t) => ({ method: 'PUT', path: `${slug}/protected-branches`, headers: admin(t), json: { patterns: Array.from({ length: 101 }, (_, i) => `p${i}`) } }), expect: { status: 400, message: /body\.patterns must NOT have more than 100/ } },
  { group: 'admin', name: 'an orb name without a namespace', request: (t) => ({ method: 'POST', path: '/api/v2/orbs', headers: admin(t), json: { name: 'tools', version: '1.0.0', source: 'version: 2.1\n' } }), expect: { status: 400, message: /orb/ } },
  { group: 'admin', name: 'an orb version that is not x.y.z', request: (t) => ({ method: 'POST', path: '/api/v2/orbs', headers: admin(t), json: { name: 'acme/tools', version: 'latest', source: 'version: 2.1\n' } }), expect: { status: 400, message: /version/ } },
  { group: 'admin', name: 'an orb whose source is not YAML', request: (t) => ({ method: 'POST', path: '/api/v2/orbs', headers: admin(t), json: { name: 'acme/tools', version: '1.0.0', source: 'jobs: [unclosed' } }), expect: { status: 400, message: /./ } },

  // ── Names and slugs ────────────────────────────────────────────────────────────────────────
  { group: 'names and slugs', name: 'a project slug with a vcs Gyre does not know', request: (t) => ({ method: 'GET', path: '/api/v2/project/svn/acme/target', headers: admin(t) }), expect: { status: 400, message: /project slug 'svn\/acme\/target' must look like gh\/<org>\/<repo>/ } },
  { group: 'names and slugs', name: 'a slug of dot segments', request: (t) => ({ method: 'GET', path: 'x', raw: Buffer.from(`GET /api/v2/project/gh/%2E%2E/%2E%2E HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nConnection: close\r\n\r\n`) }), expect: { status: 404, message: /project not found: gh\/\.\.\/\.\./ } },
  { group: 'names and slugs', name: 'a slug in Unicode', request: (t) => ({ method: 'GET', path: `/api/v2/project/gh/${encodeURIComponent('ᚠᛇᚻ')}/${encodeURIComponent('😀')}`, headers: admin(t) }), expect: { status: 404, message: /project not found/ } },
  { group: 'names and slugs', name: 'a slug segment of 300 characters', request: (t) => ({ method: 'GET', path: `/api/v2/project/gh/acme/${'r'.repeat(300)}`, headers: admin(t) }), expect: { status: 400, message: /path\.repo must NOT have more than 256/ } },
  { group: 'names and slugs', name: 'a project name with a slash', request: (t) => ({ method: 'POST', path: '/api/v2/projects', headers: admin(t), json: { org: 'acme', name: 'a/b', repo_url: '/tmp' } }), expect: { status: 400, message: /repository name 'a\/b' may use/ } },
  { group: 'names and slugs', name: 'an organisation name that starts with a dot', request: (t) => ({ method: 'POST', path: '/api/v2/projects', headers: admin(t), json: { org: '.hidden', name: 'x', repo_url: '/tmp' } }), expect: { status: 400, message: /organization '\.hidden' may use/ } },
  { group: 'names and slugs', name: 'a project that is already there', request: (t) => ({ method: 'POST', path: '/api/v2/projects', headers: admin(t), json: { org: 'acme', name: 'target', repo_url: '/tmp' } }), expect: { status: 409, message: /project gh\/acme\/target already exists/ } },
  { group: 'names and slugs', name: 'flaky tests of a project nobody made', request: (t) => ({ method: 'GET', path: '/api/v2/insights/gh/acme/nobody/flaky-tests', headers: admin(t) }), expect: { status: 404, message: /project not found: gh\/acme\/nobody/ } },
  { group: 'names and slugs', name: 'a trigger for a project nobody made', request: (t) => ({ method: 'POST', path: '/api/v2/project/gh/acme/nobody/pipeline', headers: admin(t), json: {} }), expect: { status: 404, message: /project not found: gh\/acme\/nobody/ } },

  // ── Agent API: claims, tokens, steps ───────────────────────────────────────────────────────
  { group: 'agent', name: 'a claim without a token', request: () => ({ method: 'POST', path: '/api/v2/agent/claim', json: {} }), expect: { status: 401, message: /resource-class token is not valid/ } },
  { group: 'agent', name: 'a claim with a user token', request: (t) => ({ method: 'POST', path: '/api/v2/agent/claim', headers: { Authorization: `Bearer ${t.token}` }, json: {} }), expect: { status: 401, message: /resource-class token is not valid/ } },
  { group: 'agent', name: 'a claim waiting -1 ms', request: (t) => ({ method: 'POST', path: '/api/v2/agent/claim', headers: { Authorization: `Bearer ${t.runnerToken}` }, json: { wait_ms: -1 } }), expect: { status: 400, message: /body\.wait_ms must be >= 0/ } },
  { group: 'agent', name: 'a claim waiting "forever"', request: (t) => ({ method: 'POST', path: '/api/v2/agent/claim', headers: { Authorization: `Bearer ${t.runnerToken}` }, json: { wait_ms: 'forever' } }), expect: { status: 400, message: /body\.wait_ms must be a whole number/ } },
  { group: 'agent', name: 'a runner id of 300 characters', request: (t) => ({ method: 'POST', path: '/api/v2/agent/claim', headers: { Authorization: `Bearer ${t.runnerToken}` }, json: { runner_id: 'r'.repeat(300) } }), expect: { status: 400, message: /body\.runner_id must NOT have more than 200/ } },
  { group: 'agent', name: 'a task call without a token', request: (t) => ({ method: 'GET', path: task(t) }), expect: { status: 401, message: /task token/ } },
  { group: 'agent', name: 'a task token with a forged signature', request: (t) => ({ method: 'GET', path: task(t), headers: { Authorization: `Bearer ${t.claimed.token.replace(/\.[^.]+$/, '.forged')}` } }), expect: { status: 401, message: /task token is not valid/ } },
  { group: 'agent', name: 'a task token with an attempt past 2^31 (crashed once)', request: (t) => ({ method: 'GET', path: task(t), headers: { Authorization: `Bearer gyre-task.${t.claimed.task.taskId}.${uuid0}.99999999999.AAAA` } }), expect: { status: 401, message: /task token is not valid/ } },
  { group: 'agent', name: "another task's token", request: (t) => ({ method: 'GET', path: task(t), headers: { Authorization: `Bearer ${t.other.token}` } }), expect: { status: 403, message: /task token is for another task/ } },
  { group: 'agent', name: "a token for this task on another task's path", request: (t) => ({ method: 'POST', path: `/api/v2/agent/task/${t.other.task.taskId}/complete`, headers: agent(t), json: { outcome: 'success' } }), expect: { status: 403, message: /another task/ } },
  { group: 'agent', name: 'a task id that is not a UUID', request: (t) => ({ method: 'GET', path: '/api/v2/agent/task/..%2F..', headers: agent(t) }), expect: { status: 403, message: /another task/ } },
  { group: 'agent', name: 'step -1 started', request: (t) => ({ method: 'POST', path: task(t, '/step/-1/started'), headers: agent(t), json: { name: 'x' } }), expect: { status: 400, message: /path\.index must be >= 0/ } },
  { group: 'agent', name: 'step "x" started', request: (t) => ({ method: 'POST', path: task(t, '/step/x/started'), headers: agent(t), json: { name: 'x' } }), expect: { status: 400, message: /path\.index must be a whole number/ } },
  { group: 'agent', name: 'step 2^31 started (crashed once)', request: (t) => ({ method: 'POST', path: task(t, '/step/2147483648/started'), headers: agent(t), json: { name: 'x' } }), expect: { status: 400, message: /path\.index must be <= 100000/ } },
  { group: 'agent', name: 'a step name of 5,000 characters', request: (t) => ({ method: 'POST', path: task(t, '/step/0/started'), headers: agent(t), json: { name: 'n'.repeat(5000) } }), expect: { status: 400, message: /body\.name must NOT have more than 4096/ } },
  { group: 'agent', name: 'a step finished with a status that does not exist', request: (t) => ({ method: 'POST', path: task(t, '/step/0/finished'), headers: agent(t), json: { status: 'great' } }), expect: { status: 400, message: /body\.status must be one of "success", "failed", "canceled", "skipped", "timedout"/ } },
  { group: 'agent', name: 'an exit code of 1.5', request: (t) => ({ method: 'POST', path: task(t, '/step/0/finished'), headers: agent(t), json: { status: 'success', exit_code: 1.5 } }), expect: { status: 400, message: /body\.exit_code/ } },
  { group: 'agent', name: 'an exit code past 2^31', request: (t) => ({ method: 'POST', path: task(t, '/step/0/finished'), headers: agent(t), json: { status: 'success', exit_code: 2 ** 40 } }), expect: { status: 400, message: /body\.exit_code/ } },
  { group: 'agent', name: 'a task completed with an outcome that does not exist', request: (t) => ({ method: 'POST', path: task(t, '/complete'), headers: agent(t), json: { outcome: 'victory' } }), expect: { status: 400, message: /body\.outcome must be one of "success", "failed", "canceled", "timedout"/ } },
  { group: 'agent', name: 'an output chunk numbered -1', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/-1'), headers: agent(t), body: 'x' }), expect: { status: 400, message: /path\.seq must be >= 0/ } },
  { group: 'agent', name: 'an output chunk numbered 2^31 (crashed once)', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/2147483648'), headers: agent(t), body: 'x' }), expect: { status: 400, message: /path\.seq must be <= 2147483647/ } },
  { group: 'agent', name: 'an output chunk over 4 MiB', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/0'), headers: agent(t), body: Buffer.alloc(5 * 1024 * 1024, 120) }), expect: { status: 413, message: /an output chunk may be at most 4194304 bytes/ } },
  { group: 'agent', name: 'a gzip chunk that holds more than it claims (a bomb)', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/0'), headers: agent(t, { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '100' }), body: gzipSync(Buffer.alloc(3_000_000)) }), expect: { status: 400, message: /holds more than the 100 bytes it claims/ } },
  { group: 'agent', name: 'an output chunk in brotli', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/0'), headers: agent(t, { 'Content-Encoding': 'br' }), body: 'x' }), expect: { status: 400, message: /Content-Encoding 'br' is not supported for output chunks \(allowed: gzip, identity\)/ } },
  { group: 'agent', name: 'a gzip chunk claiming 99,999,999,999 bytes', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/0'), headers: agent(t, { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '99999999999' }), body: gzipSync(Buffer.from('x')) }), expect: { status: 400, message: /from 0 to 4194304/ } },
  { group: 'agent', name: 'a gzip chunk claiming -5 bytes', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/0'), headers: agent(t, { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '-5' }), body: gzipSync(Buffer.from('x')) }), expect: { status: 400, message: /X-Gyre-Output-Bytes/ } },
  { group: 'agent', name: 'a gzip chunk that is not gzip', request: (t) => ({ method: 'PUT', path: task(t, '/step/0/output/0'), headers: agent(t, { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '5' }), body: 'hello' }), expect: { status: 400, message: /could not be read/ } },
  { group: 'agent', name: 'a cancellation wait of "x"', request: (t) => ({ method: 'GET', path: task(t, '/cancellation?wait_ms=x'), headers: agent(t) }), expect: { status: 400, message: /query\.wait_ms must be a whole number/ } },

  // ── Agent API: files ───────────────────────────────────────────────────────────────────────
  { group: 'agent files', name: 'a cache lookup without a key', request: (t) => ({ method: 'GET', path: task(t, '/cache'), headers: agent(t) }), expect: { status: 400, message: /query\.key is required/ } },
  { group: 'agent files', name: 'a cache key of 1,000 characters', request: (t) => ({ method: 'GET', path: task(t, `/cache?key=${'k'.repeat(1000)}`), headers: agent(t) }), expect: { status: 400, message: /query\.key must NOT have more than 900/ } },
  { group: 'agent files', name: 'a cache search with no keys', request: (t) => ({ method: 'POST', path: task(t, '/cache/find'), headers: agent(t), json: { keys: [] } }), expect: { status: 400, message: /body\.keys must NOT have fewer than 1 items/ } },
  { group: 'agent files', name: 'a cache search with 101 keys', request: (t) => ({ method: 'POST', path: task(t, '/cache/find'), headers: agent(t), json: { keys: Array.from({ length: 101 }, (_, i) => `k${i}`) } }), expect: { status: 400, message: /body\.keys must NOT have more than 100 items/ } },
  { group: 'agent files', name: 'a cache search with a number for a key', request: (t) => ({ method: 'POST', path: task(t, '/cache/find'), headers: agent(t), json: { keys: [1] } }), expect: { status: 400, message: /body\.keys\.0 must be a string/ } },
  { group: 'agent files', name: 'a cache id that is not a UUID', request: (t) => ({ method: 'GET', path: task(t, '/cache/..%2F..%2Fblobs'), headers: agent(t) }), expect: { status: 400, message: /is not a cache id/ } },
  { group: 'agent files', name: "a cache of another project", request: (t) => ({ method: 'GET', path: task(t, `/cache/${uuid0}`), headers: agent(t) }), expect: { status: 400, message: /is not in this project/ } },
  { group: 'agent files', name: 'a workspace layer id that is not a UUID', request: (t) => ({ method: 'GET', path: task(t, '/workspace/layers/x'), headers: agent(t) }), expect: { status: 400, message: /is not a layer id/ } },
  { group: 'agent files', name: 'a workspace layer of another workflow', request: (t) => ({ method: 'GET', path: task(t, `/workspace/layers/${uuid0}`), headers: agent(t) }), expect: { status: 400, message: /is not in this workflow/ } },
  { group: 'agent files', name: 'an Idempotency-Key with spaces', request: (t) => ({ method: 'PUT', path: task(t, '/artifacts?path=a.txt'), headers: agent(t, { 'Idempotency-Key': 'not a key!' }), body: 'x' }), expect: { status: 400, message: /Idempotency-Key header must be 1 to 128/ } },
  { group: 'agent files', name: 'an artifact path that climbs out', request: (t) => ({ method: 'PUT', path: task(t, '/artifacts?path=..%2F..%2Fetc%2Fpasswd'), headers: agent(t), body: 'x' }), expect: { status: 400, message: /'\.\.' would leave the root/ } },
  { group: 'agent files', name: 'an absolute artifact path', request: (t) => ({ method: 'PUT', path: task(t, '/artifacts?path=%2Fetc%2Fpasswd'), headers: agent(t), body: 'x' }), expect: { status: 400, message: /absolute|would leave/ } },
  { group: 'agent files', name: 'an artifact path with a NUL', request: (t) => ({ method: 'PUT', path: task(t, '/artifacts?path=a%00b'), headers: agent(t), body: 'x' }), expect: { status: 400, message: /query\.path holds a NUL/ } },
  { group: 'agent files', name: 'an artifact path of 5,000 characters', request: (t) => ({ method: 'PUT', path: task(t, `/artifacts?path=${'p'.repeat(5000)}`), headers: agent(t), body: 'x' }), expect: { status: 400, message: /query\.path must NOT have more than 4096/ } },
  { group: 'agent files', name: 'an artifact declared at 6 GiB (refused before it is read)', request: (t) => ({ method: 'PUT', path: task(t, '/artifacts?path=big.bin'), raw: Buffer.from(`PUT ${task(t, '/artifacts?path=big.bin')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.claimed.token}\r\nContent-Length: ${6 * 1024 ** 3}\r\n\r\nxxxx`) }), expect: { status: 413, message: /an artifact may be at most/ } },
  { group: 'agent files', name: 'test results with a line that is not JSON', request: (t) => ({ method: 'PUT', path: task(t, '/test-results'), headers: agent(t), body: '{"name": "a", "result": "success"}\n{nope\n' }), expect: { status: 400, message: /test results line 2 is not JSON/ } },
  { group: 'agent files', name: 'test results with a result that does not exist', request: (t) => ({ method: 'PUT', path: task(t, '/test-results'), headers: agent(t), body: '{"name": "a", "result": "maybe"}\n' }), expect: { status: 400, message: /line 1\.result must be one of success, failure, skipped/ } },
  { group: 'agent files', name: 'test results with one line over 1 MiB', request: (t) => ({ method: 'PUT', path: task(t, '/test-results'), headers: agent(t), body: `{"name": "${'n'.repeat(1_100_000)}"` }), expect: { status: 400, message: /longer than the limit of 1048576 bytes/ } },
  { group: 'agent files', name: 'test results as JSON that are not a list', request: (t) => ({ method: 'POST', path: task(t, '/test-results'), headers: agent(t), json: { cases: 'all passed' } }), expect: { status: 400, message: /body\.cases must be a list/ } },
  { group: 'agent files', name: 'a test that ran -1 seconds', request: (t) => ({ method: 'POST', path: task(t, '/test-results'), headers: agent(t), json: { cases: [{ name: 'a', result: 'success', run_time: -1 }] } }), expect: { status: 400, message: /cases\[0\]\.run_time must be a number of seconds/ } },
  { group: 'agent files', name: 'a test case that is a string', request: (t) => ({ method: 'POST', path: task(t, '/test-results'), headers: agent(t), json: { cases: ['passed'] } }), expect: { status: 400, message: /cases\[0\] must be a test case object/ } },

  // ── Config compilation ─────────────────────────────────────────────────────────────────────
  { group: 'compile', name: 'YAML that does not parse', request: compile('jobs: [unclosed'), expect: { compileError: /./ } },
  { group: 'compile', name: 'a billion laughs of aliases', request: compile(billionLaughs()), expect: { compileError: /alias|nodes|expand|limit/i } },
  { group: 'compile', name: 'merge keys that multiply', request: compile(mergeBomb()), expect: { compileError: /merge|alias|nodes|limit|<</i } },
  { group: 'compile', name: 'nesting 500 deep', request: compile(`version: 2.1\nx: ${'['.repeat(500)}${']'.repeat(500)}\n`), expect: { compileError: /deep|nest/i } },
  { group: 'compile', name: 'a parameter doubled 18 times (stalled the server once)', request: compile(hostileConfig('doubling')), expect: { compileError: /GYRE_COMPILE_MAX_BYTES/ } },
  { group: 'compile', name: 'a node bomb', request: compile(hostileConfig('node-bomb')), expect: { compileError: /GYRE_COMPILE_MAX_NODES|nodes/ } },
  { group: 'compile', name: 'a filter regex that does not parse', request: compile('version: 2.1\njobs: {a: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [{a: {filters: {branches: {only: "/(a+/"}}}}]}}\n'), expect: { compileError: /./ } },
  { group: 'compile', name: 'a version that does not exist', request: compile('version: 3\njobs: {}\n'), expect: { compileError: /version 3 is not supported/ } },
  { group: 'compile', name: 'a document that is a scalar', request: compile('just text\n'), expect: { compileError: /a config is a YAML map/ } },
  { group: 'compile', name: 'a matrix of a million jobs', request: compile(`version: 2.1\njobs: {a: {parameters: {x: {type: integer}, y: {type: integer}, z: {type: integer}}, docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [{a: {matrix: {parameters: {x: [${Array.from({ length: 100 }, (_, i) => i)}], y: [${Array.from({ length: 100 }, (_, i) => i)}], z: [${Array.from({ length: 100 }, (_, i) => i)}]}}}}]}}\n`), expect: { compileError: /more than \d+ jobs/ } },
  { group: 'compile', name: 'jobs that require each other', request: compile('version: 2.1\njobs: {a: {docker: [{image: x}], steps: [checkout]}, b: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [{a: {requires: [b]}}, {b: {requires: [a]}}]}}\n'), expect: { compileError: /cycle/ } },
  { group: 'compile', name: 'a job that is not defined', request: compile('version: 2.1\nworkflows: {w: {jobs: [nope]}}\n'), expect: { compileError: /job 'nope' is not defined/ } },
  { group: 'compile', name: 'an orb that is not in the registry', request: compile('version: 2.1\norbs: {x: acme/nothing@1.0.0}\nworkflows: {w: {jobs: [x/build]}}\n'), expect: { compileError: /acme\/nothing/ } },
  { group: 'compile', name: 'setup that is not a boolean', request: compile('version: 2.1\nsetup: "yes"\njobs: {a: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [a]}}\n'), expect: { compileError: /setup must be true or false/ } },
  { group: 'compile', name: 'a parameter of the wrong type', request: compile('version: 2.1\nparameters: {n: {type: integer, default: 1}}\njobs: {a: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [a]}}\n', { pipeline_parameters: { n: 'many' } }), expect: { compileError: /n/ } },
  { group: 'compile', name: 'a step that is not a step', request: compile(job('[{teleport: {to: mars}}]')), expect: { compileError: /teleport/ } },
  { group: 'compile', name: 'a workflow condition that is not logic', request: compile('version: 2.1\njobs: {a: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {when: {explode: []}, jobs: [a]}}\n'), expect: { compileError: /./ } },
  { group: 'compile', name: 'an executor that is not defined', request: compile('version: 2.1\njobs: {a: {executor: ghost, steps: [checkout]}}\nworkflows: {w: {jobs: [a]}}\n'), expect: { compileError: /ghost/ } },
  { group: 'compile', name: 'a config that is not a string', request: (t) => ({ method: 'POST', path: '/api/v2/compile-config-with-defaults', headers: admin(t), json: { config_yaml: { version: 2.1 } } }), expect: { status: 400, message: /body\.config_yaml must be a string/ } },
  { group: 'compile', name: 'a pipeline parameter that is an object', request: (t) => ({ method: 'POST', path: '/api/v2/compile-config-with-defaults', headers: admin(t), json: { config_yaml: 'version: 2.1', options: { pipeline_parameters: { x: { y: 1 } } } } }), expect: { status: 400, message: /body\.options\.pipeline_parameters/ } },
  { group: 'compile', name: 'a config over the size limit', request: compile(`version: 2.1\n# ${'x'.repeat(4 * 1024 * 1024 + 10)}\n`), expect: { compileError: /characters; the limit is/ } },
  { group: 'compile', name: 'a config twice the body limit', request: (t) => ({ method: 'POST', path: '/api/v2/compile-config-with-defaults', raw: Buffer.from(`POST /api/v2/compile-config-with-defaults HTTP/1.1\r\nHost: x\r\nCircle-Token: ${t.token}\r\nContent-Type: application/json\r\nContent-Length: ${9 * 1024 * 1024}\r\n\r\n{"config_yaml": "xxxx`) }), expect: { status: 413, message: /larger than this route accepts/ } },
  { group: 'compile', name: 'a job name of a megabyte', request: compile(`version: 2.1\njobs: {${'j'.repeat(1024 * 1024)}: {docker: [{image: x}], steps: [checkout]}}\nworkflows: {w: {jobs: [${'j'.repeat(1024 * 1024)}]}}\n`), expect: { compileError: /name 'j{60}… \(1048576 characters\)' must start with a letter and use only letters, digits, _ and - \(up to 255\)/ } },
  { group: 'compile', name: 'ten thousand steps in one job', request: compile(job(`[${Array.from({ length: 12_000 }, () => 'checkout').join(', ')}]`)), expect: { compileError: /steps/ } },
];

/** A request with a chunked body, as bytes. */
function chunked(path: string, headers: Record<string, string>, body: Buffer): Buffer {
  const head = [`POST ${path} HTTP/1.1`, 'Host: x', 'Transfer-Encoding: chunked', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)].join('\r\n');
  const parts: Buffer[] = [Buffer.from(`${head}\r\n\r\n`)];
  for (let i = 0; i < body.length; i += 64 * 1024) {
    const piece = body.subarray(i, i + 64 * 1024);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}
