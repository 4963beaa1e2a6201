import { join } from 'node:path';
import type { BlobSettings } from '../settings';
import type { BlobStore } from './blob-store';
import { createLocalBlobStore } from './local-blob-store';
import { createGcsBlobStore } from './gcs-blob-store';
import { createS3BlobStore } from './s3-blob-store';

/** The blob store the settings ask for. */
export function openBlobStore(settings: BlobSettings, dataDir: string): BlobStore {
  switch (settings.kind) {
    case 'local':
      return createLocalBlobStore({ root: join(dataDir, 'blobs') });
    case 's3':
      return createS3BlobStore({ bucket: settings.bucket, region: settings.region, endpoint: settings.endpoint, forcePathStyle: settings.forcePathStyle });
    case 'gcs':
      return createGcsBlobStore({ bucket: settings.bucket });
  }
}
