import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { NotFoundError } from '../domain/errors';
import { assertBlobKey, type BlobStore } from './blob-store';

export interface S3BlobStoreOptions {
  readonly bucket: string;
  /** @default 'us-east-1' */
  readonly region?: string;
  /** An S3-compatible endpoint (MinIO, Ceph). @default - AWS */
  readonly endpoint?: string;
  /** Address the bucket in the path rather than the host name. @default false */
  readonly forcePathStyle?: boolean;
  /** Static credentials; without them the SDK's default chain is used (environment, IAM role). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
}

/** Blobs in an S3 bucket (or an S3-compatible store) through the AWS SDK. GCS has its own: gcs-blob-store.ts. */
export function createS3BlobStore(options: S3BlobStoreOptions): BlobStore {
  const config: S3ClientConfig = {
    region: options.region ?? 'us-east-1',
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle ?? false,
    credentials: options.credentials,
    // Plain signed bodies: S3-compatible stores do not all read aws-chunked
    // uploads with trailing checksums, the SDK's newer default.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
  const client = new S3Client(config);
  const Bucket = options.bucket;
  return {
    kind: 's3',
    async put(key, body) {
      assertBlobKey(key);
      if (body instanceof Uint8Array) {
        await client.send(new PutObjectCommand({ Bucket, Key: key, Body: body, ContentLength: body.byteLength }));
      } else {
        const { size } = await stat(body.file);
        await client.send(new PutObjectCommand({ Bucket, Key: key, Body: createReadStream(body.file), ContentLength: size }));
      }
    },
    async get(key, options) {
      assertBlobKey(key);
      const start = options?.start ?? 0;
      try {
        const out = await client.send(new GetObjectCommand({ Bucket, Key: key, ...(start > 0 ? { Range: `bytes=${start}-` } : {}) }));
        return out.Body as Readable;
      } catch (error) {
        const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
        if (e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404) throw new NotFoundError('blob', key);
        // S3 refuses a range that starts at or past the end (416); the local store reads nothing there.
        if (start > 0 && (e.name === 'InvalidRange' || e.$metadata?.httpStatusCode === 416)) return Readable.from([]);
        throw error;
      }
    },
    async delete(keys) {
      // One call per key: not every S3-compatible store has the multi-object delete.
      for (const key of keys) {
        assertBlobKey(key);
        await client.send(new DeleteObjectCommand({ Bucket, Key: key }));
      }
    },
  };
}
