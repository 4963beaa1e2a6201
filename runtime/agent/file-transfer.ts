import { createReadStream } from 'node:fs';
import { link, lstat, mkdir, readdir, readlink, realpath, rm, symlink } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { once } from 'node:events';
import { NotFoundError } from '../domain/errors';
import { globToRegExp, isGlob } from '../output/file-sets';
import { END_OF_ARCHIVE, entryHeader, padding, readTar, safeRelativeName, UnsafePathError, type TarEntry } from '../output/tar';

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
  const addTree = async (rel: string): Promise<void> => {
    const full = rel ? join(rootDir, rel) : rootDir;
    const info = await lstat(full);
    if (rel) {
      const type = info.isSymbolicLink() ? 'symlink' : info.isDirectory() ? 'directory' : info.isFile() ? 'file' : undefined;
      if (!type) return;
      selected.set(rel, { name: rel, type, size: type === 'file' ? info.size : 0, mode: info.mode, mtime: info.mtimeMs / 1000, linkname: type === 'symlink' ? await readlink(full) : undefined });
    }
    if (info.isDirectory()) for (const child of (await readdir(full)).sort()) await addTree(rel ? `${rel}/${child}` : child);
  };
  let all: string[] | undefined;
  const listAll = async () => {
    if (all) return all;
    all = [];
    const walk = async (rel: string) => {
      for (const entry of (await readdir(rel ? join(rootDir, rel) : rootDir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
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
      try {
        await addTree(name);
      } catch {
        missing.push(pattern);
      }
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
          const info = await lstat(join(rootDir, dir));
          selected.set(dir, { name: dir, type: 'directory', size: 0, mode: info.mode, mtime: info.mtimeMs / 1000 });
        }
      }
      await addTree(m);
    }
  }
  async function* tar(): AsyncIterable<Uint8Array> {
    for (const entry of selected.values()) {
      yield entryHeader(entry);
      if (entry.type !== 'file') continue;
      let sent = 0;
      // The archive promises `size` bytes: a file that grew is cut, one that shrank is padded.
      for await (const chunk of createReadStream(join(rootDir, entry.name), { end: Math.max(0, entry.size - 1), highWaterMark: 1024 * 1024 })) {
        const b = chunk as Buffer;
        const piece = b.subarray(0, Math.max(0, entry.size - sent));
        sent += piece.length;
        if (piece.length) yield piece;
        if (sent >= entry.size) break;
      }
      if (sent < entry.size) yield Buffer.alloc(entry.size - sent);
      const pad = padding(entry.size);
      if (pad.length) yield pad;
    }
    yield END_OF_ARCHIVE;
  }
  return { tar: tar(), missing };
}

/** Unpacks a tar stream under `destDir`, refusing any entry that would land outside it. */
export async function extractLocal(destDir: string, source: AsyncIterable<Uint8Array>, limits: { maxBytes?: number } = {}) {
  await mkdir(destDir, { recursive: true });
  const realDest = await realpath(destDir);
  // Everything is inside `/` (a cache restores absolute paths there); `//` would match nothing.
  const insidePrefix = realDest.endsWith(sep) ? realDest : realDest + sep;
  const checkedDirs = new Map<string, boolean>();
  // A parent that is (or passes through) a symlink leading out of dest would let a write escape.
  const parentInside = async (path: string): Promise<void> => {
    const parent = dirname(path);
    let ok = checkedDirs.get(parent);
    if (ok === undefined) {
      const real = await realpath(parent);
      ok = real === realDest || real.startsWith(insidePrefix);
      checkedDirs.set(parent, ok);
    }
    if (!ok) throw new UnsafePathError(relative(destDir, path), 'a directory on its path is a symlink that leads outside the destination');
  };
  return readTar(
    source,
    async (entry, content) => {
      if (entry.name === '') return;
      const target = join(destDir, entry.name);
      if (entry.type === 'directory') {
        await mkdir(target, { recursive: true });
        await parentInside(join(target, 'x'));
        return;
      }
      await mkdir(dirname(target), { recursive: true });
      await parentInside(target);
      // Replace whatever is there (never write through an existing symlink).
      const existing = await lstat(target).catch(() => undefined);
      if (existing && (!existing.isDirectory() || entry.type !== 'file')) await rm(target, { recursive: true, force: true });
      if (entry.type === 'symlink') {
        await symlink(entry.linkname!, target);
      } else if (entry.type === 'hardlink') {
        const source = join(destDir, safeRelativeName(entry.linkname!));
        await parentInside(source);
        const info = await lstat(source).catch(() => undefined);
        if (!info || !info.isFile()) throw new UnsafePathError(entry.name, 'a hardlink must point to a file earlier in the same archive');
        await link(source, target);
      } else {
        if (existing?.isDirectory()) await rm(target, { recursive: true, force: true });
        const out = createWriteStream(target, { mode: entry.mode & 0o777 || 0o644 });
        for await (const chunk of content) if (!out.write(chunk)) await once(out, 'drain');
        out.end();
        await once(out, 'close');
      }
    },
    { maxBytes: limits.maxBytes },
  );
}
