import { Construct } from 'constructs';
import { S3Bucket } from '@cdktf/provider-aws/lib/s3-bucket';
import { S3BucketVersioningA } from '@cdktf/provider-aws/lib/s3-bucket-versioning';
import { S3BucketServerSideEncryptionConfigurationA } from '@cdktf/provider-aws/lib/s3-bucket-server-side-encryption-configuration';
import { S3BucketPublicAccessBlock } from '@cdktf/provider-aws/lib/s3-bucket-public-access-block';
import { S3BucketLifecycleConfiguration } from '@cdktf/provider-aws/lib/s3-bucket-lifecycle-configuration';
import { S3BucketCorsConfiguration } from '@cdktf/provider-aws/lib/s3-bucket-cors-configuration';
import { S3BucketOwnershipControls } from '@cdktf/provider-aws/lib/s3-bucket-ownership-controls';
import { S3BucketPolicy } from '@cdktf/provider-aws/lib/s3-bucket-policy';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { IObjectStore } from '../types';

export interface S3ObjectStoreProps {
  /** Prefix of the bucket name. @default - Terraform generates a name */
  readonly bucketPrefix?: string;
  readonly region: string;
  /** Days after which build output (logs, artifacts, caches, workspaces) expires. @default 30 */
  readonly expireAfterDays?: number;
  /** Origins the web UI serves from, allowed to download artifacts directly. @default - no CORS rule */
  readonly corsOrigins?: string[];
  /** KMS key for server-side encryption. @default - S3-managed keys (SSE-S3) */
  readonly kmsKeyArn?: string;
}

/**
 * S3 bucket for build output: versioned, encrypted, never public, TLS-only, and expiring old
 * objects (and old versions) so storage does not grow without bound.
 */
export class S3ObjectStore extends Construct implements IObjectStore {
  readonly bucketName: string;
  readonly bucketArn: string;
  readonly runtimeEnvironment: Record<string, string>;
  private grants = 0;

  constructor(scope: Construct, id: string, props: S3ObjectStoreProps) {
    super(scope, id);
    const expireAfterDays = props.expireAfterDays ?? 30;
    if (!Number.isInteger(expireAfterDays) || expireAfterDays < 1) {
      throw new Error(`expireAfterDays (${expireAfterDays}) must be a whole number of days, 1 or more`);
    }

    const bucket = new S3Bucket(this, 'Bucket', { bucketPrefix: props.bucketPrefix, forceDestroy: false });
    this.bucketName = bucket.bucket;
    this.bucketArn = bucket.arn;
    this.runtimeEnvironment = { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: bucket.bucket, GYRE_S3_REGION: props.region };

    new S3BucketOwnershipControls(this, 'Ownership', {
      bucket: bucket.id,
      rule: { objectOwnership: 'BucketOwnerEnforced' },
    });
    new S3BucketPublicAccessBlock(this, 'PublicAccess', {
      bucket: bucket.id,
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    });
    new S3BucketVersioningA(this, 'Versioning', {
      bucket: bucket.id,
      versioningConfiguration: { status: 'Enabled' },
    });
    new S3BucketServerSideEncryptionConfigurationA(this, 'Encryption', {
      bucket: bucket.id,
      rule: [{
        applyServerSideEncryptionByDefault: props.kmsKeyArn
          ? { sseAlgorithm: 'aws:kms', kmsMasterKeyId: props.kmsKeyArn }
          : { sseAlgorithm: 'AES256' },
        bucketKeyEnabled: props.kmsKeyArn !== undefined,
      }],
    });
    new S3BucketLifecycleConfiguration(this, 'Lifecycle', {
      bucket: bucket.id,
      rule: [{
        id: 'expire-build-output',
        status: 'Enabled',
        filter: [{ prefix: '' }],
        expiration: [{ days: expireAfterDays }],
        noncurrentVersionExpiration: [{ noncurrentDays: 7 }],
        abortIncompleteMultipartUpload: [{ daysAfterInitiation: 2 }],
      }],
    });
    if (props.corsOrigins && props.corsOrigins.length > 0) {
      new S3BucketCorsConfiguration(this, 'Cors', {
        bucket: bucket.id,
        corsRule: [{ allowedMethods: ['GET', 'HEAD'], allowedOrigins: props.corsOrigins, allowedHeaders: ['*'], maxAgeSeconds: 3600 }],
      });
    }
    new S3BucketPolicy(this, 'Policy', {
      bucket: bucket.id,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{
          Sid: 'DenyInsecureTransport',
          Effect: 'Deny',
          Principal: '*',
          Action: 's3:*',
          Resource: [bucket.arn, `${bucket.arn}/*`],
          Condition: { Bool: { 'aws:SecureTransport': 'false' } },
        }],
      }),
    });
  }

  /** Lets the IAM role read, write and delete objects in this bucket (and nothing else). */
  grantReadWrite(roleName: string): void {
    this.grants += 1;
    new IamRolePolicy(this, `ReadWrite${this.grants}`, {
      role: roleName,
      name: 'gyre-object-store',
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Action: ['s3:ListBucket', 's3:GetBucketLocation'], Resource: [this.bucketArn] },
          {
            Effect: 'Allow',
            Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'],
            Resource: [`${this.bucketArn}/*`],
          },
        ],
      }),
    });
  }
}
