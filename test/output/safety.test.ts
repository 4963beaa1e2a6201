import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { archiveLocal, extractLocal } from '../../runtime/agent/file-transfer';
import { blobKey } from '../../runtime/blob/blob-store';
import { readTar, safeRelativeName, type TarEntry } from '../../runtime/output/tar';
import { craftTar, END_OF_ARCHIVE, entryHeader, padding, type CraftedEntry } from '../support/tar';

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

  const link = (name: string, target: string): TarEntry => ({ name, type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: target });
  const hard = (name: string, target: string): TarEntry => ({ name, type: 'hardlink', size: 0, mode: 0o644, mtime: 0, linkname: target });
  /** Every symlink under `root`, with where it really leads. */
  const linksUnder = async (root: string): Promise<string[]> => {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const entry of await readdir(join(root, rel), { withFileTypes: true })) {
        const name = rel ? `${rel}/${entry.name}` : entry.name;
        const path = join(root, name);
        if (entry.isSymbolicLink()) out.push(`${name} -> ${await readlink(path)} = ${await realpath(path).catch(() => 'nowhere')}`);
        else if (entry.isDirectory()) await walk(name);
      }
    };
    await walk('');
    return out;
  };

  test('a symlink chain: `a/b/c -> .` then `a/b/c/y -> ../../..` would leave a link to the parent; it is refused', async () => {
    const chain = [link('a/b/c', '.'), link('a/b/c/y', '../../..')];
    await expect(extractLocal(dest, stream(craft(chain)))).rejects.toThrow(/symlink points outside the root/);
    // Nothing leads out: only the first, harmless link was made.
    const links = await linksUnder(dest);
    expect(links).toEqual([`a/b/c -> . = ${await realpath(join(dest, 'a/b'))}`]);
    // The check is on the archive itself too (what a Docker extract sees before the Engine does).
    await expect(readTar(stream(craft(chain)), async () => undefined)).rejects.toThrow(/'\.\.\/\.\.\/\.\.' from 'a\/b'/);
  });

  test('the same chain through a link already on the disk is refused', async () => {
    await mkdir(join(dest, 'a/b'), { recursive: true });
    await symlink('.', join(dest, 'a/b/c'));
    await expect(extractLocal(dest, stream(craft([link('a/b/c/y', '../../..')])))).rejects.toThrow(/symlink points outside the root \('\.\.\/\.\.\/\.\.' from 'a\/b'\)/);
    await expect(lstat(join(dest, 'a/b/y'))).rejects.toThrow();
  });

  test("a link whose target climbs after a name (`x -> a/b/../..`) is refused: a later `a/b -> .` would make it lead out", async () => {
    await expect(extractLocal(dest, stream(craft([link('x', 'a/b/../..'), link('a/b', '.')])))).rejects.toThrow(/has '\.\.' after a name/);
    expect(await linksUnder(dest)).toEqual([]);
  });

  test('a link that descends through a link on the disk leading out is refused', async () => {
    await mkdir(join(dir, 'outside'));
    await symlink('../outside', join(dest, 'out'));
    await expect(extractLocal(dest, stream(craft([link('x', 'out/thing')])))).rejects.toThrow(/through a link already in the destination/);
    await expect(lstat(join(dest, 'x'))).rejects.toThrow();
  });

  test('no directory is made before its place is checked (a link on the disk leading out)', async () => {
    await mkdir(join(dir, 'outside'));
    await symlink('../outside', join(dest, 'out'));
    await expect(extractLocal(dest, stream(craft([file('out/made/by/mkdir/file.txt')])))).rejects.toThrow(/symlink that leads outside/);
    expect(await readdir(join(dir, 'outside'))).toEqual([]);
    await expect(extractLocal(dest, stream(craft([{ name: 'out/newdir', type: 'directory', size: 0, mode: 0o755, mtime: 0 }])))).rejects.toThrow(/symlink that leads outside/);
    expect(await readdir(join(dir, 'outside'))).toEqual([]);
  });

  test('hard links out of the destination are refused, through a link on the disk or to a link', async () => {
    await mkdir(join(dir, 'outside'));
    await writeFile(join(dir, 'outside', 'secret'), 'secret');
    await symlink('../outside', join(dest, 'sub'));
    await expect(extractLocal(dest, stream(craft([hard('h', 'sub/secret')])))).rejects.toThrow(/symlink that leads outside/);
    await expect(extractLocal(dest, stream(craft([link('l', 'sub'), hard('h', 'l')])))).rejects.toThrow(/through a link already in the destination|regular file inside/);
    await expect(lstat(join(dest, 'h'))).rejects.toThrow();
    // A hard link to a file earlier in the archive is made.
    await extractLocal(dest, stream(craft([file('f', 'content'), hard('g', 'f')])));
    expect(await readFile(join(dest, 'g'), 'utf8')).toBe('content');
  });

  test.each<[string, CraftedEntry]>([
    ['a character device', { name: 'dev', type: 'character-device', size: 0, mode: 0o666, mtime: 0 }],
    ['a fifo', { name: 'pipe', type: 'fifo', size: 0, mode: 0o666, mtime: 0 }],
  ])('%s is refused', async (_what, entry) => {
    await expect(extractLocal(dest, stream([craftTar([entry])]))).rejects.toThrow(/devices, fifos/);
    expect(await readdir(dest)).toEqual([]);
  });

  test('the number of entries is capped', async () => {
    const many = Array.from({ length: 101 }, (_, i) => file(`f${i}`));
    await expect(extractLocal(dest, stream(craft(many)), { maxEntries: 100 })).rejects.toThrow(/more than 100 entries/);
    expect((await readdir(dest)).length).toBeLessThanOrEqual(100);
  });

  test('a source that goes on with zeros after the end of the archive is not read to its end', async () => {
    let sent = 0;
    async function* zeros() {
      yield* craft([file('a.txt', 'a')]);
      for (let i = 0; i < 256; i++) {
        sent += 1024 * 1024;
        yield Buffer.alloc(1024 * 1024);
      }
    }
    expect(await extractLocal(dest, zeros())).toEqual({ entries: 1, bytes: 1 });
    expect(sent).toBeLessThan(64 * 1024 * 1024);
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
