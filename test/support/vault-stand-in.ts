import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Vault's transit secrets engine over HTTP (Vault's API documentation, "Transit
 * secrets engine"): `POST /v1/<mount>/encrypt/<key>` with `{ plaintext: <base64> }` answering
 * `{ data: { ciphertext: 'vault:v<n>:<base64>', key_version } }` (a missing key is created, as
 * Vault's upsert does), `POST /v1/<mount>/decrypt/<key>` with `{ ciphertext }` answering
 * `{ data: { plaintext } }`. Requests need `X-Vault-Token` (403 `permission denied` otherwise) and,
 * when the stand-in has a namespace, `X-Vault-Namespace`; errors are `{ errors: [...] }`.
 * A ciphertext opens only with the key (and version) that made it.
 */
export interface VaultStandIn {
  /** VAULT_ADDR. */
  readonly address: string;
  readonly token: string;
  readonly requests: Array<{ method: string; path: string; headers: IncomingHttpHeaders; body: string }>;
  /** Every plaintext the stand-in saw: sent to encrypt, or answered to decrypt. */
  readonly plaintexts: Buffer[];
  /** Adds a version to a key and makes it the one encrypt uses (`vault write -f transit/keys/<key>/rotate`). */
  rotate(key: string): number;
  close(): Promise<void>;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export async function startVaultStandIn(options: { mount?: string; namespace?: string } = {}): Promise<VaultStandIn> {
  const mount = options.mount ?? 'transit';
  const token = `hvs.${randomBytes(18).toString('base64url')}`;
  const keys = new Map<string, Buffer[]>();
  const requests: VaultStandIn['requests'] = [];
  const plaintexts: Buffer[] = [];

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      const answer = (status: number, value: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(value));
      };
      const fail = (status: number, ...errors: string[]) => answer(status, { errors });
      const ok = (data: Record<string, unknown>) =>
        answer(200, { request_id: randomUUID(), lease_id: '', renewable: false, lease_duration: 0, data, wrap_info: null, warnings: null, auth: null });

      if (req.headers['x-vault-token'] !== token) return fail(403, 'permission denied');
      if (options.namespace && req.headers['x-vault-namespace'] !== options.namespace) return fail(403, 'permission denied');
      const call = new RegExp(`^/v1/${mount}/(encrypt|decrypt)/([^/?]+)$`).exec(req.url ?? '');
      if (req.method !== 'POST' && req.method !== 'PUT') return fail(405, 'unsupported operation');
      if (!call) return fail(404, `no handler for route "${req.url}". route entry not found.`);
      const name = decodeURIComponent(call[2]);
      let input: Record<string, unknown>;
      try {
        input = JSON.parse(body);
      } catch {
        return fail(400, 'failed to parse JSON input');
      }
      if (call[1] === 'encrypt') {
        if (typeof input.plaintext !== 'string' || !BASE64.test(input.plaintext)) return fail(400, 'failed to base64-decode plaintext');
        const plaintext = Buffer.from(input.plaintext, 'base64');
        plaintexts.push(plaintext);
        if (!keys.has(name)) keys.set(name, [randomBytes(32)]);
        const versions = keys.get(name)!;
        const version = versions.length;
        const iv = randomBytes(12);
        const cipher = createCipheriv('aes-256-gcm', versions[version - 1], iv);
        const sealed = Buffer.concat([iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
        return ok({ ciphertext: `vault:v${version}:${sealed.toString('base64')}`, key_version: version });
      }
      const versions = keys.get(name);
      if (!versions) return fail(400, 'encryption key not found');
      const parsed = typeof input.ciphertext === 'string' ? /^vault:v(\d+):([A-Za-z0-9+/=]+)$/.exec(input.ciphertext) : null;
      if (!parsed) return fail(400, 'invalid ciphertext: no prefix');
      const material = versions[Number(parsed[1]) - 1];
      if (!material) return fail(400, 'invalid key version');
      const sealed = Buffer.from(parsed[2], 'base64');
      if (sealed.length < 28) return fail(400, 'invalid ciphertext length');
      const decipher = createDecipheriv('aes-256-gcm', material, sealed.subarray(0, 12));
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      try {
        const plaintext = Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
        plaintexts.push(plaintext);
        return ok({ plaintext: plaintext.toString('base64') });
      } catch {
        return fail(400, 'cipher: message authentication failed');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    token,
    requests,
    plaintexts,
    rotate(key) {
      const versions = keys.get(key) ?? [];
      versions.push(randomBytes(32));
      keys.set(key, versions);
      return versions.length;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
