import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A build's background process may move or remove files while a file step lists them. Each
 * test makes the change land exactly between the listing of a directory and the look at one of
 * its entries (the window a real build hits by chance), through a wrapped `readdir`.
 */
let afterReaddir: ((dir: string) => Promise<void>) | undefined;
jest.mock('node:fs/promises', () => {
  const real = jest.requireActual('node:fs/promises');
  return {
    ...real,
    readdir: async (...args: Parameters<typeof real.readdir>) => {
      const listed = await real.readdir(...args);
      const hook = afterReaddir;
      if (hook) await hook(String(args[0]));
      return listed;
    },
  };
});

// eslint-disable-next-line import/first
import { archiveLocal, extractLocal } from '../../runtime/agent/file-transfer';

describe('store_artifacts while the build still changes the tree', () => {
  let dir: string;
  let src: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gyre-vanish-'));
    src = join(dir, 'home');
    await mkdir(join(src, 'out', 'a'), { recursive: true });
    await mkdir(join(src, 'out', 'z'));
    await writeFile(join(src, 'out', 'a', 'big.bin'), 'big');
    await writeFile(join(src, 'out', 'z', 'report.txt'), 'report');
    afterReaddir = undefined;
  });
  afterEach(async () => {
    afterReaddir = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function stored(tar: AsyncIterable<Uint8Array>): Promise<string[]> {
    const dest = join(dir, 'dest');
    await extractLocal(dest, tar);
    const { readdir } = jest.requireActual('node:fs/promises');
    return ((await readdir(dest, { recursive: true })) as string[]).sort();
  }

  test('a directory moved away after it was listed is left out; the rest is stored, nothing reported missing', async () => {
    let moved = false;
    afterReaddir = async (listed) => {
      if (!moved && listed === join(src, 'out')) {
        moved = true;
        await rename(join(src, 'out', 'z'), join(src, 'out', 'z.moved'));
      }
    };
    const { tar, missing } = await archiveLocal(src, ['out']);
    expect(moved).toBe(true);
    expect(missing).toEqual([]);
    expect(await stored(tar)).toEqual(['out', 'out/a', 'out/a/big.bin']);
  });

  test('a file removed after its directory was listed is left out of a glob too', async () => {
    afterReaddir = async (listed) => {
      if (listed === join(src, 'out', 'a')) await rm(join(src, 'out', 'a', 'big.bin'), { force: true });
    };
    const { tar, missing } = await archiveLocal(src, ['out/*/*']);
    expect(missing).toEqual([]);
    // The directories above a match come along; the file that went is not stored.
    expect(await stored(tar)).toEqual(['out', 'out/a', 'out/z', 'out/z/report.txt']);
  });

  test('the path asked for is missing only when it is not there', async () => {
    afterReaddir = async () => undefined;
    const { missing } = await archiveLocal(src, ['out', 'nothing-here', 'out/a/big.bin/below']);
    expect(missing).toEqual(['nothing-here', 'out/a/big.bin/below']);
  });
});
