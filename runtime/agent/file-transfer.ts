import { createReadStream } from 'node:fs';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readlink, realpath, rm, symlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { once } from 'node:events';
import { NotFoundError } from '../domain/errors';
import { globToRegExp, isGlob } from '../output/file-sets';
import { createTarWriter, DEFAULT_EXTRACT_LIMITS, readTar, safeRelativeName, UnsafePathError, type ReadTarLimits, type TarEntry } from '../output/tar';
import { linkTargetParts } from '../output/tar-paths';

/** A catch handler: `value` for a path that is no longer there (or no longer a directory), else the error. */
function goneAs<T>(value: T): (error: NodeJS.ErrnoException) => T {
  return (error) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return value;
    throw error;
  };
}

/**
 * `Executor.archive` and `Executor.extract` for a filesystem this process can reach directly
 * (the shell executor; a Docker executor streams the same tar through the Engine API instead).
 */
export async function archiveLocal(rootDir: string, patterns: readonly string[]): Promise<{ tar: AsyncIterable<Uint8Array>; missing: string[] }> {
  try {
    await lstat(rootDir);
  } catch {
    throw new NotFoundError('path', rootDir);
  }
  const selected = new Map<string, TarEntry>();
  const missing: string[] = [];
  /**
   * Adds `rel` and what is under it. A file or directory under it that is gone by the time it is
   * looked at (the build still writes, moves or removes files) is left out, as `tar` does; any
   * other failure (a directory the reader may not list) stops the archive with its path named.
   */
  const addTree = async (rel: string): Promise<void> => {
    const full = rel ? join(rootDir, rel) : rootDir;
    const info = await lstat(full).catch(goneAs(undefined));
    if (!info) return;
    if (rel) {
      const type = info.isSymbolicLink() ? 'symlink' : info.isDirectory() ? 'directory' : info.isFile() ? 'file' : undefined;
      if (!type) return;
      const linkname = type === 'symlink' ? await readlink(full).catch(goneAs(undefined)) : undefined;
      if (type === 'symlink' && linkname === undefined) return;
      selected.set(rel, { name: rel, type, size: type === 'file' ? info.size : 0, mode: info.mode, mtime: info.mtimeMs / 1000, linkname });
    }
    if (info.isDirectory()) for (const child of (await readdir(full).catch(goneAs<string[]>([]))).sort()) await addTree(rel ? `${rel}/${child}` : child);
  };
  let all: string[] | undefined;
  const listAll = async () => {
    if (all) return all;
    all = [];
    const walk = async (rel: string) => {
      const entries = await readdir(rel ? join(rootDir, rel) : rootDir, { withFileTypes: true }).catch(goneAs([]));
      for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
        const path = rel ? `${rel}/${entry.name}` : entry.name;
        all!.push(path);
        if (entry.isDirectory()) await walk(path);
      }
    };
    await walk('');
    return all;
  };
  for (const pattern of patterns) {
    const name = safeRelativeName(pattern);
    if (!isGlob(name)) {
      // Only the path asked for decides "missing"; what vanishes under it is left out.
      const there = await lstat(name ? join(rootDir, name) : rootDir).then(
        () => true,
        goneAs(false),
      );
      if (there) await addTree(name);
      if (!there || (name && !selected.has(name))) missing.push(pattern);
      continue;
    }
    const re = globToRegExp(name);
    const matches = (await listAll()).filter((p) => re.test(p));
    if (matches.length === 0) missing.push(pattern);
    for (const m of matches) {
      // The directories above a match come along so the tree unpacks with its layout.
      const parts = m.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (!selected.has(dir)) {
          const info = await lstat(join(rootDir, dir)).catch(goneAs(undefined));
          selected.set(dir, { name: dir, type: 'directory', size: 0, mode: info?.mode ?? 0o755, mtime: (info?.mtimeMs ?? Date.now()) / 1000 });
        }
      }
      await addTree(m);
    }
  }
  // The archive promises `size` bytes: a file that grew is cut, one that shrank is padded.
  async function* contentOf(entry: TarEntry): AsyncIterable<Uint8Array> {
    let sent = 0;
    for await (const chunk of createReadStream(join(rootDir, entry.name), { end: Math.max(0, entry.size - 1), highWaterMark: 1024 * 1024 })) {
      const b = chunk as Buffer;
      const piece = b.subarray(0, Math.max(0, entry.size - sent));
      sent += piece.length;
      if (piece.length) yield piece;
      if (sent >= entry.size) break;
    }
    if (sent < entry.size) yield Buffer.alloc(entry.size - sent);
  }
  // Nothing is read until the consumer starts reading; then files are read as it reads (the
  // writer waits on it), and a consumer that stops early stops the reading.
  async function* tar(): AsyncIterable<Uint8Array> {
    const writer = createTarWriter();
    const producing = (async () => {
      for (const entry of selected.values()) await writer.add(entry, entry.type === 'file' ? contentOf(entry) : undefined);
      await writer.end();
    })().catch((error: Error) => writer.fail(error));
    try {
      yield* writer.tar;
    } finally {
      writer.fail(new Error('the archive was closed by its reader'));
      await producing;
    }
  }
  return { tar: tar(), missing };
}

/**
 * Unpacks a tar stream under `destDir`, refusing any entry that would land outside it. Each
 * entry is judged at its real place on the disk: every directory on its way is looked at (and
 * made, when missing) one at a time from `destDir` down, following links only where they lead
 * inside, so nothing is made or written before its place is known to be inside. A symlink may
 * climb no higher than `destDir` from the real directory it is made in, and a hardlink is made
 * only to a regular file inside. `limits` default to DEFAULT_EXTRACT_LIMITS.
 */
export async function extractLocal(destDir: string, source: AsyncIterable<Uint8Array>, limits: ReadTarLimits = {}) {
  await mkdir(destDir, { recursive: true });
  const realDest = await realpath(destDir);
  // Everything is inside `/` (a cache restores absolute paths there); `//` would match nothing.
  const insidePrefix = realDest.endsWith(sep) ? realDest : realDest + sep;
  const inside = (real: string) => real === realDest || real.startsWith(insidePrefix);
  /** Real directories already walked, by their name relative to dest. */
  const walked = new Map<string, string>();
  walked.set('', realDest);

  /**
   * The real path of the directory `rel` (relative to dest), each segment checked before the next
   * is looked at; missing ones are made when `make`, else undefined is given.
   */
  const directory = async (entryName: string, rel: string, make: boolean): Promise<string | undefined> => {
    const known = walked.get(rel);
    if (known !== undefined) return known;
    const parentRel = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
    const parent = await directory(entryName, parentRel, make);
    if (parent === undefined) return undefined;
    const path = join(parent, rel.slice(parentRel ? parentRel.length + 1 : 0));
    let info = await lstat(path).catch(() => undefined);
    if (!info) {
      if (!make) return undefined;
      await mkdir(path).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error;
      });
      info = await lstat(path);
    }
    let real = path;
    if (info.isSymbolicLink()) {
      real = await realpath(path).catch(() => '');
      if (!real || !inside(real)) throw new UnsafePathError(entryName, `a directory on its path ('${rel}') is a symlink that leads outside the destination`);
      info = await lstat(real);
    }
    if (!info.isDirectory()) throw new UnsafePathError(entryName, `'${rel}' on its path is not a directory`);
    walked.set(rel, real);
    return real;
  };

  /** Removes whatever is at `path` (never following a link), whose name is `rel`: the entry replaces it. */
  const clear = async (path: string, rel: string) => {
    const existing = await lstat(path).catch(() => undefined);
    if (!existing) return;
    await rm(path, { recursive: true, force: true });
    if (existing.isFile()) return;
    // Directories walked at or below a replaced directory or link are gone with it.
    for (const [key, real] of [...walked]) {
      if (key === rel || key.startsWith(`${rel}/`) || real === path || real.startsWith(`${path}${sep}`)) walked.delete(key);
    }
  };

  return readTar(
    source,
    async (entry, content) => {
      if (entry.name === '') return;
      const slash = entry.name.lastIndexOf('/');
      const parentRel = slash === -1 ? '' : entry.name.slice(0, slash);
      const base = entry.name.slice(slash + 1);
      const parent = (await directory(entry.name, parentRel, true))!;
      const target = join(parent, base);
      if (entry.type === 'directory') {
        const existing = await lstat(target).catch(() => undefined);
        if (existing && !existing.isDirectory() && !existing.isSymbolicLink()) await clear(target, entry.name);
        await directory(entry.name, entry.name, true);
        return;
      }
      if (entry.type === 'symlink') {
        // Climbing from the real parent, as the link will: links on the disk count as well as
        // those made earlier from this archive.
        const { up, down } = linkTargetParts(entry.name, entry.linkname!);
        const depth = parent === realDest ? 0 : relative(realDest, parent).split(sep).length;
        if (up > depth) throw new UnsafePathError(entry.name, `the symlink points outside the root ('${entry.linkname}' from '${relative(realDest, parent) || '.'}')`);
        // Where it descends to now must be inside too (a link already there may lead out).
        let at = parent;
        for (let i = 0; i < up; i++) at = dirname(at);
        await insideOnDisk(entry.name, join(at, ...down), inside);
        await clear(target, entry.name);
        await symlink(entry.linkname!, target);
        return;
      }
      if (entry.type === 'hardlink') {
        const name = safeRelativeName(entry.linkname!);
        const cut = name.lastIndexOf('/');
        const sourceDir = await directory(entry.name, cut === -1 ? '' : name.slice(0, cut), false);
        const source = sourceDir === undefined ? undefined : join(sourceDir, name.slice(cut + 1));
        const info = source === undefined ? undefined : await lstat(source).catch(() => undefined);
        if (!source || !info || !info.isFile()) throw new UnsafePathError(entry.name, 'a hardlink must point to a regular file inside the destination, earlier in the same archive');
        await clear(target, entry.name);
        await link(source, target);
        return;
      }
      await clear(target, entry.name);
      // A new file (never one that appeared there meanwhile, nor through a link).
      const handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, entry.mode & 0o777 || 0o644);
      const out = handle.createWriteStream();
      try {
        for await (const chunk of content) if (!out.write(chunk)) await once(out, 'drain');
        out.end();
        await once(out, 'close');
      } catch (error) {
        out.destroy();
        throw error;
      }
    },
    { maxEntries: limits.maxEntries ?? DEFAULT_EXTRACT_LIMITS.maxEntries, maxBytes: limits.maxBytes ?? DEFAULT_EXTRACT_LIMITS.maxBytes },
  );
}

/** Checks that `path`, as far as it exists on the disk, is really inside. */
async function insideOnDisk(entryName: string, path: string, inside: (real: string) => boolean): Promise<void> {
  for (let at = path; ; at = dirname(at)) {
    const exists = await lstat(at).then(
      () => true,
      () => false,
    );
    if (exists) {
      const real = await realpath(at).catch(() => undefined);
      if (real === undefined) throw new UnsafePathError(entryName, `the symlink points through a link in the destination that leads nowhere ('${at}')`);
      if (!inside(real)) throw new UnsafePathError(entryName, `the symlink points outside the root (through a link already in the destination, to '${real}')`);
      return;
    }
    if (dirname(at) === at) return;
  }
}
