import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { blobKey, type BlobStore } from '../../runtime/blob/blob-store';
import { createGcsBlobStore } from '../../runtime/blob/gcs-blob-store';
import { openBlobStore } from '../../runtime/blob/open-blob-store';
import { NotFoundError } from '../../runtime/domain/errors';
import { readSettings } from '../../runtime/settings';
import { startGcsStandIn, type GcsStandIn } from '../support/gcs-stand-in';

const api = JSON.parse(readFileSync(join(__dirname, '../fixtures/gcs/json-api.json'), 'utf8'));

async function read(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/** The official client (`@google-cloud/storage`) with only its endpoint pointed at a stand-in of the JSON API. */
describe('GCS blob store', () => {
  let gcs: GcsStandIn;
  let blobs: BlobStore;
  let dir: string;

  beforeAll(async () => {
    gcs = await startGcsStandIn();
    blobs = createGcsBlobStore({ bucket: gcs.bucket, apiEndpoint: gcs.endpoint, projectId: 'gyre-test', resumableFromBytes: 64 * 1024 });
    dir = mkdtempSync(join(tmpdir(), 'gyre-gcs-'));
  });
  afterAll(async () => {
    await gcs.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => gcs.requests.splice(0));

  it('stores bytes and files through the JSON API upload protocols and reads them back', async () => {
    const small = blobKey('artifacts', 'job-1', 'a.txt');
    await blobs.put(small, Buffer.from('hello'));
    const fileSmall = join(dir, 'small.bin');
    writeFileSync(fileSmall, randomBytes(10_000));
    const fileLarge = join(dir, 'large.bin');
    writeFileSync(fileLarge, randomBytes(300_000));
    await blobs.put(blobKey('caches', 'p', 'small.tar.gz'), { file: fileSmall });
    await blobs.put(blobKey('caches', 'p', 'large.tar.gz'), { file: fileLarge });

    // THEN each object is what was written, byte for byte (the client also checked each CRC32C).
    expect(gcs.objects.get(small)?.toString()).toBe('hello');
    expect(gcs.objects.get('caches/p/small.tar.gz')!.equals(readFileSync(fileSmall))).toBe(true);
    expect(gcs.objects.get('caches/p/large.tar.gz')!.equals(readFileSync(fileLarge))).toBe(true);
    expect((await read(await blobs.get('caches/p/large.tar.gz'))).equals(readFileSync(fileLarge))).toBe(true);
    // AND the uploads went by the published paths: multipart for small bodies, a resumable session for large files.
    const uploadPath = api.methods['storage.objects.insert'].mediaUpload.simple.path.replace('{bucket}', gcs.bucket);
    const uploads = gcs.requests.filter((r) => r.path === uploadPath);
    expect(uploads.filter((r) => r.method === 'POST').map((r) => r.query.uploadType)).toEqual(['multipart', 'multipart', 'resumable']);
    expect(uploads.filter((r) => r.method === 'PUT' && r.query.upload_id)).not.toHaveLength(0);
    for (const r of uploads) expect(api.methods['storage.objects.insert'].uploadTypes).toContain(r.query.uploadType);
  });

  it('reads from a start with a range request, and a missing object is NotFoundError', async () => {
    const key = blobKey('workspaces', 'w', 'layer.tar.gz');
    const content = randomBytes(200_000);
    await blobs.put(key, content);
    gcs.requests.splice(0);
    expect((await read(await blobs.get(key, { start: 150_000 }))).equals(content.subarray(150_000))).toBe(true);
    const objectPath = `/${api.servicePath}${api.methods['storage.objects.get'].path}`.replace('{bucket}', gcs.bucket).replace('{object}', encodeURIComponent(key));
    expect(gcs.requests).toEqual([expect.objectContaining({ method: 'GET', path: objectPath, query: expect.objectContaining({ alt: 'media' }) })]);
    await expect(blobs.get(blobKey('workspaces', 'w', 'missing.tar.gz'))).rejects.toBeInstanceOf(NotFoundError);
    await expect(blobs.get(blobKey('workspaces', 'w', 'missing.tar.gz'), { start: 10 })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('retries a write or read GCS answers 503', async () => {
    const key = blobKey('artifacts', 'job-2', 'b.txt');
    gcs.failNext(1);
    await blobs.put(key, Buffer.from('again'));
    expect(gcs.objects.get(key)?.toString()).toBe('again');
    gcs.failNext(1);
    expect((await read(await blobs.get(key))).toString()).toBe('again');
    expect(gcs.requests.filter((r) => r.path.endsWith('/o') || r.path.endsWith(encodeURIComponent(key)))).toHaveLength(4);
  });

  it('deletes objects, ignoring ones already gone', async () => {
    const key = blobKey('logs', 't', '1', '0.gz');
    await blobs.put(key, Buffer.from('log'));
    await blobs.delete([key, blobKey('logs', 't', '1', 'missing.gz')]);
    expect(gcs.objects.has(key)).toBe(false);
    await expect(blobs.get(key)).rejects.toBeInstanceOf(NotFoundError);
    expect(gcs.requests.filter((r) => r.method === 'DELETE')).toHaveLength(2);
  });

  it('sends no credentials of its own: only the client library speaks, never an S3/HMAC path', async () => {
    await blobs.put(blobKey('artifacts', 'x', 'y'), Buffer.from('z'));
    expect(gcs.requests.length).toBeGreaterThan(0);
    // A custom endpoint gets no Authorization (the library's rule); in the cluster the default
    // endpoint gets Application Default Credentials, which are Workload Identity's.
    expect(gcs.requests.every((r) => !r.authorization)).toBe(true);
    expect(gcs.requests.every((r) => r.path.startsWith('/upload/storage/v1/') || r.path.startsWith('/storage/v1/'))).toBe(true);
  });

  it('is what GYRE_BLOB_STORE=gcs with GYRE_GCS_BUCKET opens; S3 settings are refused for it', () => {
    const settings = readSettings({ GYRE_BLOB_STORE: 'gcs', GYRE_GCS_BUCKET: 'gyre-output' });
    expect(settings.blobs).toEqual({ kind: 'gcs', bucket: 'gyre-output' });
    expect(openBlobStore(settings.blobs, dir).kind).toBe('gcs');
    expect(() => readSettings({ GYRE_BLOB_STORE: 'gcs' })).toThrow(/GYRE_GCS_BUCKET/);
    expect(() => readSettings({ GYRE_BLOB_STORE: 'gcs', GYRE_GCS_BUCKET: 'b-1', GYRE_S3_ENDPOINT: 'https://storage.googleapis.com' })).toThrow(/GYRE_S3_ENDPOINT.*gcs/);
  });
});
