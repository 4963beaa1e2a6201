import { createHash, createHmac } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/**
 * Registry credentials for an Amazon ECR image from a job's `aws_auth` (CircleCI's
 * `aws_access_key_id` and `aws_secret_access_key`): ECR's GetAuthorizationToken, signed with
 * Signature Version 4, answers with a password for the user `AWS`.
 */
export interface EcrCredentialsOptions {
  /** The image's registry host, `<account>.dkr.ecr.<region>.amazonaws.com`. */
  readonly registry: string;
  readonly awsAuth: Readonly<Record<string, string>>;
  /** The ECR API endpoint. @default - https://api.ecr.<region>.amazonaws.com (.com.cn in China) */
  readonly endpoint?: string;
}

/** The region of an ECR registry host, or undefined when the host is not ECR's. */
export function ecrRegion(registry: string): string | undefined {
  return /^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/.exec(registry)?.[1];
}

export async function ecrCredentials(options: EcrCredentialsOptions): Promise<{ username: string; password: string }> {
  const { registry, awsAuth } = options;
  const region = ecrRegion(registry);
  if (!region) throw new Error(`aws_auth is for Amazon ECR images (<account>.dkr.ecr.<region>.amazonaws.com); '${registry}' is not one`);
  const accessKeyId = awsAuth.aws_access_key_id;
  const secretAccessKey = awsAuth.aws_secret_access_key;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error(
      awsAuth.oidc_role_arn
        ? 'aws_auth with oidc_role_arn is not supported (Gyre issues no OIDC tokens); give aws_access_key_id and aws_secret_access_key'
        : 'aws_auth needs aws_access_key_id and aws_secret_access_key',
    );
  }
  const url = new URL(options.endpoint ?? `https://api.ecr.${region}.amazonaws.com${registry.endsWith('.cn') ? '.cn' : ''}/`);
  const body = '{}';
  const headers: Record<string, string> = {
    'content-type': 'application/x-amz-json-1.1',
    host: url.host,
    'x-amz-date': amzDate(new Date()),
    'x-amz-target': 'AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken',
  };
  headers.authorization = signV4({ method: 'POST', path: url.pathname, query: '', headers, body }, { accessKeyId, secretAccessKey }, { region, service: 'ecr' });
  const { status, text } = await post(url, headers, body);
  let answer: any;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = undefined;
  }
  if (status >= 400) throw new Error(`ECR GetAuthorizationToken for ${registry} → ${status}: ${answer?.message ?? answer?.Message ?? text}`);
  const token = answer?.authorizationData?.[0]?.authorizationToken;
  const decoded = typeof token === 'string' ? Buffer.from(token, 'base64').toString('utf8') : '';
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw new Error(`ECR GetAuthorizationToken for ${registry} gave no token`);
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** `20150830T123600Z`: the time Signature Version 4 signs. */
export function amzDate(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

/**
 * The Authorization header of AWS Signature Version 4 for a request whose headers (names in lower
 * case, with `x-amz-date` or `date`) are all signed. `query` is already canonical (sorted, encoded).
 */
export function signV4(
  request: { readonly method: string; readonly path: string; readonly query: string; readonly headers: Readonly<Record<string, string>>; readonly body: string },
  credentials: { readonly accessKeyId: string; readonly secretAccessKey: string },
  scope: { readonly region: string; readonly service: string },
): string {
  const sha256 = (data: string) => createHash('sha256').update(data, 'utf8').digest('hex');
  const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();
  const names = Object.keys(request.headers).sort();
  const signedHeaders = names.join(';');
  const canonical = [
    request.method,
    request.path,
    request.query,
    ...names.map((n) => `${n}:${request.headers[n].trim().replace(/\s+/g, ' ')}`),
    '',
    signedHeaders,
    sha256(request.body),
  ].join('\n');
  const time = request.headers['x-amz-date'] ?? amzDate(new Date(request.headers.date));
  const date = time.slice(0, 8);
  const credentialScope = `${date}/${scope.region}/${scope.service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', time, credentialScope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${credentials.secretAccessKey}`, date), scope.region), scope.service), 'aws4_request');
  const signature = createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
  return `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${credentialScope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
}

function post(url: URL, headers: Record<string, string>, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    const req = send(url, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error(`ECR did not answer within 30 s (${url.host})`)));
    req.end(body);
  });
}
