import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { blobKey, type BlobStore } from '../../runtime/blob/blob-store';
import { createLocalBlobStore } from '../../runtime/blob/local-blob-store';
import { createS3BlobStore } from '../../runtime/blob/s3-blob-store';
import { NotFoundError } from '../../runtime/domain/errors';
import { createGcsBlobStore } from '../../runtime/blob/gcs-blob-store';
import { startGcsStandIn } from '../support/gcs-stand-in';
import { startS3rver } from '../support/s3rver';

async function read(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/**
 * `get` from a start offset (what a resumed download reads), on a local directory, on S3 (s3rver)
 * and on GCS (the official client against a stand-in of the JSON API).
 */
describe.each(['local', 's3', 'gcs'] as const)('%s blob store', (kind) => {
  let blobs: BlobStore;
  let stop: () => Promise<void>;
  // Larger than one read of either store, so an offset is not just a slice of the first chunk.
  const content = randomBytes(300_000);
  const key = blobKey('caches', 'project', 'object.tar.gz');

  beforeAll(async () => {
    if (kind === 'local') {
      const root = mkdtempSync(join(tmpdir(), 'gyre-blobs-'));
      blobs = createLocalBlobStore({ root });
      stop = async () => rmSync(root, { recursive: true, force: true });
    } else if (kind === 'gcs') {
      const gcs = await startGcsStandIn();
      blobs = createGcsBlobStore({ bucket: gcs.bucket, apiEndpoint: gcs.endpoint, projectId: 'gyre-test' });
      stop = gcs.stop;
    } else {
      const s3 = await startS3rver();
      blobs = createS3BlobStore({ bucket: s3.bucket, endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
      stop = s3.stop;
    }
    await blobs.put(key, content);
  }, 30_000);
  afterAll(async () => {
    await stop?.();
  });

  it('reads the whole object without a start, and the rest of it from a start', async () => {
    expect((await read(await blobs.get(key))).equals(content)).toBe(true);
    expect((await read(await blobs.get(key, { start: 0 }))).equals(content)).toBe(true);
    expect((await read(await blobs.get(key, { start: 1 }))).equals(content.subarray(1))).toBe(true);
    expect((await read(await blobs.get(key, { start: 123_457 }))).equals(content.subarray(123_457))).toBe(true);
    expect((await read(await blobs.get(key, { start: content.length - 1 }))).equals(content.subarray(-1))).toBe(true);
  });

  it('reads nothing from a start at or past the end, and refuses a missing object', async () => {
    expect(await read(await blobs.get(key, { start: content.length }))).toHaveLength(0);
    expect(await read(await blobs.get(key, { start: content.length + 10 }))).toHaveLength(0);
    await expect(blobs.get(blobKey('caches', 'project', 'missing.tar.gz'), { start: 5 })).rejects.toBeInstanceOf(NotFoundError);
  });
});
