import { readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/**
 * A stand-in for Amazon ECR's API, for GetAuthorizationToken only, held to the published AWS API
 * model (test/fixtures/aws/ecr-get-authorization-token.smithy.json) and Smithy's awsJson1_1
 * protocol: a POST to `/` with `X-Amz-Target: <service shape>.<operation>`, `Content-Type:
 * application/x-amz-json-1.1`, a JSON body of the input shape's members, signed with Signature
 * Version 4 for the model's signing name; errors as JSON with `__type`. What a request gets wrong
 * is listed in `problems` (a test expects none).
 */
export interface EcrStandIn {
  /** The endpoint to give the client. */
  readonly url: string;
  readonly requests: Array<{ method: string; path: string; headers: IncomingHttpHeaders; body: string }>;
  /** Ways the requests broke the model or the protocol. */
  readonly problems: string[];
  close(): Promise<void>;
}

interface Shape {
  readonly type: string;
  readonly members?: Record<string, { readonly target: string }>;
  readonly member?: { readonly target: string };
  readonly operations?: { readonly target: string }[];
  readonly input?: { readonly target: string };
  readonly output?: { readonly target: string };
  readonly traits?: Record<string, any>;
}

const model = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'aws', 'ecr-get-authorization-token.smithy.json'), 'utf8')) as { shapes: Record<string, Shape> };
const [serviceId, service] = Object.entries(model.shapes).find(([, s]) => s.type === 'service')!;
const serviceName = serviceId.split('#')[1];
const operationId = 'com.amazonaws.ecr#GetAuthorizationToken';
const operation = model.shapes[operationId];
const signingName: string = service.traits!['aws.auth#sigv4'].name;

/** Problems of `value` against the shape `id` (members by name, lists, strings, timestamps as epoch seconds). */
function check(value: unknown, id: string, path: string): string[] {
  const shape = model.shapes[id];
  if (!shape) return [];
  if (shape.type === 'structure') {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return [`${path} is not an object`];
    return Object.entries(value).flatMap(([k, v]) => (shape.members?.[k] ? check(v, shape.members[k].target, `${path}.${k}`) : [`${path}.${k} is not a member of ${id}`]));
  }
  if (shape.type === 'list') return Array.isArray(value) ? value.flatMap((v, i) => check(v, shape.member!.target, `${path}[${i}]`)) : [`${path} is not a list`];
  if (shape.type === 'timestamp') return typeof value === 'number' ? [] : [`${path} is not epoch seconds (awsJson1_1 timestamps)`];
  if (shape.type === 'string') {
    const pattern = shape.traits?.['smithy.api#pattern'];
    if (typeof value !== 'string') return [`${path} is not a string`];
    return pattern && !new RegExp(pattern).test(value) ? [`${path} does not match ${pattern}`] : [];
  }
  return [];
}

export async function startEcrStandIn(answer: { status: number; body: unknown }): Promise<EcrStandIn> {
  const requests: EcrStandIn['requests'] = [];
  const problems: string[] = [];
  if (answer.status < 300) problems.push(...check(answer.body, operation.output!.target, 'answer'));
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      if (req.method !== 'POST' || req.url !== '/') problems.push(`${req.method} ${req.url}: awsJson1_1 requests are POST /`);
      if (req.headers['content-type'] !== 'application/x-amz-json-1.1') problems.push(`Content-Type ${req.headers['content-type']}: awsJson1_1 wants application/x-amz-json-1.1`);
      const target = String(req.headers['x-amz-target']);
      const [targetService, targetOperation] = target.split('.');
      if (targetService !== serviceName || !service.operations!.some((o) => o.target === `com.amazonaws.ecr#${targetOperation}`)) problems.push(`X-Amz-Target ${target} names no operation of ${serviceName}`);
      let input: unknown;
      try {
        input = JSON.parse(body);
      } catch {
        problems.push(`the body is not JSON: ${body.slice(0, 100)}`);
      }
      if (input !== undefined) problems.push(...check(input, operation.input!.target, 'input'));
      const credential = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}$/.exec(String(req.headers.authorization));
      if (!credential) problems.push(`Authorization is not Signature Version 4: ${req.headers.authorization}`);
      else {
        if (credential[4] !== signingName) problems.push(`signed for the service '${credential[4]}', the model's signing name is '${signingName}'`);
        const signed = credential[5].split(';');
        for (const h of ['host', 'x-amz-date', 'x-amz-target']) if (!signed.includes(h)) problems.push(`the signature does not cover ${h}`);
        if (!String(req.headers['x-amz-date']).startsWith(credential[2])) problems.push('the credential scope date is not the X-Amz-Date day');
      }
      res.writeHead(answer.status, { 'Content-Type': 'application/x-amz-json-1.1', 'x-amzn-RequestId': 'stand-in' });
      res.end(JSON.stringify(answer.body));
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

/** The region a request was signed for (its credential scope). */
export function signedRegion(headers: IncomingHttpHeaders): string | undefined {
  return /Credential=[^/]+\/\d{8}\/([a-z0-9-]+)\//.exec(String(headers.authorization))?.[1];
}
