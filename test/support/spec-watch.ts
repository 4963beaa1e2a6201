import { ServerResponse } from 'node:http';
import { checkAnswer, specOperationOf, type SpecViolation } from './circleci-spec';

/**
 * Every answer an HTTP server in this test process gives under `/api/v2/`, checked against
 * CircleCI's API v2 description (test/support/circleci-spec.ts), whoever asked: the test's own
 * fetches, the npm API clients, the CLI, Chromium driving the UI. Gyre runs in the test's process,
 * so its answers pass through node:http's ServerResponse, which this wraps for the length of one
 * test file (test/setup-spec-watch.ts installs it and takes it off again).
 *
 * Only JSON bodies of 2xx answers to operations the description has are kept and checked; streams
 * (live logs, downloads) are passed through untouched.
 */
export interface SpecWatch {
  /** Violations seen since the last call, and forgets them. */
  take(): SpecViolation[];
  /** How many answers have been checked so far. */
  checked(): number;
  /** Puts ServerResponse back as it was. */
  stop(): void;
}

const BODY = Symbol('gyre.specWatch.body');
const TYPE = Symbol('gyre.specWatch.contentType');
const MAX_BODY = 8 * 1024 * 1024;

type Watched = ServerResponse & { [BODY]?: Buffer[] | null; [TYPE]?: string };

/**
 * The answer's content type: set with setHeader, or given to writeHead as an object or a flat
 * list (as fastify does), which getHeader never sees.
 */
function contentTypeOf(res: Watched): string {
  return String(res.getHeader('content-type') ?? res[TYPE] ?? '');
}

function noteHeaders(res: Watched, headers: unknown): void {
  if (!headers || typeof headers !== 'object') return;
  if (Array.isArray(headers)) {
    const flat = Array.isArray(headers[0]) ? (headers as unknown[][]).flat() : headers;
    for (let i = 0; i + 1 < flat.length; i += 2) if (String(flat[i]).toLowerCase() === 'content-type') res[TYPE] = String(flat[i + 1]);
    return;
  }
  for (const [name, value] of Object.entries(headers)) if (name.toLowerCase() === 'content-type') res[TYPE] = String(value);
}

function isWatched(res: Watched): boolean {
  const url = res.req?.url;
  return typeof url === 'string' && url.startsWith('/api/v2/');
}

/** Chunks of a JSON answer worth checking, started on the first write; null once it is not one. */
function bodyOf(res: Watched): Buffer[] | null {
  if (res[BODY] !== undefined) return res[BODY];
  const type = contentTypeOf(res);
  res[BODY] = isWatched(res) && res.statusCode >= 200 && res.statusCode < 300 && /json/.test(type) ? [] : null;
  return res[BODY];
}

function collect(res: Watched, chunk: unknown, encoding: unknown): void {
  if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
  const body = bodyOf(res);
  if (!body) return;
  const buf = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : Buffer.from(chunk as Uint8Array);
  if (body.reduce((n, b) => n + b.length, buf.length) > MAX_BODY) res[BODY] = null;
  else body.push(buf);
}

export function watchSpec(): SpecWatch {
  const proto = ServerResponse.prototype as any;
  const originalWriteHead = proto.writeHead;
  const originalWrite = proto.write;
  const originalEnd = proto.end;
  let seen: SpecViolation[] = [];
  let checked = 0;

  proto.writeHead = function writeHead(this: Watched, statusCode: number, ...rest: unknown[]) {
    if (isWatched(this)) noteHeaders(this, typeof rest[0] === 'string' ? rest[1] : rest[0]);
    return originalWriteHead.call(this, statusCode, ...rest);
  };
  proto.write = function write(this: Watched, chunk: unknown, encoding?: unknown, ...rest: unknown[]) {
    if (isWatched(this)) collect(this, chunk, encoding);
    return originalWrite.call(this, chunk, encoding, ...rest);
  };
  proto.end = function end(this: Watched, chunk?: unknown, encoding?: unknown, ...rest: unknown[]) {
    if (isWatched(this) && !this.writableEnded) {
      collect(this, chunk, encoding);
      const body = bodyOf(this);
      if (body) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(body).toString('utf8'));
        } catch {
          parsed = undefined;
        }
        const violation =
          parsed === undefined
            ? // Only an operation of the description: Gyre's own routes (the agent API) and test doubles answer as they like.
              !specOperationOf(this.req.method ?? 'GET', this.req.url!)
              ? undefined
              : { request: `${this.req.method} ${this.req.url} → ${this.statusCode}`, operation: 'JSON answer', problems: ['the body is not JSON although its content-type says so'] }
            : checkAnswer(this.req.method ?? 'GET', this.req.url!, this.statusCode, parsed, contentTypeOf(this));
        checked++;
        if (violation) seen.push(violation);
      }
    }
    return originalEnd.call(this, chunk, encoding, ...rest);
  };

  return {
    take() {
      const out = seen;
      seen = [];
      return out;
    },
    checked: () => checked,
    stop() {
      proto.writeHead = originalWriteHead;
      proto.write = originalWrite;
      proto.end = originalEnd;
    },
  };
}

/** One line per violation, for a failing test's message. */
export function describeViolations(violations: readonly SpecViolation[]): string {
  return violations.map((v) => `${v.request} does not fit CircleCI's API v2 description (${v.operation}): ${v.problems.join('; ')}`).join('\n');
}
