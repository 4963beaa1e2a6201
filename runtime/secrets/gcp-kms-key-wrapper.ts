import { randomBytes } from 'node:crypto';
import { KeyManagementServiceClient } from '@google-cloud/kms';
// Cloud KMS's integrity checks are CRC32C; the Cloud Storage client (already a dependency, for
// the GCS blob store) carries an implementation.
import { CRC32C } from '@google-cloud/storage';
import type { KeyWrapper } from './secret-box';

/**
 * Data keys wrapped by Google Cloud KMS (`@google-cloud/kms`, over its REST transport: plain
 * HTTPS, no gRPC channel to keep): `encrypt` and `decrypt` of the 32-byte data key with a
 * symmetric CryptoKey, with the CRC32C checks Google recommends on both ways. Credentials are
 * Application Default Credentials (Workload Identity in GKE); Gyre's service account needs
 * `roles/cloudkms.cryptoKeyEncrypterDecrypter` on the key.
 *
 * Key ids are `gcp-kms:<CryptoKeyVersion name>`, the version Cloud KMS answers to encrypt. Cloud
 * KMS decrypts with whichever version encrypted, so a new primary version (rotation, by schedule
 * or by hand) leaves old values openable; `rewrapAll` then moves rows to the new version.
 */
export interface GcpKmsKeyWrapperOptions {
  /** The CryptoKey: `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`. */
  readonly keyName: string;
  /** Another endpoint, `host[:port]` or a URL (`http://127.0.0.1:8080` for a stand-in). @default - cloudkms.googleapis.com */
  readonly apiEndpoint?: string;
  /** A service account's key (tests); without it, Application Default Credentials. */
  readonly credentials?: { readonly client_email: string; readonly private_key: string };
  /** The project, when credentials do not name one. */
  readonly projectId?: string;
}

const PREFIX = 'gcp-kms:';
/** A CryptoKey's name, with the characters Google allows in each id (so no `..` reaches a URL). */
const KEY = 'projects/(?!\\.{1,2}/)[A-Za-z0-9_.:-]+/locations/[A-Za-z0-9_-]+/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+';
/** The name of a key's CryptoKeyVersion. */
const KEY_NAME = new RegExp(`^${KEY}$`);
const VERSION_NAME = new RegExp(`^(${KEY})/cryptoKeyVersions/\\d+$`);

/** The CRC32C of `bytes`, as Cloud KMS writes it (an unsigned 32-bit number). */
function crc32c(bytes: Uint8Array): number {
  const crc = new CRC32C();
  crc.update(Buffer.from(bytes));
  return crc.valueOf() >>> 0;
}

/** An Int64Value as the client answers it (`{ value: '123' }`), as a number. */
function int64(value: { value?: unknown } | null | undefined): number | undefined {
  return value?.value === undefined || value.value === null ? undefined : Number(String(value.value));
}

function describe(error: unknown): string {
  return String((error as Error).message ?? error);
}

/** Whether `name` is a CryptoKey name Gyre accepts (`projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`). */
export function isCryptoKeyName(name: string): boolean {
  return KEY_NAME.test(name);
}

/** Client options for an endpoint given as a URL (scheme and port) or as `host[:port]`. */
function endpointOptions(endpoint: string | undefined): Record<string, unknown> {
  if (!endpoint) return {};
  if (!/^[a-z]+:\/\//i.test(endpoint)) return { apiEndpoint: endpoint };
  const url = new URL(endpoint);
  const protocol = url.protocol.replace(/:$/, '');
  return { apiEndpoint: url.hostname, port: Number(url.port || (protocol === 'http' ? 80 : 443)), protocol };
}

/** A KeyWrapper over Google Cloud KMS (see the file's header). */
export function createGcpKmsKeyWrapper(options: GcpKmsKeyWrapperOptions): KeyWrapper {
  const { keyName } = options;
  if (!KEY_NAME.test(keyName)) {
    throw new Error(`'${keyName}' is not a Cloud KMS CryptoKey name (projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>)`);
  }
  // Made at first use: the client looks for Application Default Credentials as soon as it is
  // made (the metadata server, outside GCP a few seconds' wait), which a process that never
  // touches a secret need not do.
  let made: KeyManagementServiceClient | undefined;
  const client = () =>
    (made ??= new KeyManagementServiceClient({
      fallback: true,
      ...endpointOptions(options.apiEndpoint),
      ...(options.credentials ? { credentials: { ...options.credentials } } : {}),
      ...(options.projectId ? { projectId: options.projectId } : {}),
    }));

  const wrap = async (dataKey: Buffer) => {
    let answer;
    try {
      [answer] = await client().encrypt({ name: keyName, plaintext: dataKey, plaintextCrc32c: { value: crc32c(dataKey) } });
    } catch (error) {
      throw new Error(`Cloud KMS did not encrypt a data key with ${keyName}: ${describe(error)}`, { cause: error });
    }
    const ciphertext = answer.ciphertext ? Buffer.from(answer.ciphertext as Uint8Array) : undefined;
    // The checks Google documents: the request arrived whole, the answer did too, and it names a
    // version of the key asked for.
    if (!answer.verifiedPlaintextCrc32c || !ciphertext || int64(answer.ciphertextCrc32c) !== crc32c(ciphertext)) {
      throw new Error(`Cloud KMS's answer to encrypt with ${keyName} failed its integrity check (CRC32C); try again`);
    }
    if (!answer.name || VERSION_NAME.exec(answer.name)?.[1] !== keyName) {
      throw new Error(`Cloud KMS answered encrypt with ${keyName} naming another key version ('${answer.name}')`);
    }
    return { wrappedKey: ciphertext, keyId: `${PREFIX}${answer.name}` };
  };

  return {
    kind: 'gcp-kms',
    wrap,
    async unwrap(wrappedKey, keyId) {
      const key = keyId.startsWith(PREFIX) ? VERSION_NAME.exec(keyId.slice(PREFIX.length))?.[1] : undefined;
      if (!key) {
        throw new Error(`key id '${keyId}' is not a Cloud KMS key version (gcp-kms:projects/…/cryptoKeys/<key>/cryptoKeyVersions/<n>): this Gyre wraps keys with Cloud KMS (was GYRE_SECRETS_KEY_WRAPPER changed?)`);
      }
      let answer;
      try {
        [answer] = await client().decrypt({ name: key, ciphertext: wrappedKey, ciphertextCrc32c: { value: crc32c(wrappedKey) } });
      } catch (error) {
        throw new Error(`Cloud KMS did not decrypt a data key with ${key}: ${describe(error)}`, { cause: error });
      }
      const plaintext = answer.plaintext ? Buffer.from(answer.plaintext as Uint8Array) : undefined;
      if (!plaintext || int64(answer.plaintextCrc32c) !== crc32c(plaintext)) {
        throw new Error(`Cloud KMS's answer to decrypt with ${key} failed its integrity check (CRC32C); try again`);
      }
      return plaintext;
    },
    async currentKeyId() {
      // The primary version is what encrypt uses; asking by encrypting a throwaway key needs no
      // permission beyond the encrypter/decrypter role (reading the key's primary would).
      return (await wrap(randomBytes(32))).keyId;
    },
  };
}
