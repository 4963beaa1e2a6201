import { InputError } from '../domain/errors';

/**
 * Names and links of archive entries: what may be written where. Every archive Gyre reads
 * (workspaces, caches, artifacts, test results) passes these checks entry by entry, on the
 * agent before anything reaches the disk or a container; docs/security.md states the rules.
 */
export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink';

export interface TarEntry {
  readonly name: string;
  readonly type: TarEntryType;
  readonly size: number;
  readonly mode: number;
  /** Seconds since the epoch. */
  readonly mtime: number;
  /** The target of a symlink or hardlink. */
  readonly linkname?: string;
}

/** The longest entry name accepted, in bytes (Linux PATH_MAX). */
export const MAX_NAME_BYTES = 4096;
const MAX_SEGMENT_BYTES = 255;
/** Links followed to resolve one name before it counts as a loop (Linux's limit). */
const MAX_LINK_HOPS = 40;

/** An archive entry or a name that would land outside its root. */
export class UnsafePathError extends InputError {
  constructor(name: string, reason: string) {
    super(`refused '${printable(name)}': ${reason}`, 'path');
  }
}

export function printable(name: string): string {
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

/**
 * A symlink target taken apart: how many directories it climbs (`..` at its start) and the names
 * it then descends through. A `..` anywhere else is refused: `a/../..` climbs out of wherever `a`
 * leads, which a link made later (`a -> x/y`) can change after this one was judged.
 */
export function linkTargetParts(name: string, target: string): { up: number; down: string[] } {
  if (target === '' || target.includes('\0')) throw new UnsafePathError(name, 'the link target is empty or contains a NUL byte');
  if (target.startsWith('/')) throw new UnsafePathError(name, `the symlink points to the absolute path '${printable(target)}'`);
  if (Buffer.byteLength(target) > MAX_NAME_BYTES) throw new UnsafePathError(name, `the link target is longer than ${MAX_NAME_BYTES} bytes`);
  const segments = target.split('/').filter((s) => s !== '' && s !== '.');
  let up = 0;
  while (segments[up] === '..') up++;
  const down = segments.slice(up);
  if (down.includes('..')) throw new UnsafePathError(name, `the symlink target '${printable(target)}' has '..' after a name (only leading '../' is accepted)`);
  return { up, down };
}

/**
 * Checks an entry on its own: its name, and for links, that the target is one the rules accept
 * and climbs no higher than the root seen from the entry's name. Where earlier links in the same
 * archive lead is `createArchiveTree`'s to judge.
 */
export function checkEntry(entry: TarEntry): TarEntry {
  const name = safeRelativeName(entry.name);
  if (name === '' && entry.type !== 'directory') throw new UnsafePathError(entry.name, 'an entry needs a name');
  if (entry.type === 'symlink') {
    const { up } = linkTargetParts(entry.name, entry.linkname ?? '');
    if (up > name.split('/').length - 1) throw new UnsafePathError(entry.name, `the symlink points outside the root ('${printable(entry.linkname!)}')`);
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

/**
 * What an archive has made so far, as far as where later entries land: the symlinks it created.
 * Each entry is judged at the real place it lands, after following links made earlier in the
 * archive, so `a/b/c -> .` then `a/b/c/y -> ../../..` is refused (`a/b/c/y` is really `a/b/y`,
 * and three levels up from `a/b` is outside). Links already on the disk are the extractor's to
 * follow (extractLocal does); a container's are the engine's.
 */
export interface ArchiveTree {
  /** Checks an entry that passed `checkEntry` and records what it makes; throws UnsafePathError. */
  admit(entry: TarEntry): void;
}

export function createArchiveTree(): ArchiveTree {
  /** Symlinks by the real name they were made at: where each leads, relative to the root. */
  const links = new Map<string, string[]>();
  /** Every directory that holds a symlink somewhere below it (may hold stale names). */
  const holdsLinks = new Set<string>();

  /** The real segments of `segments`, following recorded links (the last one too when `followLast`). */
  const resolve = (entryName: string, segments: readonly string[], followLast: boolean): string[] => {
    if (links.size === 0) return [...segments];
    let out: string[] = [];
    let queue = [...segments];
    let hops = 0;
    while (queue.length) {
      const segment = queue.shift()!;
      const candidate = [...out, segment];
      const target = links.get(candidate.join('/'));
      if (target && (queue.length > 0 || followLast)) {
        if (++hops > MAX_LINK_HOPS) throw new UnsafePathError(entryName, 'too many levels of symlinks');
        queue = [...target, ...queue];
        out = [];
      } else out = candidate;
    }
    return out;
  };

  /** Whatever was at `name` (and under it) is replaced by an entry that is not a directory. */
  const replace = (name: string) => {
    links.delete(name);
    if (!holdsLinks.has(name)) return;
    for (const key of [...links.keys()]) if (key.startsWith(`${name}/`)) links.delete(key);
    holdsLinks.delete(name);
  };

  return {
    admit(entry) {
      if (entry.name === '') return;
      const segments = entry.name.split('/');
      if (entry.type === 'directory') {
        // An existing link to a directory stays; the directory is where it leads.
        resolve(entry.name, segments, true);
        return;
      }
      const parent = resolve(entry.name, segments.slice(0, -1), true);
      const real = [...parent, segments[segments.length - 1]].join('/');
      if (entry.type === 'hardlink') {
        // The target is the name's real place, always inside the root; whether it is a file is
        // for the extractor (a link is never made to a symlink or a directory).
        resolve(entry.name, entry.linkname!.split('/'), false);
      }
      if (entry.type !== 'symlink') {
        replace(real);
        return;
      }
      const { up, down } = linkTargetParts(entry.name, entry.linkname!);
      if (up > parent.length) {
        const where = parent.join('/') || '.';
        throw new UnsafePathError(entry.name, `the symlink points outside the root ('${printable(entry.linkname!)}' from '${printable(where)}', where links earlier in the archive put it)`);
      }
      replace(real);
      links.set(real, [...parent.slice(0, parent.length - up), ...down]);
      for (let i = 1; i < parent.length + 1; i++) holdsLinks.add(parent.slice(0, i).join('/'));
    },
  };
}
