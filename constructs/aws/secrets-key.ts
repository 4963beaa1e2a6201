import { Construct } from 'constructs';
import { Token } from 'cdktf';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import { KmsAlias } from '@cdktf/provider-aws/lib/kms-alias';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { ISecretsKey } from '../types';

export interface AwsSecretsKeyProps {
  /** An existing symmetric KMS key to use instead of making one: its key ARN. @default - a new key is made */
  readonly keyArn?: string;
  /** Alias of the key made, `alias/<name>`. @default - no alias */
  readonly alias?: string;
  /** Days between automatic rotations of the key made (AWS allows 90 to 2560). @default 365 */
  readonly rotationDays?: number;
  /** Days a deleted key waits before it is gone, and with it every secret (AWS allows 7 to 30). @default 30 */
  readonly deletionWindowDays?: number;
  /** @default 'Gyre: wraps the data keys of secrets' */
  readonly description?: string;
}

/**
 * The data keys Gyre encrypts secrets with are wrapped by AWS KMS (`GYRE_SECRETS_KEY_WRAPPER=aws-kms`):
 * a symmetric key with automatic rotation (the key ARN stays, so nothing is re-wrapped), or a key
 * of the operator's. Grants allow exactly what the runtime's wrapper asks of this key.
 */
export class AwsSecretsKey extends Construct implements ISecretsKey {
  /** ARN of the key (made or given). */
  readonly keyArn: string;
  readonly runtimeEnvironment: Record<string, string>;
  private grants = 0;

  constructor(scope: Construct, id: string, props: AwsSecretsKeyProps = {}) {
    super(scope, id);
    if (props.keyArn !== undefined) {
      if (!Token.isUnresolved(props.keyArn) && !KEY_ARN.test(props.keyArn)) {
        throw new Error(`keyArn (${props.keyArn}) must be a KMS key ARN, arn:aws:kms:<region>:<account>:key/<key id> (an alias cannot be granted on)`);
      }
      for (const made of ['alias', 'rotationDays', 'deletionWindowDays'] as const) {
        if (props[made] !== undefined) throw new Error(`${made} applies only to a key this construct makes; keyArn (${props.keyArn}) is given`);
      }
      this.keyArn = props.keyArn;
    } else {
      const rotationDays = props.rotationDays ?? 365;
      const deletionWindowDays = props.deletionWindowDays ?? 30;
      if (!Number.isInteger(rotationDays) || rotationDays < 90 || rotationDays > 2560) {
        throw new Error(`rotationDays (${rotationDays}) must be a whole number of days from 90 to 2560`);
      }
      if (!Number.isInteger(deletionWindowDays) || deletionWindowDays < 7 || deletionWindowDays > 30) {
        throw new Error(`deletionWindowDays (${deletionWindowDays}) must be a whole number of days from 7 to 30`);
      }
      if (props.alias !== undefined && (!/^alias\/[A-Za-z0-9/_-]{1,250}$/.test(props.alias) || props.alias.startsWith('alias/aws/'))) {
        throw new Error(`alias (${props.alias}) must be alias/<name> (letters, digits, '/', '_', '-'; not under alias/aws/)`);
      }
      // The default key policy: the account's IAM policies decide who may use the key.
      const key = new KmsKey(this, 'Key', {
        description: props.description ?? 'Gyre: wraps the data keys of secrets',
        keyUsage: 'ENCRYPT_DECRYPT',
        customerMasterKeySpec: 'SYMMETRIC_DEFAULT',
        enableKeyRotation: true,
        rotationPeriodInDays: rotationDays,
        deletionWindowInDays: deletionWindowDays,
      });
      if (props.alias !== undefined) new KmsAlias(this, 'Alias', { name: props.alias, targetKeyId: key.keyId });
      this.keyArn = key.arn;
    }
    this.runtimeEnvironment = { GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: this.keyArn };
  }

  /**
   * Lets the IAM role wrap and unwrap data keys with this key only: Encrypt, Decrypt and
   * GenerateDataKey with Gyre's encryption context (`service=gyre`, which the runtime always
   * sends), and DescribeKey.
   */
  grantEncryptDecrypt(roleName: string): void {
    this.grants += 1;
    new IamRolePolicy(this, `EncryptDecrypt${this.grants}`, {
      role: roleName,
      name: 'gyre-secrets-key',
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'WrapDataKeys',
            Effect: 'Allow',
            Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:GenerateDataKey'],
            Resource: [this.keyArn],
            Condition: { StringEquals: { 'kms:EncryptionContext:service': 'gyre' } },
          },
          { Sid: 'DescribeKey', Effect: 'Allow', Action: ['kms:DescribeKey'], Resource: [this.keyArn] },
        ],
      }),
    });
  }
}

/** A key ARN (IAM grants name keys, not aliases); multi-Region keys' ids start with `mrk-`. */
export const KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
