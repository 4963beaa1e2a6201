import { Construct } from 'constructs';
import { StorageBucket } from '@cdktf/provider-google/lib/storage-bucket';
import { StorageBucketIamMember } from '@cdktf/provider-google/lib/storage-bucket-iam-member';
import { IObjectStore } from '../types';

export interface GcsObjectStoreProps {
  /** Globally unique bucket name. */
  readonly bucketName: string;
  readonly project: string;
  /** Region (or multi-region) of the bucket. */
  readonly location: string;
  /** Days after which build output expires. @default 30 */
  readonly expireAfterDays?: number;
  /** Origins allowed to download artifacts directly. @default - no CORS rule */
  readonly corsOrigins?: string[];
}

/** GCS bucket for build output: uniform access, public access prevented, versioned, expiring. */
export class GcsObjectStore extends Construct implements IObjectStore {
  readonly bucketName: string;
  readonly runtimeEnvironment: Record<string, string>;
  private grants = 0;

  constructor(scope: Construct, id: string, props: GcsObjectStoreProps) {
    super(scope, id);
    const expireAfterDays = props.expireAfterDays ?? 30;
    if (!Number.isInteger(expireAfterDays) || expireAfterDays < 1) {
      throw new Error(`expireAfterDays (${expireAfterDays}) must be a whole number of days, 1 or more`);
    }
    const bucket = new StorageBucket(this, 'Bucket', {
      name: props.bucketName,
      project: props.project,
      location: props.location,
      uniformBucketLevelAccess: true,
      publicAccessPrevention: 'enforced',
      versioning: { enabled: true },
      forceDestroy: false,
      lifecycleRule: [
        { action: { type: 'Delete' }, condition: { age: expireAfterDays } },
        { action: { type: 'Delete' }, condition: { daysSinceNoncurrentTime: 7, withState: 'ARCHIVED' } },
        { action: { type: 'AbortIncompleteMultipartUpload' }, condition: { age: 2 } },
      ],
      cors: props.corsOrigins && props.corsOrigins.length > 0
        ? [{ origin: props.corsOrigins, method: ['GET', 'HEAD'], responseHeader: ['Content-Type', 'Content-Disposition'], maxAgeSeconds: 3600 }]
        : undefined,
    });
    this.bucketName = bucket.name;
    this.runtimeEnvironment = { GYRE_BLOB_STORE: 'gcs', GYRE_GCS_BUCKET: bucket.name };
  }

  /** Lets the member (e.g. `serviceAccount:…`) read, write and delete objects in this bucket only. */
  grantReadWrite(member: string): void {
    this.grants += 1;
    new StorageBucketIamMember(this, `ReadWrite${this.grants}`, { bucket: this.bucketName, role: 'roles/storage.objectUser', member });
  }
}
