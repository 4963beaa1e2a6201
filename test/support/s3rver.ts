import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * An S3-compatible server (s3rver) on loopback with one bucket, `gyre-test`, and the settings
 * that point a Gyre at it. It takes any credentials; the SDK is given `S3RVER`.
 */
export async function startS3rver() {
  const S3rver = require('s3rver');
  const directory = mkdtempSync(join(tmpdir(), 'gyre-s3rver-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory, configureBuckets: [{ name: 'gyre-test' }] });
  const { port } = await server.run();
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    bucket: 'gyre-test',
    endpoint,
    env: { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'gyre-test', GYRE_S3_ENDPOINT: endpoint, GYRE_S3_FORCE_PATH_STYLE: 'true', GYRE_S3_REGION: 'us-east-1' },
    async stop() {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
