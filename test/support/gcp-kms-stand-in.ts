import { createCipheriv, createDecipheriv, createVerify, randomBytes, type KeyObject } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CRC32C } from '@google-cloud/storage';

/**
 * A stand-in for Cloud KMS's REST API (cloudkms v1), for `encrypt` and `decrypt` as the official
 * client's REST transport sends them:
 *
 * - `POST /v1/{CryptoKey or CryptoKeyVersion name}:encrypt` with `{ plaintext: <base64>,
 *   plaintextCrc32c?: "<uint32>" }`, answering `{ name: <CryptoKeyVersion used>, ciphertext,
 *   ciphertextCrc32c, verifiedPlaintextCrc32c, protectionLevel }`;
 * - `POST /v1/{CryptoKey name}:decrypt` with `{ ciphertext, ciphertextCrc32c? }`, answering
 *   `{ plaintext, plaintextCrc32c, usedPrimary, protectionLevel }`;
 * - errors as `{ error: { code, message, status } }` (Google's JSON error shape).
 *
 * int64 values (the checksums) are JSON strings, as proto3 JSON writes them; enums are numbers
 * when the request asks for `$alt=json;enum-encoding=int` (the client does). Every request needs
 * `Authorization: Bearer <token>`; given the service account's public key, the token must be a
 * JWT it signed (RS256). Like Cloud KMS, a ciphertext records the key version that made it, and
 * only its own CryptoKey decrypts it. What a request gets wrong is listed in `problems`.
 */
export interface GcpKmsStandIn {
  /** The endpoint to give the client (`http://127.0.0.1:<port>`). */
  readonly endpoint: string;
  readonly requests: Array<{ method: string; path: string; query: string; headers: IncomingHttpHeaders; body: string }>;
  /** Every plaintext the stand-in saw: sent to encrypt, or answered to decrypt. */
  readonly plaintexts: Buffer[];
  readonly problems: string[];
  /** Makes a CryptoKey with one version (the primary). */
  createKey(name: string): void;
  /** Adds a version and makes it the primary (rotation); answers its name. */
  rotate(name: string): string;
  close(): Promise<void>;
}

const KEY_NAME = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/;
const VERSION_NAME = /^(projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+)\/cryptoKeyVersions\/(\d+)$/;
const STATUS: Record<number, string> = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 404: 'NOT_FOUND' };
/** ProtectionLevel.SOFTWARE. */
const SOFTWARE = 1;

class ApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

function crc32c(bytes: Buffer): string {
  const crc = new CRC32C();
  crc.update(bytes);
  return String(crc.valueOf() >>> 0);
}

/** Checks an RS256 JWT against `publicKey`; answers what is wrong, or undefined. */
function checkJwt(token: string, publicKey: KeyObject): string | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return 'the bearer token is not a JWT';
  const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')) as { alg?: string };
  if (header.alg !== 'RS256') return `the JWT is signed with ${header.alg}, not RS256`;
  const verifier = createVerify('RSA-SHA256');
  verifier.update(`${parts[0]}.${parts[1]}`);
  if (!verifier.verify(publicKey, Buffer.from(parts[2], 'base64url'))) return "the JWT's signature is not the service account's";
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as { exp?: number };
  if (!claims.exp || claims.exp * 1000 < Date.now()) return 'the JWT has expired';
  return undefined;
}

export async function startGcpKmsStandIn(options: { publicKey?: KeyObject } = {}): Promise<GcpKmsStandIn> {
  const keys = new Map<string, { primary: number; versions: Map<number, Buffer> }>();
  const requests: GcpKmsStandIn['requests'] = [];
  const plaintexts: Buffer[] = [];
  const problems: string[] = [];

  const bytesField = (input: Record<string, unknown>, field: string): Buffer => {
    const value = input[field];
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) throw new ApiError(400, `Invalid value at '${field}' (TYPE_BYTES)`);
    return Buffer.from(value, 'base64');
  };
  const checksum = (input: Record<string, unknown>, field: string, bytes: Buffer): boolean => {
    const value = input[field];
    if (value === undefined) return false;
    if (typeof value !== 'string' || !/^\d+$/.test(value)) throw new ApiError(400, `Invalid value at '${field}' (int64 as a JSON string)`);
    if (value !== crc32c(bytes)) throw new ApiError(400, `The checksum in field ${field} did not match the data in field ${field.replace(/Crc32c$/, '')}.`);
    return true;
  };

  const encrypt = (name: string, input: Record<string, unknown>) => {
    const version = VERSION_NAME.exec(name);
    const keyName = version ? version[1] : name;
    const key = keys.get(keyName);
    if (!key) throw new ApiError(404, `${keyName} not found.`);
    const number = version ? Number(version[2]) : key.primary;
    const material = key.versions.get(number);
    if (!material) throw new ApiError(404, `${name} not found.`);
    const plaintext = bytesField(input, 'plaintext');
    if (plaintext.length > 64 * 1024) throw new ApiError(400, 'The plaintext is too large.');
    const verified = checksum(input, 'plaintextCrc32c', plaintext);
    plaintexts.push(plaintext);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', material, iv);
    cipher.setAAD(Buffer.from(keyName, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(number);
    const ciphertext = Buffer.concat([head, iv, cipher.getAuthTag(), body]);
    return {
      name: `${keyName}/cryptoKeyVersions/${number}`,
      ciphertext: ciphertext.toString('base64'),
      ciphertextCrc32c: crc32c(ciphertext),
      verifiedPlaintextCrc32c: verified,
      verifiedAdditionalAuthenticatedDataCrc32c: false,
      protectionLevel: SOFTWARE,
    };
  };

  const decrypt = (name: string, input: Record<string, unknown>) => {
    if (!KEY_NAME.test(name)) throw new ApiError(400, `Resource name [${name}] does not match any known resource name pattern.`);
    const key = keys.get(name);
    if (!key) throw new ApiError(404, `${name} not found.`);
    const ciphertext = bytesField(input, 'ciphertext');
    checksum(input, 'ciphertextCrc32c', ciphertext);
    const invalid = () => new ApiError(400, 'Decryption failed: the ciphertext is invalid.');
    if (ciphertext.length < 32) throw invalid();
    const number = ciphertext.readUInt32BE(0);
    const material = key.versions.get(number);
    if (!material) throw invalid();
    const decipher = createDecipheriv('aes-256-gcm', material, ciphertext.subarray(4, 16));
    decipher.setAAD(Buffer.from(name, 'utf8'));
    decipher.setAuthTag(ciphertext.subarray(16, 32));
    let plaintext: Buffer;
    try {
      plaintext = Buffer.concat([decipher.update(ciphertext.subarray(32)), decipher.final()]);
    } catch {
      throw invalid();
    }
    plaintexts.push(plaintext);
    return { plaintext: plaintext.toString('base64'), plaintextCrc32c: crc32c(plaintext), usedPrimary: number === key.primary, protectionLevel: SOFTWARE };
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://stand-in');
      requests.push({ method: req.method ?? '', path: url.pathname, query: url.search, headers: req.headers, body });
      const answer = (status: number, value: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json; charset=UTF-8' });
        res.end(JSON.stringify(value));
      };
      try {
        const bearer = /^Bearer (\S+)$/.exec(String(req.headers.authorization ?? ''))?.[1];
        if (!bearer) throw new ApiError(401, 'Request is missing required authentication credential.');
        if (options.publicKey) {
          const wrong = checkJwt(bearer, options.publicKey);
          if (wrong) throw new ApiError(401, `Request had invalid authentication credentials: ${wrong}.`);
        }
        const call = /^\/v1\/(.+):(encrypt|decrypt)$/.exec(decodeURIComponent(url.pathname));
        if (req.method !== 'POST' || !call) throw new ApiError(404, `no method ${req.method} ${url.pathname}`);
        if (!String(req.headers['content-type']).startsWith('application/json')) problems.push(`Content-Type ${req.headers['content-type']}: the REST API takes JSON`);
        if (url.searchParams.get('$alt') !== 'json;enum-encoding=int') problems.push(`$alt is '${url.searchParams.get('$alt')}': the client asks for numeric enums`);
        let input: Record<string, unknown>;
        try {
          input = JSON.parse(body);
        } catch {
          throw new ApiError(400, 'Invalid JSON payload received.');
        }
        if (input.name !== undefined && input.name !== call[1]) problems.push(`the body names ${String(input.name)}, the URL ${call[1]}`);
        answer(200, call[2] === 'encrypt' ? encrypt(call[1], input) : decrypt(call[1], input));
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        answer(error.code, { error: { code: error.code, message: error.message, status: STATUS[error.code] ?? 'UNKNOWN' } });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    plaintexts,
    problems,
    createKey(name) {
      if (!KEY_NAME.test(name)) throw new Error(`${name} is not a CryptoKey name`);
      keys.set(name, { primary: 1, versions: new Map([[1, randomBytes(32)]]) });
    },
    rotate(name) {
      const key = keys.get(name)!;
      const number = Math.max(...key.versions.keys()) + 1;
      key.versions.set(number, randomBytes(32));
      key.primary = number;
      return `${name}/cryptoKeyVersions/${number}`;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
