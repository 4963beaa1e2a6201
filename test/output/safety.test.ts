import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { archiveLocal, extractLocal } from '../../runtime/agent/file-transfer';
import { blobKey } from '../../runtime/blob/blob-store';
import { END_OF_ARCHIVE, entryHeader, padding, safeRelativeName, type TarEntry } from '../../runtime/output/tar';

/** A tar built by hand, so entries can be as hostile as an attacker likes. */
function craft(entries: (TarEntry & { body?: string })[]): Buffer[] {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    parts.push(entryHeader({ ...e, size: e.type === 'file' ? body.length : 0 }));
    if (e.type === 'file') parts.push(body, padding(body.length));
  }
  parts.push(END_OF_ARCHIVE);
  return parts;
}

async function* stream(parts: Buffer[]) {
  for (const p of parts) yield p;
}

const file = (name: string, body = 'x'): TarEntry & { body: string } => ({ name, type: 'file', size: 0, mode: 0o644, mtime: 0, body });

describe('archives and names that would escape their root are refused', () => {
  let dir: string;
  let dest: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gyre-safety-'));
    dest = join(dir, 'dest');
    await mkdir(dest);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  test.each([
    ['a parent segment', [file('ok/../../escaped.txt')], /'\.\.' would leave the root/],
    ['an absolute path', [file('/tmp/escaped.txt')], /absolute paths are not allowed/],
    ['a NUL byte (in a pax path)', [file('evil\0' + 'x'.repeat(120))], /NUL byte/],
    ['an over-long name', [file('a/'.repeat(2100) + 'b')], /longer than 4096 bytes/],
    ['an over-long segment', [file('x'.repeat(300))], /segment is longer than 255/],
    ['a symlink to an absolute path', [{ name: 'link', type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: '/etc' } as TarEntry], /symlink points to the absolute path/],
    ['a symlink out of the root', [{ name: 'd/link', type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: '../../outside' } as TarEntry], /symlink points outside the root/],
    ['a hardlink out of the root', [{ name: 'hard', type: 'hardlink', size: 0, mode: 0o644, mtime: 0, linkname: '../outside' } as TarEntry], /hardlink points outside the root/],
  ])('%s', async (_what, entries, message) => {
    await expect(extractLocal(dest, stream(craft(entries)))).rejects.toThrow(message);
    await expect(lstat(join(dir, 'escaped.txt'))).rejects.toThrow();
  });

  test('a file is not written through a symlink in the destination that leads outside it', async () => {
    await writeFile(join(dir, 'secret.txt'), 'original');
    await symlink(dir, join(dest, 'out'));
    await expect(extractLocal(dest, stream(craft([file('out/secret.txt', 'overwritten')])))).rejects.toThrow(/symlink that leads outside/);
    expect(await readFile(join(dir, 'secret.txt'), 'utf8')).toBe('original');
  });

  test('a symlink earlier in the same archive cannot be used to write outside', async () => {
    const entries = [{ name: 'up', type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: '..' } as TarEntry, file('up/escaped.txt')];
    await expect(extractLocal(dest, stream(craft(entries)))).rejects.toThrow(/symlink points outside the root/);
    await expect(lstat(join(dir, 'escaped.txt'))).rejects.toThrow();
  });

  test('content beyond the size bound is refused', async () => {
    await expect(extractLocal(dest, stream(craft([file('big', 'y'.repeat(5000))])), { maxBytes: 1000 })).rejects.toThrow(/more than 1000 bytes/);
  });

  test('safe archives round-trip: files, directories, links inside the root, long names', async () => {
    const src = join(dir, 'src');
    const long = 'n'.repeat(150);
    await mkdir(join(src, 'sub', long), { recursive: true });
    await writeFile(join(src, 'sub', long, 'file.txt'), 'deep');
    await writeFile(join(src, 'top.txt'), 'top');
    await symlink('top.txt', join(src, 'sub', 'rel-link'));
    const { tar, missing } = await archiveLocal(src, ['.', 'nothing-here']);
    expect(missing).toEqual(['nothing-here']);
    await extractLocal(dest, tar);
    expect(await readFile(join(dest, 'sub', long, 'file.txt'), 'utf8')).toBe('deep');
    expect((await lstat(join(dest, 'sub', 'rel-link'))).isSymbolicLink()).toBe(true);
  });

  test('user-given names and patterns are checked the same way; blob keys only take plain segments', async () => {
    expect(() => safeRelativeName('../../etc/passwd')).toThrow(/would leave the root/);
    await expect(archiveLocal(dir, ['../*'])).rejects.toThrow(/would leave the root/);
    expect(() => blobKey('caches', '../other')).toThrow(/not a plain name/);
    expect(() => blobKey('caches', 'a/b')).toThrow(/not a plain name/);
    expect(blobKey('caches', 'p1', 'c.tar.gz')).toBe('caches/p1/c.tar.gz');
  });
});
