import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { dirname, join } from 'node:path';
import { NotFoundError } from '../domain/errors';
import { assertBlobKey, type BlobStore } from './blob-store';

/** Blobs as files under `root` (the embedded default: `GYRE_DATA_DIR/blobs`), readable by Gyre's user only (0600, directories 0700). */
export function createLocalBlobStore({ root }: { root: string }): BlobStore {
  const pathOf = (key: string) => {
    assertBlobKey(key);
    return join(root, key);
  };
  return {
    kind: 'local',
    async put(key, body) {
      const target = pathOf(key);
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      // Write beside, then rename: a reader never sees half an object.
      const temp = `${target}.${randomUUID()}.partial`;
      try {
        if (body instanceof Uint8Array) await writeFile(temp, body, { mode: 0o600 });
        else {
          // A copy takes the mode of what it copies; a blob's is Gyre's alone.
          await copyFile(body.file, temp);
          await chmod(temp, 0o600);
        }
        await rename(temp, target);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      }
    },
    async get(key, options) {
      const path = pathOf(key);
      const stream = createReadStream(path, { start: options?.start ?? 0 });
      await new Promise<void>((resolve, reject) => {
        stream.once('open', () => resolve());
        stream.once('error', (error: NodeJS.ErrnoException) => reject(error.code === 'ENOENT' ? new NotFoundError('blob', key) : error));
      });
      return stream as Readable;
    },
    async delete(keys) {
      for (const key of keys) await rm(pathOf(key), { force: true });
    },
  };
}
