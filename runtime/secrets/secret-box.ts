/**
 * Secrets at rest: envelope encryption. Each value is sealed with a fresh AES-256-GCM data key;
 * the data key is wrapped by a `KeyWrapper` (a local key file by default; AWS KMS, Google Cloud
 * KMS or Vault transit as options) and stored beside the ciphertext with the id of the key that
 * wrapped it, so rotating the key re-wraps data keys without touching the values.
 *
 * Nothing outside this seam sees a data key or a wrapping key; callers hold `Sealed` rows and open
 * them only where a plaintext is needed (a task's agent, at claim).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/** A value as stored: every field is safe to keep in the database. */
export interface Sealed {
  /** AES-256-GCM ciphertext of the value. */
  readonly ciphertext: Buffer;
  /** The 12-byte GCM nonce. */
  readonly iv: Buffer;
  /** The 16-byte GCM authentication tag. */
  readonly tag: Buffer;
  /** The data key, wrapped by the key named `keyId`. */
  readonly wrappedKey: Buffer;
  /** Which wrapping key (and which wrapper: `local:<id>`, `aws-kms:<key arn>`, `gcp-kms:<crypto key version name>`, `vault-transit:<key>:<version>`). */
  readonly keyId: string;
}

/** Wraps and unwraps data keys; the one seam to a key management service. */
export interface KeyWrapper {
  /** `local`, `aws-kms`, `gcp-kms`, `vault-transit`. */
  readonly kind: string;
  /** Wraps a data key with the current key; answers the wrapped bytes and the id to unwrap them by. */
  wrap(dataKey: Buffer): Promise<{ wrappedKey: Buffer; keyId: string }>;
  /** Unwraps a data key wrapped by `keyId` (the current key or an older one still held). */
  unwrap(wrappedKey: Buffer, keyId: string): Promise<Buffer>;
  /** The id `wrap` would answer now: rows whose keyId differs are due for re-wrapping after a rotation. */
  currentKeyId(): Promise<string>;
}

/**
 * Seals and opens values. `context` is bound to the ciphertext as GCM additional data (e.g.
 * `project-variable:<project id>:<name>`): a sealed value copied to another row does not open.
 */
export interface SecretBox {
  seal(plaintext: string, context: string): Promise<Sealed>;
  open(sealed: Sealed, context: string): Promise<string>;
  /** The same value under a data key wrapped by the current key (rotation); the ciphertext is unchanged. */
  rewrap(sealed: Sealed): Promise<Sealed>;
  readonly wrapper: KeyWrapper;
}

/** Options of `createSecretBox`. */
export interface SecretBoxOptions {
  /**
   * How long an unwrapped data key is kept in memory, so opening many values (or one value many
   * times) does not call the key service per value. `0` keeps none. @default 300000 (5 minutes)
   */
  readonly cacheMs?: number;
  /** At most this many unwrapped data keys are kept; the least recently used go first. @default 1000 */
  readonly cacheEntries?: number;
}

const DATA_KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const CIPHER = 'aes-256-gcm';

/**
 * Unwrapped data keys by (keyId, wrapped bytes): a least-recently-used map with an age limit.
 * It holds promises, so opening many values under one data key at once unwraps it once; a failed
 * unwrap is not kept.
 */
class DataKeyCache {
  private readonly entries = new Map<string, { readonly key: Promise<Buffer>; readonly expires: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}

  get(id: string, load: () => Promise<Buffer>): Promise<Buffer> {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return load();
    const now = Date.now();
    const hit = this.entries.get(id);
    this.entries.delete(id);
    if (hit && hit.expires > now) {
      this.entries.set(id, hit); // most recently used goes last
      return hit.key;
    }
    const key = load();
    this.put(id, key, now);
    key.catch(() => {
      if (this.entries.get(id)?.key === key) this.entries.delete(id);
    });
    return key;
  }

  put(id: string, key: Promise<Buffer>, now = Date.now()): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    this.entries.delete(id);
    this.entries.set(id, { key, expires: now + this.ttlMs });
    for (const [oldest] of this.entries) {
      if (this.entries.size <= this.maxEntries) break;
      this.entries.delete(oldest);
    }
  }
}

function cacheId(wrappedKey: Buffer, keyId: string): string {
  return `${keyId}\u0000${wrappedKey.toString('base64')}`;
}

/** Refuses a `Sealed` whose parts cannot be a value this box sealed (a short tag would weaken GCM). */
function checkShape(sealed: Sealed, context: string): void {
  const problem = !Buffer.isBuffer(sealed.iv) || sealed.iv.length !== IV_BYTES
    ? `its IV is not ${IV_BYTES} bytes`
    : !Buffer.isBuffer(sealed.tag) || sealed.tag.length !== TAG_BYTES
      ? `its tag is not ${TAG_BYTES} bytes`
      : !Buffer.isBuffer(sealed.ciphertext) || !Buffer.isBuffer(sealed.wrappedKey) || typeof sealed.keyId !== 'string' || sealed.keyId === ''
        ? 'it lacks its ciphertext, wrapped key or key id'
        : undefined;
  if (problem) throw new Error(`the sealed value for ${context} cannot be opened: ${problem}`);
}

/**
 * The SecretBox: AES-256-GCM (node:crypto) with a fresh 32-byte data key and a random 12-byte IV
 * per value, `context` as additional authenticated data, and the data key wrapped by `wrapper`.
 * Unwrapped data keys are cached (see `SecretBoxOptions`). Errors name the context and never
 * carry key or plaintext bytes; a value whose ciphertext, tag or context was changed does not open.
 */
export function createSecretBox(wrapper: KeyWrapper, options: SecretBoxOptions = {}): SecretBox {
  const cache = new DataKeyCache(options.cacheMs ?? 5 * 60_000, options.cacheEntries ?? 1000);
  const dataKeyOf = (sealed: Sealed, context: string): Promise<Buffer> =>
    cache.get(cacheId(sealed.wrappedKey, sealed.keyId), async () => {
      let key: Buffer;
      try {
        key = await wrapper.unwrap(sealed.wrappedKey, sealed.keyId);
      } catch (error) {
        throw new Error(`the sealed value for ${context} cannot be opened: its data key does not unwrap with ${sealed.keyId} (${(error as Error).message})`, { cause: error });
      }
      if (key.length !== DATA_KEY_BYTES) throw new Error(`the sealed value for ${context} cannot be opened: the key wrapper answered a data key of ${key.length} bytes, not ${DATA_KEY_BYTES}`);
      return key;
    });
  return {
    wrapper,
    async seal(plaintext, context) {
      if (typeof plaintext !== 'string') throw new TypeError(`the value for ${context} must be a string`);
      const dataKey = randomBytes(DATA_KEY_BYTES);
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(CIPHER, dataKey, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      const tag = cipher.getAuthTag();
      const { wrappedKey, keyId } = await wrapper.wrap(dataKey);
      cache.put(cacheId(wrappedKey, keyId), Promise.resolve(dataKey));
      return { ciphertext, iv, tag, wrappedKey, keyId };
    },
    async open(sealed, context) {
      checkShape(sealed, context);
      const dataKey = await dataKeyOf(sealed, context);
      const decipher = createDecipheriv(CIPHER, dataKey, sealed.iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(sealed.tag);
      try {
        return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]).toString('utf8');
      } catch {
        // No cause: node's error says nothing useful, and nothing of the bytes may leak.
        throw new Error(`the sealed value for ${context} cannot be opened: its ciphertext, tag or context do not match (changed, or copied from another row)`);
      }
    },
    async rewrap(sealed) {
      const what = `a value under ${sealed.keyId}`;
      checkShape(sealed, what);
      const dataKey = await dataKeyOf(sealed, what);
      const { wrappedKey, keyId } = await wrapper.wrap(dataKey);
      cache.put(cacheId(wrappedKey, keyId), Promise.resolve(dataKey));
      return { ciphertext: sealed.ciphertext, iv: sealed.iv, tag: sealed.tag, wrappedKey, keyId };
    },
  };
}
