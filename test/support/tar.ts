import type { TarEntry } from '../../runtime/output/tar';

/**
 * Tar headers written by hand, byte by byte, so a test can make an archive as hostile as an
 * attacker likes (names with `..`, NUL bytes, absolute paths, devices): the library Gyre writes
 * archives with would refuse some of these, or write them differently.
 */
export type CraftedEntry = Omit<TarEntry, 'type'> & { readonly type: TarEntry['type'] | 'fifo' | 'character-device' };

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, '0') + '\0';
}

const TYPE_FLAG: Record<CraftedEntry['type'], string> = { file: '0', hardlink: '1', symlink: '2', 'character-device': '3', directory: '5', fifo: '6' };

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

/** The header blocks of one entry (with a pax header when the name or link does not fit). */
export function entryHeader(entry: CraftedEntry): Buffer {
  const name = entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  const link = entry.linkname ?? '';
  const needsPax = Buffer.byteLength(name) > 100 || Buffer.byteLength(link) > 100;
  const size = entry.type === 'file' ? entry.size : 0;
  const main = header(needsPax ? name.slice(0, 99) : name, TYPE_FLAG[entry.type], size, entry.mode, entry.mtime, needsPax ? link.slice(0, 99) : link);
  if (!needsPax) return main;
  let records = paxRecord('path', name);
  if (link) records += paxRecord('linkpath', link);
  const body = Buffer.from(records);
  return Buffer.concat([header('PaxHeader', 'x', body.length, 0o644, entry.mtime), body, padding(body.length), main]);
}

/** Zero bytes that round `size` up to a whole 512-byte block. */
export function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** The two zero blocks that end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(1024);

/** An archive of these entries (files with the given content), as one buffer. */
export function craftTar(entries: readonly (CraftedEntry & { readonly body?: string | Buffer })[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    parts.push(entryHeader({ ...e, size: e.type === 'file' ? body.length : 0 }));
    if (e.type === 'file') parts.push(body, padding(body.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}
