import { readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/**
 * A stand-in for AWS STS, for AssumeRoleWithWebIdentity only, held to the published AWS API model
 * (test/fixtures/aws/sts-assume-role-with-web-identity.smithy.json) and Smithy's awsQuery
 * protocol: a form-encoded POST to `/` with `Action` and `Version` (the service's version) beside
 * the input's members, answered in XML (`<Op>Response><Op>Result>…`, errors as `<ErrorResponse>`
 * with the error's awsQueryError code). The operation has `smithy.api#auth: []`: a request that
 * is signed anyway (an SDK falling back on ambient keys) is a problem. What a request gets wrong is
 * listed in `problems` (a test expects none).
 */
export interface StsStandIn {
  /** The endpoint to give the client. */
  readonly url: string;
  readonly requests: Array<{ method: string; path: string; headers: IncomingHttpHeaders; params: Record<string, string> }>;
  /** Ways the requests (or the answer the test gave) broke the model or the protocol. */
  readonly problems: string[];
  close(): Promise<void>;
}

/** What the stand-in answers: the operation's output, or one of its errors by awsQuery code. */
export type StsAnswer = { readonly output: Record<string, unknown> } | { readonly error: { readonly code: string; readonly message: string } };

interface Shape {
  readonly type: string;
  readonly members?: Record<string, { readonly target: string; readonly traits?: Record<string, unknown> }>;
  readonly member?: { readonly target: string };
  readonly operations?: { readonly target: string }[];
  readonly input?: { readonly target: string };
  readonly output?: { readonly target: string };
  readonly errors?: { readonly target: string }[];
  readonly version?: string;
  readonly traits?: Record<string, any>;
}

const model = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'aws', 'sts-assume-role-with-web-identity.smithy.json'), 'utf8')) as { shapes: Record<string, Shape> };
const [, service] = Object.entries(model.shapes).find(([, s]) => s.type === 'service')!;
const OPERATION = 'AssumeRoleWithWebIdentity';
const operation = model.shapes[`com.amazonaws.sts#${OPERATION}`];
const xmlNamespace: string = service.traits!['smithy.api#xmlNamespace'].uri;

/** Problems of a scalar against its shape (length, pattern, range). */
function checkScalar(value: string | number, id: string, path: string): string[] {
  const shape = model.shapes[id];
  if (!shape) return [];
  const traits = shape.traits ?? {};
  if (shape.type === 'string') {
    if (typeof value !== 'string') return [`${path} is not a string`];
    const out: string[] = [];
    const length = traits['smithy.api#length'];
    if (length && (value.length < (length.min ?? 0) || value.length > (length.max ?? Infinity))) out.push(`${path} is ${value.length} characters, the model allows ${length.min ?? 0} to ${length.max ?? '∞'}`);
    const pattern = traits['smithy.api#pattern'];
    if (pattern && !new RegExp(pattern).test(value)) out.push(`${path} does not match ${pattern}`);
    return out;
  }
  if (shape.type === 'integer') {
    const n = Number(value);
    if (!Number.isInteger(n)) return [`${path} is not an integer`];
    const range = traits['smithy.api#range'];
    return range && (n < (range.min ?? -Infinity) || n > (range.max ?? Infinity)) ? [`${path} (${n}) is outside ${range.min}..${range.max}`] : [];
  }
  if (shape.type === 'timestamp') return typeof value === 'string' && !Number.isNaN(Date.parse(value)) ? [] : [`${path} is not a date-time (awsQuery timestamps)`];
  return [];
}

/** Problems of a structure against its shape: unknown members, missing required ones, bad scalars. */
function checkStructure(value: Record<string, unknown>, id: string, path: string): string[] {
  const shape = model.shapes[id];
  const out: string[] = [];
  for (const [name, member] of Object.entries(shape.members ?? {})) {
    if (member.traits?.['smithy.api#required'] !== undefined && value[name] === undefined) out.push(`${path}.${name} is required`);
  }
  for (const [name, v] of Object.entries(value)) {
    const member = shape.members?.[name];
    if (!member) {
      out.push(`${path}.${name} is not a member of ${id}`);
      continue;
    }
    const target = model.shapes[member.target];
    if (target?.type === 'structure') out.push(...(typeof v === 'object' && v !== null ? checkStructure(v as Record<string, unknown>, member.target, `${path}.${name}`) : [`${path}.${name} is not a structure`]));
    else out.push(...checkScalar(v as string | number, member.target, `${path}.${name}`));
  }
  return out;
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function toXml(value: unknown): string {
  if (typeof value !== 'object' || value === null) return escapeXml(String(value));
  return Object.entries(value)
    .map(([k, v]) => `<${k}>${toXml(v)}</${k}>`)
    .join('');
}

/** The awsQuery error codes of the operation's errors the fixture holds. */
function errorCodes(): Map<string, number> {
  const codes = new Map<string, number>();
  for (const { target } of operation.errors ?? []) {
    const error = model.shapes[target]?.traits?.['aws.protocols#awsQueryError'];
    if (error) codes.set(error.code, error.httpResponseCode);
  }
  return codes;
}

export async function startStsStandIn(answer: StsAnswer): Promise<StsStandIn> {
  const requests: StsStandIn['requests'] = [];
  const problems: string[] = [];
  let status = 200;
  if ('output' in answer) problems.push(...checkStructure(answer.output, operation.output!.target, 'answer'));
  else {
    const code = errorCodes().get(answer.error.code);
    if (code === undefined) problems.push(`answer: ${answer.error.code} is not an awsQuery error code of ${OPERATION}`);
    status = code ?? 400;
  }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const params = Object.fromEntries(new URLSearchParams(body));
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, params });
      if (req.method !== 'POST' || req.url !== '/') problems.push(`${req.method} ${req.url}: awsQuery requests are POST /`);
      if (!String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) problems.push(`Content-Type ${req.headers['content-type']}: awsQuery wants application/x-www-form-urlencoded`);
      if (params.Action !== OPERATION) problems.push(`Action ${params.Action}: the stand-in answers ${OPERATION} only`);
      if (params.Version !== service.version) problems.push(`Version ${params.Version}: the service's version is ${service.version}`);
      // smithy.api#auth [] and optionalAuth: the request is not signed.
      if (req.headers.authorization !== undefined) problems.push(`${OPERATION} is not signed (smithy.api#auth []), but the request has Authorization: ${String(req.headers.authorization).slice(0, 60)}`);
      const { Action: _action, Version: _version, ...input } = params;
      // Lists and structures go as `Name.member.N…`; only the top-level name is checked here.
      const scalars: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(input)) scalars[k.split('.')[0]] = k.includes('.') ? {} : v;
      problems.push(...checkStructure(scalars, operation.input!.target, 'input').filter((p) => !/ is not a structure$/.test(p)));
      const requestId = `stand-in-${requests.length}`;
      res.writeHead(status, { 'Content-Type': 'text/xml', 'x-amzn-RequestId': requestId });
      if ('output' in answer) {
        res.end(`<${OPERATION}Response xmlns="${xmlNamespace}"><${OPERATION}Result>${toXml(answer.output)}</${OPERATION}Result><ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${OPERATION}Response>`);
      } else {
        res.end(`<ErrorResponse xmlns="${xmlNamespace}"><Error><Type>Sender</Type><Code>${escapeXml(answer.error.code)}</Code><Message>${escapeXml(answer.error.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    requests,
    problems,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
