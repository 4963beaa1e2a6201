import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { IdempotencyStrategy, Storage, type StorageOptions } from '@google-cloud/storage';
import { NotFoundError } from '../domain/errors';
import { assertBlobKey, type BlobStore } from './blob-store';

export interface GcsBlobStoreOptions {
  readonly bucket: string;
  /**
   * The JSON API's root, for a stand-in or emulator. Requests to it carry no credentials (the
   * client library's rule for a custom endpoint). @default - Google's, with credentials
   */
  readonly apiEndpoint?: string;
  /** The project the client names; only needed without Application Default Credentials (a stand-in). */
  readonly projectId?: string;
  /** Files at least this large are uploaded resumably. @default 8 MiB */
  readonly resumableFromBytes?: number;
}

/** Large files are uploaded resumably, so a dropped connection resumes instead of restarting. */
const RESUMABLE_FROM_BYTES = 8 * 1024 * 1024;

/**
 * Blobs in a Google Cloud Storage bucket through its JSON API (`@google-cloud/storage`).
 * Credentials are Application Default Credentials: in the cluster, the pod's Kubernetes service
 * account bound to a Google service account by Workload Identity; there are no static keys.
 */
export function createGcsBlobStore(options: GcsBlobStoreOptions): BlobStore {
  const storageOptions: StorageOptions = {
    // Every write names a fresh key or rewrites the same bytes, so any request may be retried
    // (the library's default retries uploads only under a generation precondition).
    retryOptions: { autoRetry: true, maxRetries: 4, idempotencyStrategy: IdempotencyStrategy.RetryAlways },
    ...(options.apiEndpoint ? { apiEndpoint: options.apiEndpoint } : {}),
    ...(options.projectId ? { projectId: options.projectId } : {}),
  };
  const bucket = new Storage(storageOptions).bucket(options.bucket);
  return {
    kind: 'gcs',
    async put(key, body) {
      assertBlobKey(key);
      const file = bucket.file(key);
      if (body instanceof Uint8Array) {
        await file.save(Buffer.from(body.buffer, body.byteOffset, body.byteLength), { resumable: false, contentType: 'application/octet-stream' });
        return;
      }
      const { size } = await stat(body.file);
      // The client checks the object's CRC32C against what it sent, whichever way it uploads.
      await pipeline(createReadStream(body.file), file.createWriteStream({ resumable: size >= (options.resumableFromBytes ?? RESUMABLE_FROM_BYTES), contentType: 'application/octet-stream' }));
    },
    async get(key, getOptions) {
      assertBlobKey(key);
      const start = getOptions?.start ?? 0;
      const stream = bucket.file(key).createReadStream(start > 0 ? { start } : {});
      // The client starts the request once the stream is read; wait for the answer so a missing
      // object is a NotFoundError here rather than an error in the middle of a response.
      const status = await new Promise<number>((resolve, reject) => {
        const onError = (error: Error & { code?: number | string }) => {
          if (error.code === 404) resolve(404);
          else if (error.code === 416) resolve(416);
          else reject(error);
        };
        stream.once('error', onError);
        stream.once('response', (response: IncomingMessage) => {
          stream.off('error', onError);
          resolve(response.statusCode ?? 0);
        });
        stream.read(0);
      });
      if (status === 404 || status === 416) {
        // The client reads the error body and then fails the stream: nothing is waiting for that.
        stream.on('error', () => undefined);
        stream.destroy();
        if (status === 404) throw new NotFoundError('blob', key);
        // GCS refuses a range that starts at or past the end (416); the local store reads nothing there.
        return Readable.from([]);
      }
      return stream as unknown as Readable;
    },
    async delete(keys) {
      for (const key of keys) {
        assertBlobKey(key);
        await bucket.file(key).delete({ ignoreNotFound: true });
      }
    },
  };
}
