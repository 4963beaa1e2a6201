import { Construct } from 'constructs';
import { Token } from 'cdktf';
import { KmsKeyRing } from '@cdktf/provider-google/lib/kms-key-ring';
import { KmsCryptoKey } from '@cdktf/provider-google/lib/kms-crypto-key';
import { KmsCryptoKeyIamMember } from '@cdktf/provider-google/lib/kms-crypto-key-iam-member';
import { ISecretsKey } from '../types';

export interface GcpSecretsKeyProps {
  readonly project: string;
  /** Location of the key ring made (the environment's region). */
  readonly location: string;
  /** Name of the key ring made; key rings are never deleted, so a name is used once per project and location. */
  readonly keyRingName: string;
  /** Name of the CryptoKey made in it. @default 'secrets' */
  readonly keyName?: string;
  /** An existing symmetric CryptoKey to use instead, `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`. @default - a key ring and key are made */
  readonly cryptoKeyName?: string;
  /** Days between new primary versions of the key made. @default 365 */
  readonly rotationDays?: number;
  /** Days a destroyed key version waits before its material is gone, and with it the secrets it wrapped. @default 30 */
  readonly destroyScheduledDays?: number;
}

/**
 * The data keys Gyre encrypts secrets with are wrapped by Cloud KMS (`GYRE_SECRETS_KEY_WRAPPER=gcp-kms`):
 * a symmetric CryptoKey in a key ring of its own, rotated on a schedule (Cloud KMS decrypts with the
 * version that encrypted, and the `contexts` role re-wraps onto the new primary), or a key of the
 * operator's. The runtime's identity is granted on the key alone, not the ring or the project.
 */
export class GcpSecretsKey extends Construct implements ISecretsKey {
  /** The CryptoKey's name, `projects/…/cryptoKeys/<key>` (made or given). */
  readonly cryptoKeyName: string;
  readonly runtimeEnvironment: Record<string, string>;
  private grants = 0;

  constructor(scope: Construct, id: string, props: GcpSecretsKeyProps) {
    super(scope, id);
    if (props.cryptoKeyName !== undefined) {
      if (!Token.isUnresolved(props.cryptoKeyName) && !CRYPTO_KEY_NAME.test(props.cryptoKeyName)) {
        throw new Error(`cryptoKeyName (${props.cryptoKeyName}) must be projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>`);
      }
      for (const made of ['keyName', 'rotationDays', 'destroyScheduledDays'] as const) {
        if (props[made] !== undefined) throw new Error(`${made} applies only to a key this construct makes; cryptoKeyName (${props.cryptoKeyName}) is given`);
      }
      this.cryptoKeyName = props.cryptoKeyName;
    } else {
      const rotationDays = props.rotationDays ?? 365;
      const destroyScheduledDays = props.destroyScheduledDays ?? 30;
      if (!Number.isInteger(rotationDays) || rotationDays < 1 || rotationDays > 36500) {
        throw new Error(`rotationDays (${rotationDays}) must be a whole number of days from 1 to 36500`);
      }
      if (!Number.isInteger(destroyScheduledDays) || destroyScheduledDays < 1 || destroyScheduledDays > 120) {
        throw new Error(`destroyScheduledDays (${destroyScheduledDays}) must be a whole number of days from 1 to 120`);
      }
      for (const [prop, value] of [['keyRingName', props.keyRingName], ['keyName', props.keyName ?? 'secrets']] as const) {
        if (!/^[A-Za-z0-9_-]{1,63}$/.test(value)) throw new Error(`${prop} (${value}) must be 1 to 63 letters, digits, '_' or '-'`);
      }
      const ring = new KmsKeyRing(this, 'KeyRing', { name: props.keyRingName, project: props.project, location: props.location });
      const key = new KmsCryptoKey(this, 'Key', {
        name: props.keyName ?? 'secrets',
        keyRing: ring.id,
        purpose: 'ENCRYPT_DECRYPT',
        rotationPeriod: `${rotationDays * 86400}s`,
        destroyScheduledDuration: `${destroyScheduledDays * 86400}s`,
      });
      this.cryptoKeyName = key.id;
    }
    this.runtimeEnvironment = { GYRE_SECRETS_KEY_WRAPPER: 'gcp-kms', GYRE_SECRETS_GCP_KMS_KEY: this.cryptoKeyName };
  }

  /** Lets the member (e.g. `serviceAccount:…`) encrypt and decrypt with this key only. */
  grantEncryptDecrypt(member: string): void {
    this.grants += 1;
    new KmsCryptoKeyIamMember(this, `EncryptDecrypt${this.grants}`, {
      cryptoKeyId: this.cryptoKeyName,
      role: 'roles/cloudkms.cryptoKeyEncrypterDecrypter',
      member,
    });
  }
}

/** A CryptoKey's name, with the characters Google allows in each id. */
export const CRYPTO_KEY_NAME = /^projects\/(?!\.{1,2}\/)[A-Za-z0-9_.:-]+\/locations\/[A-Za-z0-9_-]+\/keyRings\/[A-Za-z0-9_-]+\/cryptoKeys\/[A-Za-z0-9_-]+$/;
