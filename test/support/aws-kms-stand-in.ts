import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomUUID, type Hash, type Hmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
// The signer the AWS SDK signs with (a dependency of @aws-sdk/client-kms), to check signatures.
import { SignatureV4 } from '@smithy/signature-v4';

/**
 * A stand-in for AWS KMS's Encrypt and Decrypt, for the official client pointed at it: Smithy's
 * awsJson1_1 protocol (`POST /`, `X-Amz-Target: TrentService.<Operation>`, `Content-Type:
 * application/x-amz-json-1.1`, a JSON body with blobs in base64, errors as `{ __type, message }`
 * with status 400), signed with Signature Version 4 for the service `kms`: the signature is
 * computed again with the stand-in's credentials (UnrecognizedClientException for another access
 * key, InvalidSignatureException for a wrong signature). Keys are symmetric and in memory;
 * aliases point at them.
 *
 * Like KMS, a ciphertext names the key that made it and is bound to the encryption context:
 * Decrypt refuses another context (InvalidCiphertextException) and a KeyId that is not the
 * ciphertext's key (IncorrectKeyException). What a request gets wrong is listed in `problems`.
 */
export interface AwsKmsStandIn {
  /** The endpoint to give the client. */
  readonly url: string;
  readonly region: string;
  /** Every request: its operation, headers and body as sent. */
  readonly requests: Array<{ target: string; headers: IncomingHttpHeaders; body: string }>;
  /** Every plaintext the stand-in saw: sent to Encrypt, or answered to Decrypt. */
  readonly plaintexts: Buffer[];
  readonly problems: string[];
  /** Makes a key; answers its ARN. */
  createKey(): string;
  /** Points `alias/<name>` at a key (made or moved). */
  setAlias(alias: string, keyArn: string): void;
  close(): Promise<void>;
}

const ACCOUNT = '111122223333';

/** The credentials the stand-in accepts. */
export const AWS_KMS_STAND_IN_CREDENTIALS = { accessKeyId: 'AKIAGYRESTANDIN00001', secretAccessKey: 'gyre-stand-in-secret-access-key' } as const;

type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytesOf(data: SourceData): string | Buffer {
  if (typeof data === 'string') return data;
  return ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data);
}

/** SHA-256 and HMAC-SHA256 in the shape the signer takes. */
class NodeSha256 {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytesOf(this.secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytesOf(data));
  }
  async digest(): Promise<Uint8Array> {
    return this.hash.digest();
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

const signer = new SignatureV4({ service: 'kms', region: 'us-east-1', credentials: AWS_KMS_STAND_IN_CREDENTIALS, sha256: NodeSha256 });

/** Why the request's Signature Version 4 does not hold, or undefined when it does. */
async function checkSignature(req: IncomingMessage, body: string, region: string): Promise<KmsError | undefined> {
  const auth = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(String(req.headers.authorization ?? ''));
  if (!auth) return new KmsError('MissingAuthenticationTokenException', 'Missing Authentication Token');
  if (auth[1] !== AWS_KMS_STAND_IN_CREDENTIALS.accessKeyId) return new KmsError('UnrecognizedClientException', 'The security token included in the request is invalid.');
  const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(String(req.headers['x-amz-date'] ?? ''));
  if (!date || !date[0].startsWith(auth[2])) return new KmsError('InvalidSignatureException', 'X-Amz-Date is missing or not the credential scope date');
  const names = auth[5].split(';');
  const headers = Object.fromEntries(names.map((name) => [name, String(req.headers[name] ?? '')]));
  const [hostname, port] = String(req.headers.host).split(':');
  const signed = await signer.sign(
    { method: req.method ?? 'POST', protocol: 'http:', hostname, port: Number(port), path: req.url ?? '/', query: {}, headers, body },
    { signingDate: new Date(Date.UTC(+date[1], +date[2] - 1, +date[3], +date[4], +date[5], +date[6])), signingRegion: auth[3], signingService: auth[4] },
  );
  if (signed.headers.authorization !== req.headers.authorization) return new KmsError('InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.');
  if (auth[3] !== region || auth[4] !== 'kms') return new KmsError('InvalidSignatureException', `Credential should be scoped to a valid region and to the service 'kms', not ${auth[3]}/${auth[4]}`);
  return undefined;
}

class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** The encryption context as GCM additional data: its pairs in key order. */
function contextAad(context: unknown): Buffer {
  const pairs = context && typeof context === 'object' ? Object.entries(context as Record<string, string>).sort(([a], [b]) => a.localeCompare(b)) : [];
  return Buffer.from(JSON.stringify(pairs), 'utf8');
}

export async function startAwsKmsStandIn(region = 'us-east-1'): Promise<AwsKmsStandIn> {
  const keys = new Map<string, Buffer>();
  const aliases = new Map<string, string>();
  const requests: AwsKmsStandIn['requests'] = [];
  const plaintexts: Buffer[] = [];
  const problems: string[] = [];

  const resolveKey = (keyId: unknown): string => {
    if (typeof keyId !== 'string' || keyId === '') throw new KmsError('ValidationException', 'KeyId is required');
    const aliasArn = /^arn:aws:kms:[^:]+:\d{12}:(alias\/.+)$/.exec(keyId)?.[1];
    const arn = keys.has(keyId)
      ? keyId
      : keyId.startsWith('alias/') || aliasArn
        ? aliases.get(aliasArn ?? keyId)
        : [...keys.keys()].find((k) => k.endsWith(`:key/${keyId}`));
    if (!arn) throw new KmsError('NotFoundException', `Key '${keyId}' does not exist`);
    return arn;
  };

  const encrypt = (input: Record<string, unknown>) => {
    const arn = resolveKey(input.KeyId);
    if (typeof input.Plaintext !== 'string') throw new KmsError('ValidationException', 'Plaintext is required');
    const plaintext = Buffer.from(input.Plaintext, 'base64');
    if (plaintext.length < 1 || plaintext.length > 4096) throw new KmsError('ValidationException', 'Plaintext must be 1 to 4096 bytes');
    plaintexts.push(plaintext);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', keys.get(arn)!, iv);
    cipher.setAAD(contextAad(input.EncryptionContext));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const name = Buffer.from(arn, 'utf8');
    const blob = Buffer.concat([Buffer.from([name.length]), name, iv, cipher.getAuthTag(), body]);
    return { CiphertextBlob: blob.toString('base64'), KeyId: arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
  };

  const decrypt = (input: Record<string, unknown>) => {
    if (typeof input.CiphertextBlob !== 'string') throw new KmsError('ValidationException', 'CiphertextBlob is required');
    const blob = Buffer.from(input.CiphertextBlob, 'base64');
    const invalid = () => new KmsError('InvalidCiphertextException', '');
    if (blob.length < 1 + blob[0] + 28) throw invalid();
    const arn = blob.subarray(1, 1 + blob[0]).toString('utf8');
    if (!keys.has(arn)) throw invalid();
    if (input.KeyId !== undefined && resolveKey(input.KeyId) !== arn) {
      throw new KmsError('IncorrectKeyException', 'The key ID in the request does not identify a CMK that can perform this operation.');
    }
    const at = 1 + blob[0];
    const decipher = createDecipheriv('aes-256-gcm', keys.get(arn)!, blob.subarray(at, at + 12));
    decipher.setAAD(contextAad(input.EncryptionContext));
    decipher.setAuthTag(blob.subarray(at + 12, at + 28));
    let plaintext: Buffer;
    try {
      plaintext = Buffer.concat([decipher.update(blob.subarray(at + 28)), decipher.final()]);
    } catch {
      throw invalid();
    }
    plaintexts.push(plaintext);
    return { KeyId: arn, Plaintext: plaintext.toString('base64'), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
  };

  const handle = async (req: IncomingMessage, body: string): Promise<{ status: number; value: unknown }> => {
    const target = String(req.headers['x-amz-target'] ?? '');
    requests.push({ target, headers: req.headers, body });
    try {
      if (req.method !== 'POST' || req.url !== '/') problems.push(`${req.method} ${req.url}: awsJson1_1 requests are POST /`);
      if (req.headers['content-type'] !== 'application/x-amz-json-1.1') problems.push(`Content-Type ${req.headers['content-type']}: awsJson1_1 wants application/x-amz-json-1.1`);
      const refused = await checkSignature(req, body, region);
      if (refused) throw refused;
      if (!/SignedHeaders=[^,]*\bx-amz-target\b/.test(String(req.headers.authorization))) problems.push('the signature does not cover x-amz-target');
      let input: Record<string, unknown>;
      try {
        input = JSON.parse(body);
      } catch {
        throw new KmsError('SerializationException', 'the body is not JSON');
      }
      if (target === 'TrentService.Encrypt') return { status: 200, value: encrypt(input) };
      if (target === 'TrentService.Decrypt') return { status: 200, value: decrypt(input) };
      throw new KmsError('UnknownOperationException', `no operation ${target}`);
    } catch (error) {
      if (!(error instanceof KmsError)) throw error;
      return { status: 400, value: { __type: error.type, message: error.message } };
    }
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void handle(req, Buffer.concat(chunks).toString('utf8')).then(({ status, value }) => {
        res.writeHead(status, { 'Content-Type': 'application/x-amz-json-1.1', 'x-amzn-RequestId': randomUUID() });
        res.end(JSON.stringify(value));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    region,
    requests,
    plaintexts,
    problems,
    createKey() {
      const arn = `arn:aws:kms:${region}:${ACCOUNT}:key/${randomUUID()}`;
      keys.set(arn, randomBytes(32));
      return arn;
    },
    setAlias(alias, keyArn) {
      aliases.set(alias, keyArn);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
