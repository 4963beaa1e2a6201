import type { Readable } from 'node:stream';
import { InputError } from '../domain/errors';

/**
 * The `BlobStore` seam: where logs, artifacts, caches and workspaces live once written. The
 * embedded default is a local directory; clusters use S3, any S3-compatible store, or GCS.
 *
 * Keys are made by `blobKey` from segments Gyre chose (ids, fixed words), never from a user's
 * path or cache key, so no key can name another object or escape the local root.
 */
export interface BlobStore {
  readonly kind: 'local' | 's3' | 'gcs';
  /** Writes an object, replacing any with the same key. `body` is bytes or a file on local disk. */
  put(key: string, body: Uint8Array | { readonly file: string }): Promise<void>;
  /**
   * Reads an object, from its first byte or from `start` (a download resuming where it broke
   * off); a NotFoundError when there is none. A `start` at or past the end reads nothing.
   */
  get(key: string, options?: BlobGetOptions): Promise<Readable>;
  /** Removes objects; missing ones are ignored. */
  delete(keys: readonly string[]): Promise<void>;
}

export interface BlobGetOptions {
  /** The first byte to read, counted from 0. @default 0 */
  readonly start?: number;
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Joins key segments, refusing any that is not a plain id-like word. */
export function blobKey(...segments: readonly (string | number)[]): string {
  for (const s of segments) {
    const text = String(s);
    if (!SEGMENT.test(text) || text.includes('..')) throw new InputError(`blob key segment '${text.slice(0, 80)}' is not a plain name`, 'key');
  }
  return segments.join('/');
}

/** Checks a key was made by `blobKey` (the implementations call this before touching storage). */
export function assertBlobKey(key: string): void {
  blobKey(...key.split('/'));
}
