import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { KeyWrapper } from './secret-box';

/**
 * Data keys wrapped by HashiCorp Vault's transit secrets engine, over its HTTP API with `fetch`:
 * HashiCorp publishes no official Node.js client (the community ones wrap the same few calls),
 * and these are two: `POST /v1/<mount>/encrypt/<key>` with `{ plaintext: <base64> }` answering
 * `{ data: { ciphertext: 'vault:v<n>:…' } }`, and `POST /v1/<mount>/decrypt/<key>` with
 * `{ ciphertext }` answering `{ data: { plaintext } }`. Requests carry `X-Vault-Token` (and
 * `X-Vault-Namespace` on Vault Enterprise / HCP); a token file is read at every request, so one
 * Vault Agent renews is picked up. Gyre's token needs `update` on those two paths.
 *
 * Key ids are `vault-transit:<key>:<version>`, the version from the ciphertext's `vault:v<n>:`
 * prefix. Rotating is the operator's (`vault write -f <mount>/keys/<key>/rotate`): Vault decrypts
 * with older versions until `min_decryption_version` passes them, and `rewrapAll` moves rows to
 * the new version (by decrypt and encrypt here, not Vault's `rewrap`, so the wrapper stays two calls).
 */
export interface VaultTransitKeyWrapperOptions {
  /** Vault's address (VAULT_ADDR), `https://vault.example.com:8200`. */
  readonly address: string;
  /** The token; or `tokenFile`. */
  readonly token?: string;
  /** A file holding the token, read at every request (a Vault Agent sink). */
  readonly tokenFile?: string;
  /** Where the transit engine is mounted. @default 'transit' */
  readonly mount?: string;
  /** The transit key's name. */
  readonly key: string;
  /** Vault Enterprise namespace (VAULT_NAMESPACE). */
  readonly namespace?: string;
  /** How long one request may take. @default 10000 */
  readonly timeoutMs?: number;
}

const PREFIX = 'vault-transit:';
const CIPHERTEXT = /^vault:v(\d+):[A-Za-z0-9+/=]+$/;
/** A transit key's name: one path segment, never `.` or `..`. */
const NAME = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;
/** A mount path: segments joined by `/`, none of them `.` or `..`. */
const MOUNT = /^(?!\.{1,2}(\/|$))[A-Za-z0-9._-]+(\/(?!\.{1,2}(\/|$))[A-Za-z0-9._-]+)*$/;

/** A KeyWrapper over Vault transit (see the file's header). */
export function createVaultTransitKeyWrapper(options: VaultTransitKeyWrapperOptions): KeyWrapper {
  const mount = options.mount ?? 'transit';
  if (!/^https?:\/\/[^\s/]+/.test(options.address)) throw new Error(`Vault's address '${options.address}' must be an http:// or https:// URL`);
  if (!NAME.test(options.key)) throw new Error(`'${options.key}' is not a transit key name (letters, digits, '.', '_', '-'; not '.' or '..')`);
  if (!MOUNT.test(mount)) throw new Error(`'${mount}' is not a mount path (segments of letters, digits, '.', '_', '-', joined by '/', none of them '.' or '..')`);
  if (!options.token && !options.tokenFile) throw new Error('a Vault transit key wrapper needs a token or a token file');
  const base = options.address.replace(/\/+$/, '');

  const token = async (): Promise<string> => {
    if (options.token) return options.token;
    const text = (await readFile(options.tokenFile!, 'utf8')).trim();
    if (!text) throw new Error(`the Vault token file ${options.tokenFile} is empty`);
    return text;
  };

  /** POSTs to `<mount>/<operation>/<key>`; answers `data`, or throws naming Vault's errors. */
  const call = async (operation: 'encrypt' | 'decrypt', key: string, body: Record<string, string>): Promise<Record<string, unknown>> => {
    const url = `${base}/v1/${mount}/${operation}/${encodeURIComponent(key)}`;
    const headers: Record<string, string> = { 'Content-Type': 'application/json', 'X-Vault-Request': 'true', 'X-Vault-Token': await token() };
    if (options.namespace) headers['X-Vault-Namespace'] = options.namespace;
    let response: Response;
    try {
      // A redirect is refused: the token would follow it to wherever it points.
      response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), redirect: 'error', signal: AbortSignal.timeout(options.timeoutMs ?? 10_000) });
    } catch (error) {
      throw new Error(`Vault at ${base} did not answer ${operation} with transit key ${key}: ${(error as Error).message}`, { cause: error });
    }
    const text = await response.text();
    let answer: { data?: Record<string, unknown>; errors?: unknown[] } | undefined;
    try {
      answer = JSON.parse(text);
    } catch {
      answer = undefined;
    }
    if (!response.ok) {
      const errors = Array.isArray(answer?.errors) ? answer.errors.map(String).join('; ') : text.slice(0, 200);
      throw new Error(`Vault at ${base} refused ${operation} with transit key ${mount}/${key}: ${response.status} ${errors}`);
    }
    if (!answer?.data || typeof answer.data !== 'object') throw new Error(`Vault at ${base} answered ${operation} with transit key ${mount}/${key} without data`);
    return answer.data;
  };

  const wrap = async (dataKey: Buffer) => {
    const data = await call('encrypt', options.key, { plaintext: dataKey.toString('base64') });
    const ciphertext = data.ciphertext;
    const match = typeof ciphertext === 'string' ? CIPHERTEXT.exec(ciphertext) : null;
    if (!match) throw new Error(`Vault answered encrypt with transit key ${mount}/${options.key} with no 'vault:v<n>:' ciphertext`);
    return { wrappedKey: Buffer.from(ciphertext as string, 'utf8'), keyId: `${PREFIX}${options.key}:${match[1]}` };
  };

  return {
    kind: 'vault-transit',
    wrap,
    async unwrap(wrappedKey, keyId) {
      const parsed = /^vault-transit:([^:]+):(\d+)$/.exec(keyId);
      if (!parsed || !NAME.test(parsed[1])) {
        throw new Error(`key id '${keyId}' is not a Vault transit key (vault-transit:<key>:<version>): this Gyre wraps keys with Vault transit (was GYRE_SECRETS_KEY_WRAPPER changed?)`);
      }
      const ciphertext = wrappedKey.toString('utf8');
      const version = CIPHERTEXT.exec(ciphertext)?.[1];
      if (version !== parsed[2]) throw new Error(`a data key under ${keyId} is not a Vault ciphertext of version ${parsed[2]}`);
      const data = await call('decrypt', parsed[1], { ciphertext });
      if (typeof data.plaintext !== 'string') throw new Error(`Vault answered decrypt with transit key ${mount}/${parsed[1]} without a plaintext`);
      return Buffer.from(data.plaintext, 'base64');
    },
    async currentKeyId() {
      // The latest version is what encrypt uses; reading the key's metadata would need another
      // policy, encrypting a throwaway key does not.
      return (await wrap(randomBytes(32))).keyId;
    },
  };
}
