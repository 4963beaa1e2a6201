import { extract as tarExtract, pack as tarPack, type Header } from 'tar-stream';
import { InputError } from '../domain/errors';
import { checkEntry, createArchiveTree, printable, UnsafePathError, type TarEntry, type TarEntryType } from './tar-paths';

export { checkEntry, MAX_NAME_BYTES, safeRelativeName, UnsafePathError, type TarEntry, type TarEntryType } from './tar-paths';

/**
 * Tar streams in and out, over `tar-stream` (ustar, pax and GNU long names read; pax written for
 * long or non-ASCII names and links). Gyre moves every file set (workspaces, caches, artifacts,
 * test results) as a tar stream, so one reader checks every entry (runtime/output/tar-paths.ts).
 *
 * tar-stream rather than node-tar: Gyre's archives pass through (renamed, filtered, checked) on
 * their way between an executor and the output role as often as they land on a disk, and some
 * land in a container through the Docker Engine API. tar-stream is only a parser and a generator
 * of entries, so the one set of containment checks here applies to every path; node-tar's
 * strength is its own extractor, whose rules would be a second set beside these.
 */

export interface ReadTarLimits {
  /** Most entries accepted. @default 1_000_000 */
  readonly maxEntries?: number;
  /** Most bytes of file content accepted in total. @default unlimited (extraction: DEFAULT_EXTRACT_LIMITS) */
  readonly maxBytes?: number;
}

/**
 * What an executor's `extract` accepts unless told otherwise: entries and bytes of file content
 * written from one archive (docs/security.md). A cache or workspace layer is at most 5 GiB
 * compressed; these bound what it may expand to.
 */
export const DEFAULT_EXTRACT_LIMITS = { maxEntries: 1_000_000, maxBytes: 16 * 1024 ** 3 } as const;

/**
 * Reads a tar stream entry by entry. `onEntry` gets each checked entry and, for files, its
 * content as chunks (what it leaves unread is skipped). An unsafe entry throws UnsafePathError.
 */
export async function readTar(
  source: AsyncIterable<Uint8Array>,
  onEntry: (entry: TarEntry, content: AsyncIterable<Buffer>) => Promise<void>,
  limits: ReadTarLimits = {},
): Promise<{ entries: number; bytes: number }> {
  return readTarAs(source, { rename: (name) => name }, onEntry, limits);
}

/** How `readTarAs` sees an archive whose names are not relative to the root they belong under. */
export interface TarView {
  /** An entry's (or a hardlink target's) name under the root, or undefined when it is not under it. */
  rename(name: string): string | undefined;
  /** Whether an entry (by its new name) is wanted. @default every entry under the root */
  keep?(name: string): boolean;
  /**
   * Called with an entry the checks refuse (e.g. a symlink that leads out of the root): true skips
   * it and reading goes on, false (the default) refuses the whole archive with the error.
   */
  skipRefused?(error: UnsafePathError): boolean;
  /**
   * Pass symlink targets on unchecked (names are checked all the same): for an archive of a tree
   * as it is, where what a link points at is for whoever extracts it to judge. @default false
   */
  readonly linksAsIs?: boolean;
}

const TYPES: Partial<Record<Header['type'], TarEntryType>> = {
  file: 'file',
  'contiguous-file': 'file',
  directory: 'directory',
  symlink: 'symlink',
  link: 'hardlink',
};

/**
 * Bytes past the end of the last entry's content before the rest of a source counts as not part
 * of the archive (the end marker and padding): more than the long-name and pax headers
 * (tar-stream takes up to 4 MiB each) that may come before the next entry.
 */
const TRAILING_BYTES = 16 * 1024 * 1024;
/** Pieces the source is fed in, so the parser never lags far behind what was fed. */
const FEED_PIECE = 64 * 1024;

/** Stops reading a source whose archive has ended. */
class TrailingData extends Error {}

/**
 * `readTar` for an archive named differently from the root it is read into (e.g. the Docker
 * Engine names entries after the directory it archived): each entry is renamed by `view` and then
 * checked as `readTar` checks, so a relative link is judged against the root, not the archive.
 * Entries not under the root or not kept are skipped unread and unchecked, and not counted in the
 * limits; a hardlink to something not under the root is refused.
 */
export async function readTarAs(
  source: AsyncIterable<Uint8Array>,
  view: TarView,
  onEntry: (entry: TarEntry, content: AsyncIterable<Buffer>) => Promise<void>,
  limits: ReadTarLimits = {},
): Promise<{ entries: number; bytes: number }> {
  const maxEntries = limits.maxEntries ?? DEFAULT_EXTRACT_LIMITS.maxEntries;
  const extract = tarExtract();
  const tree = createArchiveTree();
  let entries = 0;
  let bytes = 0;

  // Where the content of the last entry seen ends: a source that goes on far past it (a stream
  // of zeros after the end marker, as a compression bomb would send) is not read further.
  let archiveEnd = 0;
  extract.on('entry', (header: Header & { byteOffset?: number }) => {
    const size = header.size ?? 0;
    archiveEnd = (header.byteOffset ?? 0) + size + ((512 - (size % 512)) % 512);
  });
  let trailing = false;
  const feeding = (async () => {
    let fed = 0;
    try {
      for await (const chunk of source) {
        for (let at = 0; at < chunk.byteLength; at += FEED_PIECE) {
          if (extract.destroyed) return;
          if (fed - archiveEnd > TRAILING_BYTES) {
            trailing = true;
            extract.destroy(new TrailingData());
            return;
          }
          const piece = chunk.subarray(at, at + FEED_PIECE);
          fed += piece.byteLength;
          if (!extract.write(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength))) {
            await new Promise<void>((resolve) => {
              const done = () => {
                extract.off('drain', done);
                extract.off('close', done);
                resolve();
              };
              extract.on('drain', done);
              extract.on('close', done);
            });
          }
        }
      }
      extract.end(undefined);
    } catch (error) {
      extract.destroy(error as Error);
    }
  })();

  const next = extract[Symbol.asyncIterator]();
  try {
    for (;;) {
      let step: IteratorResult<{ header: Header } & AsyncIterable<unknown>>;
      try {
        step = await next.next();
      } catch (error) {
        if (trailing && error instanceof TrailingData) break;
        throw archiveError(error);
      }
      if (step.done) break;
      const stream = step.value;
      const header = stream.header;
      // The entry's content, read through one iterator that the callback cannot close: closing an
      // entry's stream would end the whole archive. What it leaves unread is read past below.
      const reader = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      let ended = false;
      async function* content(): AsyncIterable<Buffer> {
        while (!ended) {
          const piece = await reader.next().catch((error: unknown) => Promise.reject(archiveError(error)));
          if (piece.done) {
            ended = true;
            return;
          }
          yield piece.value;
        }
      }
      const rawName = header.name;
      const type = header.type ? TYPES[header.type] : undefined;
      const name = view.rename(rawName);
      if (name !== undefined && (view.keep?.(name) ?? true)) {
        if (!type) throw new UnsafePathError(name, `entries of tar type '${header.type ?? 'unknown'}' (devices, fifos) are not accepted`);
        if (++entries > maxEntries) throw new InputError(`the archive has more than ${maxEntries} entries (the limit)`, 'archive');
        const rawLink = header.linkname ?? '';
        let linkname: string | undefined;
        if (type === 'symlink') linkname = rawLink;
        if (type === 'hardlink') {
          linkname = view.rename(rawLink);
          if (linkname === undefined) throw new UnsafePathError(name, `the hardlink points outside the root ('${printable(rawLink)}')`);
        }
        const size = type === 'file' ? (header.size ?? 0) : 0;
        const mtime = header.mtime ? Math.floor(header.mtime.getTime() / 1000) : 0;
        let entry: TarEntry | undefined;
        try {
          const asIs = type === 'symlink' && view.linksAsIs && linkname !== '' && !linkname!.includes('\0');
          entry = checkEntry({ name, type, size, mode: header.mode ?? 0, mtime, linkname: asIs ? '.' : linkname });
          if (asIs) entry = { ...entry, linkname };
          // A tree archived as it is has no entries through its links; its links are judged where it lands.
          else tree.admit(entry);
        } catch (error) {
          if (!(error instanceof UnsafePathError && view.skipRefused?.(error))) throw error;
          entries--;
        }
        if (entry) {
          bytes += entry.size;
          if (limits.maxBytes !== undefined && bytes > limits.maxBytes) throw new InputError(`the archive holds more than ${limits.maxBytes} bytes (the limit)`, 'archive');
          await onEntry(entry, content());
        }
      }
      // Whatever the callback left unread (or all of a skipped entry) is read past.
      for await (const _ of content()) void _;
    }
  } catch (error) {
    // The feeder stops at its next chunk; the source is the caller's to close sooner.
    extract.destroy(null);
    throw error;
  }
  await feeding;
  return { entries, bytes };
}

/** A parse failure of tar-stream, said as a failure of the archive. */
function archiveError(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof InputError) return error;
  if (/Unexpected end of data/i.test(error.message)) return new InputError('the archive ends inside an entry', 'archive');
  if (/Invalid tar header|Header exceeds max size|Invalid header/i.test(error.message)) return new InputError(`the archive is malformed: ${error.message}`, 'archive');
  return error;
}

// ---- writing while read ----

/**
 * A tar stream made while its reader reads it, e.g. the entries of other archives renamed into
 * one. Each call waits while the reader is behind. Once the reader has stopped (it closed the
 * stream, or `fail` was called) calls reject, so a producer is never left waiting.
 */
export interface TarWriter {
  /** The archive (read it once). */
  readonly tar: AsyncIterable<Uint8Array>;
  /** Appends an entry; a file's `content` must be exactly `entry.size` bytes. */
  add(entry: TarEntry, content?: AsyncIterable<Uint8Array> | Uint8Array): Promise<void>;
  /** Appends the end of the archive and ends the stream. */
  end(): Promise<void>;
  /**
   * Ends the stream with `error` for its reader, and makes waiting calls reject. Call it when the
   * reader gave up without closing the stream (a consumer that threw), or the producer failed.
   */
  fail(error: Error): void;
}

const TYPE_NAMES: Record<TarEntryType, Header['type']> = { file: 'file', directory: 'directory', symlink: 'symlink', hardlink: 'link' };

export function createTarWriter(): TarWriter {
  const pack = tarPack();
  // A reader that has not started yet still gets the error of `fail`: a destroyed stream throws
  // it when iterated. Until then it must not count as unhandled.
  pack.on('error', () => undefined);
  let failure: Error | undefined;
  let ended = false;
  const closed = () => failure ?? new Error('the archive was closed by its reader');
  const fail = (error: Error) => {
    failure ??= error;
    pack.destroy(error);
  };
  return {
    tar: pack as AsyncIterable<Uint8Array>,
    async add(entry, content) {
      if (pack.destroyed || ended) throw closed();
      const header: Partial<Header> & { name: string } = {
        name: entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name,
        type: TYPE_NAMES[entry.type],
        size: entry.type === 'file' ? entry.size : 0,
        mode: entry.mode & 0o7777,
        mtime: new Date(Math.max(0, Math.floor(entry.mtime)) * 1000),
        linkname: entry.linkname,
        uid: 0,
        gid: 0,
      };
      let settle: (error?: Error | null) => void = () => undefined;
      const written = new Promise<void>((resolve, reject) => {
        settle = (error) => (error ? reject(pack.destroyed ? closed() : error) : resolve());
      });
      // Until awaited below, a failure here is not yet anyone's to handle.
      written.catch(() => undefined);
      const sink = pack.entry(header, (error) => settle(error));
      if (entry.type === 'file') {
        let count = 0;
        for await (const chunk of content instanceof Uint8Array ? [content] : (content ?? [])) {
          if (pack.destroyed) throw closed();
          count += chunk.byteLength;
          if (count > entry.size) break;
          if (!sink.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) {
            await new Promise<void>((resolve) => {
              const done = () => {
                sink.off('drain', done);
                sink.off('close', done);
                resolve();
              };
              sink.on('drain', done);
              sink.on('close', done);
            });
          }
        }
        if (count !== entry.size) {
          const error = new InputError(`'${printable(entry.name)}' has ${count > entry.size ? 'more' : 'fewer'} than the ${entry.size} bytes its header gives`, 'archive');
          fail(error);
          throw error;
        }
      }
      sink.end(undefined);
      await written;
    },
    async end() {
      if (pack.destroyed) throw closed();
      ended = true;
      pack.finalize();
    },
    fail,
  };
}
