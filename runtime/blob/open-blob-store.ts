import { join } from 'node:path';
import type { BlobSettings } from '../settings';
import type { BlobStore } from './blob-store';
import { createLocalBlobStore } from './local-blob-store';

/**
 * The blob store the settings ask for. The cloud SDKs are loaded only for the store that uses them
 * (Google's alone adds about 300 modules and tens of MiB to a server that never touches GCS).
 */
export function openBlobStore(settings: BlobSettings, dataDir: string): BlobStore {
  switch (settings.kind) {
    case 'local':
      return createLocalBlobStore({ root: join(dataDir, 'blobs') });
    case 's3': {
      const { createS3BlobStore } = require('./s3-blob-store') as typeof import('./s3-blob-store');
      return createS3BlobStore({ bucket: settings.bucket, region: settings.region, endpoint: settings.endpoint, forcePathStyle: settings.forcePathStyle });
    }
    case 'gcs': {
      const { createGcsBlobStore } = require('./gcs-blob-store') as typeof import('./gcs-blob-store');
      return createGcsBlobStore({ bucket: settings.bucket });
    }
  }
}
