import { randomBytes } from 'node:crypto';
import { DecryptCommand, EncryptCommand, KMSClient, type KMSClientConfig } from '@aws-sdk/client-kms';
import type { KeyWrapper } from './secret-box';

/**
 * Data keys wrapped by AWS KMS (`@aws-sdk/client-kms`): Encrypt and Decrypt of the 32-byte data key
 * under a symmetric KMS key, with the encryption context `{ service: 'gyre' }` (key policies and
 * CloudTrail can rely on it). Gyre's role needs `kms:Encrypt` and `kms:Decrypt` on the key.
 *
 * Key ids are `aws-kms:<key ARN>`, the ARN KMS answers to Encrypt, so a value stays openable when
 * an alias is pointed at a new key (then `rewrapAll` moves rows to it). KMS's own automatic
 * rotation keeps the key ARN and needs no re-wrap.
 */
export interface AwsKmsKeyWrapperOptions {
  /** The KMS key: a key ARN, key id, alias name (`alias/gyre`) or alias ARN. */
  readonly keyId: string;
  /** Another endpoint (a VPC endpoint, a stand-in). @default - AWS's for the region */
  readonly endpoint?: string;
  /** @default - the region of `keyId` when it is an ARN, else the SDK's (AWS_REGION, the profile) */
  readonly region?: string;
  /** Static credentials; without them the SDK's default chain is used (environment, IAM role, IRSA). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
}

/** What every Encrypt and Decrypt carries; KMS refuses a Decrypt whose context differs. */
const ENCRYPTION_CONTEXT = { service: 'gyre' } as const;
const PREFIX = 'aws-kms:';
const KEY_ARN = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:key\//;

function regionOf(keyId: string): string | undefined {
  return /^arn:aws[a-z-]*:kms:([a-z0-9-]+):/.exec(keyId)?.[1];
}

/** The SDK's error as one line: its name (the KMS exception) and message. */
function describe(error: unknown): string {
  const e = error as { name?: string; message?: string };
  return e.name && e.message && !e.message.startsWith(e.name) ? `${e.name}: ${e.message}` : String(e.message ?? error);
}

/** A KeyWrapper over AWS KMS (see the file's header). */
export function createAwsKmsKeyWrapper(options: AwsKmsKeyWrapperOptions): KeyWrapper {
  if (!options.keyId) throw new Error('an AWS KMS key wrapper needs a key id (a key ARN, key id or alias)');
  const config: KMSClientConfig = {
    region: options.region ?? regionOf(options.keyId),
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
  };
  const client = new KMSClient(config);

  const wrap = async (dataKey: Buffer) => {
    let out;
    try {
      out = await client.send(new EncryptCommand({ KeyId: options.keyId, Plaintext: dataKey, EncryptionContext: { ...ENCRYPTION_CONTEXT } }));
    } catch (error) {
      throw new Error(`AWS KMS did not encrypt a data key with ${options.keyId}: ${describe(error)}`, { cause: error });
    }
    if (!out.CiphertextBlob || !out.KeyId) throw new Error(`AWS KMS answered Encrypt with ${options.keyId} without a ciphertext or key id`);
    return { wrappedKey: Buffer.from(out.CiphertextBlob), keyId: `${PREFIX}${out.KeyId}` };
  };

  return {
    kind: 'aws-kms',
    wrap,
    async unwrap(wrappedKey, keyId) {
      if (!keyId.startsWith(PREFIX) || keyId.length === PREFIX.length) {
        throw new Error(`key id '${keyId}' is not an AWS KMS key: this Gyre wraps keys with AWS KMS (was GYRE_SECRETS_KEY_WRAPPER changed?)`);
      }
      const kmsKeyId = keyId.slice(PREFIX.length);
      let out;
      try {
        out = await client.send(new DecryptCommand({ KeyId: kmsKeyId, CiphertextBlob: wrappedKey, EncryptionContext: { ...ENCRYPTION_CONTEXT } }));
      } catch (error) {
        throw new Error(`AWS KMS did not decrypt a data key with ${kmsKeyId}: ${describe(error)}`, { cause: error });
      }
      if (!out.Plaintext) throw new Error(`AWS KMS answered Decrypt with ${kmsKeyId} without a plaintext`);
      return Buffer.from(out.Plaintext);
    },
    async currentKeyId() {
      // A key ARN is what Encrypt answers; an alias may point anywhere, so ask KMS by encrypting a
      // throwaway key (this needs no permission beyond kms:Encrypt).
      if (KEY_ARN.test(options.keyId)) return `${PREFIX}${options.keyId}`;
      return (await wrap(randomBytes(32))).keyId;
    },
  };
}
