import { posix } from 'node:path';
import { PassThrough } from 'node:stream';
import { InputError } from '../domain/errors';

/**
 * A small tar reader and writer (POSIX ustar with pax extended headers for long names; GNU long
 * names are read too, as `docker cp` style archives use them). Gyre moves every file set
 * (workspaces, caches, artifacts, test results) as a tar stream, so one reader checks every entry.
 */
export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink';

export interface TarEntry {
  readonly name: string;
  readonly type: TarEntryType;
  readonly size: number;
  readonly mode: number;
  readonly mtime: number;
  /** The target of a symlink or hardlink. */
  readonly linkname?: string;
}

/** The longest entry name accepted, in bytes (Linux PATH_MAX). */
export const MAX_NAME_BYTES = 4096;
const MAX_SEGMENT_BYTES = 255;

/** An archive entry or a name that would land outside its root. */
export class UnsafePathError extends InputError {
  constructor(name: string, reason: string) {
    super(`refused '${printable(name)}': ${reason}`, 'path');
  }
}

function printable(name: string): string {
  return name.replace(/\0/g, '\\0').slice(0, 200);
}

/**
 * Checks a relative name stays inside its root and returns it normalized (no `./`, no trailing
 * slash). Refuses NUL, absolute paths, `..` segments, empty and over-long names.
 */
export function safeRelativeName(name: string): string {
  if (name.includes('\0')) throw new UnsafePathError(name, 'the name contains a NUL byte');
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new UnsafePathError(name, `the name is longer than ${MAX_NAME_BYTES} bytes`);
  if (name.startsWith('/') || /^[A-Za-z]:[\\/]/.test(name)) throw new UnsafePathError(name, 'absolute paths are not allowed');
  const segments = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw new UnsafePathError(name, "'..' would leave the root");
  if (segments.some((s) => Buffer.byteLength(s) > MAX_SEGMENT_BYTES)) throw new UnsafePathError(name, `a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
  return segments.join('/');
}

/** Checks an entry: its name, and for links, that the target stays inside the root. */
export function checkEntry(entry: TarEntry): TarEntry {
  const name = safeRelativeName(entry.name);
  if (name === '' && entry.type !== 'directory') throw new UnsafePathError(entry.name, 'an entry needs a name');
  if (entry.type === 'symlink') {
    const target = entry.linkname ?? '';
    if (target.includes('\0') || target === '') throw new UnsafePathError(entry.name, 'the link target is empty or contains a NUL byte');
    if (target.startsWith('/')) throw new UnsafePathError(entry.name, `the symlink points to the absolute path '${printable(target)}'`);
    const resolved = posix.normalize(posix.join(posix.dirname(name), target));
    if (resolved === '..' || resolved.startsWith('../')) throw new UnsafePathError(entry.name, `the symlink points outside the root ('${printable(target)}')`);
  }
  if (entry.type === 'hardlink') {
    try {
      safeRelativeName(entry.linkname ?? '');
    } catch {
      throw new UnsafePathError(entry.name, `the hardlink points outside the root ('${printable(entry.linkname ?? '')}')`);
    }
  }
  return { ...entry, name };
}

// ---- writing ----

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, '0') + '\0';
}

function header(name: string, type: string, size: number, mode: number, mtime: number, linkname = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(Math.max(0, Math.floor(mtime)), 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(type, 156, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\x0000', 257, 'ascii');
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

const TYPE_FLAG: Record<TarEntryType, string> = { file: '0', directory: '5', symlink: '2', hardlink: '1' };

/** The header blocks of one entry (with a pax header when the name or link does not fit). */
export function entryHeader(entry: TarEntry): Buffer {
  const name = entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  const link = entry.linkname ?? '';
  const needsPax = Buffer.byteLength(name) > 100 || Buffer.byteLength(link) > 100 || entry.size > 0o77777777777;
  const size = entry.type === 'file' ? entry.size : 0;
  const main = header(needsPax ? name.slice(0, 99) : name, TYPE_FLAG[entry.type], needsPax && size > 0o77777777777 ? 0 : size, entry.mode, entry.mtime, needsPax ? link.slice(0, 99) : link);
  if (!needsPax) return main;
  let records = paxRecord('path', name);
  if (link) records += paxRecord('linkpath', link);
  if (size > 0o77777777777) records += paxRecord('size', String(size));
  const body = Buffer.from(records);
  return Buffer.concat([header('PaxHeader', 'x', body.length, 0o644, entry.mtime), body, padding(body.length), main]);
}

/** Zero bytes that round `size` up to a whole 512-byte block. */
export function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** The two zero blocks that end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(1024);

// ---- reading ----

/** Pulls exact byte counts out of a stream of chunks. */
class ByteReader {
  private buffered: Buffer[] = [];
  private length = 0;
  private done = false;
  constructor(private readonly source: AsyncIterator<Uint8Array>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.length < n && !this.done) {
      const next = await this.source.next();
      if (next.done) this.done = true;
      else {
        const b = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
        this.buffered.push(b);
        this.length += b.length;
      }
    }
    return this.length >= n;
  }

  /** Exactly n bytes, or undefined at the end of the stream. */
  async read(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill(n))) return undefined;
    const all = this.buffered.length === 1 ? this.buffered[0] : Buffer.concat(this.buffered);
    this.buffered = all.length > n ? [all.subarray(n)] : [];
    this.length -= n;
    return all.subarray(0, n);
  }

  /** Up to n bytes (at least one unless the stream ended). */
  async some(n: number): Promise<Buffer | undefined> {
    if (this.length === 0 && !(await this.fill(1))) return undefined;
    const first = this.buffered[0];
    if (first.length <= n) {
      this.buffered.shift();
      this.length -= first.length;
      return first;
    }
    this.buffered[0] = first.subarray(n);
    this.length -= n;
    return first.subarray(0, n);
  }
}

function field(block: Buffer, offset: number, length: number): string {
  const raw = block.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? length : end).toString('utf8');
}

function numeric(block: Buffer, offset: number, length: number): number {
  if (block[offset] & 0x80) {
    // GNU base-256 for big numbers.
    let value = 0;
    for (let i = offset + 1; i < offset + length; i++) value = value * 256 + block[i];
    return value;
  }
  const text = field(block, offset, length).trim();
  return text ? parseInt(text, 8) : 0;
}

function parsePax(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length) {
    const space = body.indexOf(0x20, i);
    if (space === -1) break;
    const length = Number(body.subarray(i, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= 0) throw new InputError('malformed pax header in archive', 'archive');
    const record = body.subarray(space + 1, i + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    i += length;
  }
  return out;
}

export interface ReadTarLimits {
  /** Most entries accepted. @default 1_000_000 */
  readonly maxEntries?: number;
  /** Most bytes of file content accepted in total. @default unlimited */
  readonly maxBytes?: number;
}

/**
 * Reads a tar stream entry by entry. `onEntry` gets each checked entry and, for files, its
 * content as chunks (consume them all before returning). An unsafe entry throws UnsafePathError.
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
  const reader = new ByteReader(source[Symbol.asyncIterator]());
  let entries = 0;
  let bytes = 0;
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  const maxEntries = limits.maxEntries ?? 1_000_000;
  for (;;) {
    const block = await reader.read(512);
    if (!block || block.every((b) => b === 0)) break;
    const flag = String.fromCharCode(block[156] || 0x30);
    let size = numeric(block, 124, 12);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > 1024 * 1024) throw new InputError('an archive header is larger than 1 MiB', 'archive');
      const body = (await reader.read(size + padding(size).length)) ?? Buffer.alloc(0);
      if (flag === 'x') pax = parsePax(body.subarray(0, size));
      else if (flag === 'L') longName = body.subarray(0, size).toString('utf8').replace(/\0+$/, '');
      else if (flag === 'K') longLink = body.subarray(0, size).toString('utf8').replace(/\0+$/, '');
      continue;
    }
    if (pax.size) size = Number(pax.size);
    const prefix = field(block, 345, 155);
    const baseName = field(block, 0, 100);
    const rawName = pax.path ?? longName ?? (prefix ? `${prefix}/${baseName}` : baseName);
    const rawLink = pax.linkpath ?? longLink ?? field(block, 157, 100);
    pax = {};
    longName = longLink = undefined;
    const type: TarEntryType | undefined =
      flag === '0' || flag === '7' || block[156] === 0 ? 'file' : flag === '5' ? 'directory' : flag === '2' ? 'symlink' : flag === '1' ? 'hardlink' : undefined;
    let remaining = type === 'file' ? size : 0;
    async function* content(): AsyncIterable<Buffer> {
      while (remaining > 0) {
        const piece = await reader.some(Math.min(remaining, 1024 * 1024));
        if (!piece) throw new InputError('the archive ends inside a file', 'archive');
        remaining -= piece.length;
        yield piece;
      }
    }
    const name = view.rename(rawName);
    if (name !== undefined && (view.keep?.(name) ?? true)) {
      if (!type) throw new UnsafePathError(name, `entries of tar type '${flag}' (devices, fifos) are not accepted`);
      if (++entries > maxEntries) throw new InputError(`the archive has more than ${maxEntries} entries`, 'archive');
      let linkname: string | undefined;
      if (type === 'symlink') linkname = rawLink;
      if (type === 'hardlink') {
        linkname = view.rename(rawLink);
        if (linkname === undefined) throw new UnsafePathError(name, `the hardlink points outside the root ('${printable(rawLink)}')`);
      }
      let entry: TarEntry | undefined;
      try {
        const asIs = type === 'symlink' && view.linksAsIs && linkname !== '' && !linkname!.includes('\0');
        entry = checkEntry({ name, type, size: remaining, mode: numeric(block, 100, 8), mtime: numeric(block, 136, 12), linkname: asIs ? '.' : linkname });
        if (asIs) entry = { ...entry, linkname };
      } catch (error) {
        if (!(error instanceof UnsafePathError && view.skipRefused?.(error))) throw error;
        entries--;
      }
      if (entry) {
        bytes += entry.size;
        if (limits.maxBytes !== undefined && bytes > limits.maxBytes) throw new InputError(`the archive holds more than ${limits.maxBytes} bytes`, 'archive');
        await onEntry(entry, content());
      }
    }
    // Whatever the callback left unread (or all of a skipped entry) is skipped.
    for await (const _ of content()) void _;
    const pad = padding(type === 'file' ? size : 0).length;
    if (pad) await reader.read(pad);
  }
  return { entries, bytes };
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

export function createTarWriter(): TarWriter {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  // A reader that has not started yet still gets the error of `fail`: a destroyed stream throws
  // it when iterated. Until then it must not count as unhandled.
  out.on('error', () => undefined);
  const closed = () => new Error('the archive was closed by its reader');
  const write = async (chunk: Uint8Array): Promise<void> => {
    if (out.destroyed || out.writableEnded) throw closed();
    if (out.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        out.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        out.off('drain', onDrain);
        reject(closed());
      };
      out.once('drain', onDrain).once('close', onClose);
    });
  };
  return {
    tar: out,
    async add(entry, content) {
      await write(entryHeader(entry));
      if (entry.type !== 'file') return;
      let written = 0;
      for await (const chunk of content instanceof Uint8Array ? [content] : (content ?? [])) {
        written += chunk.length;
        if (written > entry.size) break;
        await write(chunk);
      }
      if (written !== entry.size) throw new InputError(`'${printable(entry.name)}' has ${written > entry.size ? 'more' : 'fewer'} than the ${entry.size} bytes its header gives`, 'archive');
      const pad = padding(entry.size);
      if (pad.length) await write(pad);
    },
    async end() {
      await write(END_OF_ARCHIVE);
      out.end();
    },
    fail(error) {
      out.destroy(error);
    },
  };
}
