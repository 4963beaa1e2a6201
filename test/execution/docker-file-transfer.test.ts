import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDockerEngine } from '../../runtime/agent/docker-engine';
import { createDockerExecutor } from '../../runtime/agent/docker-executor';
import type { Executor } from '../../runtime/agent/executor';
import { createLogger } from '../../runtime/logger';
import { globToRegExp, isGlob } from '../../runtime/output/file-sets';
import { readTar, readTarAs, safeRelativeName, type TarEntry } from '../../runtime/output/tar';
import { END_OF_ARCHIVE, entryHeader, padding } from '../support/tar';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';

/**
 * The Docker executor's file transfer streams: `archive` lists names first and then streams only
 * what the patterns select; `extract` checks everything, spooling to a temporary file, before the
 * container sees a byte. What is shown here is behaviour: the selection, the bytes, what is left.
 */
const socket = containerSocket();
if (!socket) console.log('test/execution/docker-file-transfer: skipped, no Docker Engine API socket (set GYRE_TEST_DOCKER_SOCKET or start `podman system service`)');
const withEngine = socket ? describe : describe.skip;
const log = createLogger({ level: 'silent' });

async function sh(executor: Executor, script: string): Promise<{ exitCode: number | null; output: string }> {
  const chunks: Uint8Array[] = [];
  const { done } = executor.start({ script, shell: '/bin/sh -eo pipefail', env: {}, cwd: '~' }, (c) => void chunks.push(c), new AbortController().signal);
  const { exitCode } = await done;
  return { exitCode, output: Buffer.concat(chunks).toString('utf8') };
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * Every entry of a tar stream, in order, with a hash of each file's content (content is not kept).
 * The stream is read to its end (a tar reader stops at the end marker): an HTTP response left
 * unfinished would hold its connection open.
 */
async function entriesOf(tar: AsyncIterable<Uint8Array>): Promise<Array<TarEntry & { sha?: string }>> {
  const out: Array<TarEntry & { sha?: string }> = [];
  const iterator = tar[Symbol.asyncIterator]();
  await readTar({ [Symbol.asyncIterator]: () => iterator }, async (entry, content) => {
    const hash = createHash('sha256');
    for await (const c of content) hash.update(c);
    out.push(entry.type === 'file' ? { ...entry, sha: hash.digest('hex') } : entry);
  });
  while (!(await iterator.next()).done);
  return out;
}

const describeEntry = (e: TarEntry & { sha?: string }) => `${e.type} ${JSON.stringify(e.name)} mode=${e.mode.toString(8)} size=${e.size} mtime=${e.mtime}${e.linkname ? ` -> ${e.linkname}` : ''}${e.sha ? ` ${e.sha.slice(0, 12)}` : ''}`;

/**
 * What `archive` selected when it read the root's whole archive into memory (the behaviour before
 * it streamed), computed from the Engine's archive of the root: the reference for the selection.
 */
function selectAsBefore(tree: Map<string, TarEntry & { sha?: string }>, patterns: readonly string[]) {
  const names = [...tree.keys()].sort();
  const selected = new Set<string>();
  const missing: string[] = [];
  const addTree = (rel: string) => {
    for (const n of names) if (n === rel || n.startsWith(`${rel}/`)) selected.add(n);
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) if (tree.has(parts.slice(0, i).join('/'))) selected.add(parts.slice(0, i).join('/'));
  };
  for (const pattern of patterns) {
    const name = safeRelativeName(pattern);
    if (name === '') {
      names.forEach((n) => selected.add(n));
      continue;
    }
    if (!isGlob(name)) {
      if (tree.has(name)) addTree(name);
      else missing.push(pattern);
      continue;
    }
    const re = globToRegExp(name);
    const matches = names.filter((n) => re.test(n));
    if (matches.length === 0) missing.push(pattern);
    matches.forEach(addTree);
  }
  return { entries: names.filter((n) => selected.has(n)).map((n) => describeEntry(tree.get(n)!)), missing };
}

/** A tar stream of the given entries, one chunk per entry. */
async function* tarOf(entries: Array<{ entry: TarEntry; content?: Buffer }>): AsyncIterable<Uint8Array> {
  for (const { entry, content } of entries) {
    yield Buffer.concat([entryHeader(entry), content ?? Buffer.alloc(0), padding(content?.length ?? 0)]);
  }
  yield END_OF_ARCHIVE;
}

const file = (name: string, text: string) => ({ entry: { name, type: 'file' as const, size: Buffer.byteLength(text), mode: 0o644, mtime: 1_700_000_000 }, content: Buffer.from(text) });
const dir = (name: string) => ({ entry: { name, type: 'directory' as const, size: 0, mode: 0o755, mtime: 1_700_000_000 } });

describe('reading an archive named after another directory (readTarAs)', () => {
  // The Engine's archive of <root>/node_modules/.bin names its entries `.bin/...`.
  const engineArchive = (extra: Buffer[] = []) =>
    (async function* () {
      yield Buffer.concat([
        entryHeader({ name: '.bin', type: 'directory', size: 0, mode: 0o755, mtime: 0 }),
        entryHeader({ name: '.bin/tool', type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: '../../pkg/tool.js' }),
        entryHeader({ name: '.bin/copy', type: 'hardlink', size: 0, mode: 0o644, mtime: 0, linkname: '.bin/tool' }),
        ...extra,
        END_OF_ARCHIVE,
      ]);
    })();
  const underRoot = (name: string) => (name === '.bin' || name.startsWith('.bin/') ? `node_modules/${name}` : undefined);
  const read = async (tar: AsyncIterable<Uint8Array>, keep?: (name: string) => boolean) => {
    const seen: string[] = [];
    await readTarAs(tar, { rename: underRoot, keep }, async (e) => void seen.push(`${e.type} ${e.name}${e.linkname ? ` -> ${e.linkname}` : ''}`));
    return seen;
  };

  it('judges links against the root, not the archived directory, and renames hardlink targets', async () => {
    expect(await read(engineArchive())).toEqual(['directory node_modules/.bin', 'symlink node_modules/.bin/tool -> ../../pkg/tool.js', 'hardlink node_modules/.bin/copy -> node_modules/.bin/tool']);
    // (readTar, judging against the archive itself, refuses the same link)
    await expect(readTar(engineArchive(), async () => undefined)).rejects.toThrow(/points outside the root/);
  });

  it('still refuses a link out of the root unless links pass as they are, checks names always, and skips unread what is not kept', async () => {
    const escaping = entryHeader({ name: '.bin/up', type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: '../../../etc' });
    await expect(read(engineArchive([escaping]))).rejects.toThrow(/node_modules\/\.bin\/up'?: the symlink points outside the root/);
    const fifo = entryHeader({ name: '.bin/fifo', type: 'fifo', size: 0, mode: 0o644, mtime: 0 });
    expect(await read(engineArchive([escaping, fifo]), (n) => !n.endsWith('/up') && !n.endsWith('/fifo'))).toHaveLength(3);
    // linksAsIs passes the target on, names are checked all the same.
    const links: string[] = [];
    await readTarAs(engineArchive([escaping]), { rename: underRoot, linksAsIs: true }, async (e) => void (e.type === 'symlink' && links.push(`${e.name} -> ${e.linkname}`)));
    expect(links).toEqual(['node_modules/.bin/tool -> ../../pkg/tool.js', 'node_modules/.bin/up -> ../../../etc']);
    const dotdot = entryHeader({ name: '.bin/../../x', type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: 'y' });
    await expect(readTarAs(engineArchive([dotdot]), { rename: underRoot, linksAsIs: true }, async () => undefined)).rejects.toThrow(/'\.\.' would leave the root/);
    await expect(read(engineArchive([fifo]))).rejects.toThrow(/devices, fifos/);
  });
});

withEngine('Docker executor file transfer, streamed', () => {
  let executor: Executor;
  const taskId = `transfer-${Date.now()}-${process.pid}`;
  const spool = mkdtempSync(join(tmpdir(), 'gyre-docker-spool-'));
  const spooled = () => readdirSync(spool);
  beforeAll(async () => {
    executor = await createDockerExecutor({ socketPath: socket!, taskId, log, images: [{ image: BUSYBOX_IMAGE }], tempDir: spool });
  }, 60_000);
  afterAll(async () => {
    await executor?.cleanup();
    rmSync(spool, { recursive: true, force: true });
  });

  it('archive selects exactly what it selected from the whole tree in memory, for awkward names, links and overlapping patterns', async () => {
    // WHEN a tree with spaces and a newline in names, symlinks (relative, absolute, to a
    // directory), a hardlink, modes and an empty directory is archived with many pattern sets
    const made = await sh(
      executor,
      `mkdir -p ~/sel && cd ~/sel
       mkdir -p 'a dir/sub' b/c/d node_modules/.bin pkg empty deep/er/est
       printf one > 'a dir/file one.txt'; printf two > 'a dir/sub/two.txt'
       printf nl > "$(printf 'new\\nline.txt')"
       echo deep > b/c/d/deep.log; echo top > b/c/top.log; echo keep > b/keep.txt; ln b/keep.txt b/linked.txt
       echo index > pkg/index.js; chmod 600 pkg/index.js; chmod 750 deep/er
       echo x > deep/er/est/x.log
       ln -s ../../pkg node_modules/.bin/tool; ln -s pkg dirlink`,
    );
    expect(made).toMatchObject({ exitCode: 0 });
    // The Engine's own archive of the root, as the old implementation read it.
    const engine = createDockerEngine(socket!);
    const res = await engine.stream('GET', `/containers/${await primaryOf(engine, taskId)}/archive?path=${encodeURIComponent(`${executor.home}/sel`)}`);
    const tree = new Map<string, TarEntry & { sha?: string }>();
    for (const e of await entriesOf(res)) {
      if (e.name === 'sel') continue;
      const name = e.name.slice('sel/'.length);
      tree.set(name, { ...e, name, linkname: e.type === 'hardlink' ? e.linkname!.slice('sel/'.length) : e.linkname });
    }
    expect(tree.get('dirlink')).toMatchObject({ type: 'symlink', linkname: 'pkg' });
    expect(tree.has('new\nline.txt')).toBe(true);

    const cases: string[][] = [
      ['.'],
      ['b'],
      ['b/c/**/*.log'],
      ['**/*.log', 'b/keep.txt'],
      ['a dir/file one.txt'],
      ['new\nline.txt'],
      ['node_modules'],
      ['node_modules/.bin/tool'],
      ['dirlink'],
      ['dirlink/index.js'],
      ['*'],
      ['b/*', 'pkg'],
      ['nothing', '**/nothing*', 'b/c/top.log'],
      ['empty'],
      ['b/c', 'b/c/d', './b/c/'],
      ['**'],
      ['?/c'],
      ['deep/er/est/x.log'],
      ['deep/**/x.log', 'a dir/sub'],
      ['b/linked.txt', 'b/keep.txt'],
      ['b/keep.txt/x', 'pkg/index.js', 'pkg/nothing'],
    ];
    for (const patterns of cases) {
      // THEN the same entries (names, types, modes, times, links, content) and the same missing patterns
      const { tar, missing } = await executor.archive('~/sel', patterns);
      const got = await entriesOf(tar);
      const expected = selectAsBefore(tree, patterns);
      expect({ patterns, entries: got.map(describeEntry).sort(), missing }).toEqual({ patterns, entries: expected.entries.sort(), missing: expected.missing });
      // and every directory comes before what is in it.
      const seen = new Set<string>();
      for (const e of got) {
        const parent = e.name.includes('/') ? e.name.slice(0, e.name.lastIndexOf('/')) : '';
        if (parent && got.some((p) => p.name === parent)) expect({ entry: e.name, parentFirst: seen.has(parent) }).toEqual({ entry: e.name, parentFirst: true });
        seen.add(e.name);
      }
    }
    // A link is packed as a link (the Engine would follow it if asked for it by name).
    expect((await entriesOf((await executor.archive('~/sel', ['dirlink'])).tar)).map((e) => `${e.type} ${e.name} -> ${e.linkname}`)).toEqual(['symlink dirlink -> pkg']);
    // What archive sends, extract takes back: hardlinks and links land whole.
    await executor.extract('/tmp/round-trip', (await executor.archive('~/sel', ['b', 'node_modules', 'pkg'])).tar);
    expect(await sh(executor, 'cd /tmp/round-trip && cat b/linked.txt node_modules/.bin/tool/index.js && stat -c %i b/keep.txt b/linked.txt | uniq | wc -l')).toEqual({ exitCode: 0, output: 'keep\nindex\n1\n' });
  }, 120_000);

  it('archive of many files with a pattern streams exactly the matching entries, and a large file byte-identical', async () => {
    const made = await sh(
      executor,
      `mkdir -p ~/many && cd ~/many
       for d in $(seq 0 19); do mkdir -p "d$d/sub"; for f in $(seq 0 49); do echo "$d-$f" > "d$d/f$f.txt"; echo "$d-$f" > "d$d/sub/f$f.log"; done; done
       head -c 41943040 /dev/urandom > d7/big.bin
       sha256sum d7/big.bin | cut -d' ' -f1`,
    );
    expect(made.exitCode).toBe(0);
    const bigSha = made.output.trim();

    const { tar, missing } = await executor.archive('~/many', ['d*/f1?.txt', 'd7/big.bin', 'd3/sub']);
    expect(missing).toEqual([]);
    const entries = await entriesOf(tar);

    const expected = new Map<string, string | undefined>();
    for (let d = 0; d < 20; d++) {
      expected.set(`directory d${d}`, undefined);
      for (let f = 10; f < 20; f++) expected.set(`file d${d}/f${f}.txt`, sha256(Buffer.from(`${d}-${f}\n`)));
    }
    expected.set('directory d3/sub', undefined);
    for (let f = 0; f < 50; f++) expected.set(`file d3/sub/f${f}.log`, sha256(Buffer.from(`3-${f}\n`)));
    expected.set('file d7/big.bin', bigSha);
    expect(new Map(entries.map((e) => [`${e.type} ${e.name}`, e.sha]))).toEqual(expected);
    expect(entries.find((e) => e.name === 'd7/big.bin')?.size).toBe(41943040);
  }, 120_000);

  it('only the selected entries are read: a fifo elsewhere does not stop the archive; links go as they are, as the shell executor packs them', async () => {
    await sh(executor, 'mkdir -p ~/mixed/keep ~/mixed/other && cd ~/mixed && echo a > keep/a.txt && echo b > b.txt && ln -s /etc other/abs && mkfifo other/fifo');
    // Two selections at the top: read from the root's own archive, which holds the link and the fifo too.
    const kept = await entriesOf((await executor.archive('~/mixed', ['keep', 'b.txt', 'other/nothing*'])).tar);
    expect(kept.map((e) => `${e.type} ${e.name}`).sort()).toEqual(['directory keep', 'file b.txt', 'file keep/a.txt']);
    // (Read with links as they are: the link to /etc would be refused first otherwise, when it comes first.)
    const asIs = (tar: AsyncIterable<Uint8Array>) => readTarAs(tar, { rename: (n) => n, linksAsIs: true }, async () => undefined);
    await expect(executor.archive('~/mixed', ['other']).then(({ tar }) => asIs(tar))).rejects.toThrow(/devices, fifos/);
    // (A restore judges links: extract refuses this one. Reading it back here skips that check.)
    const links: string[] = [];
    const { tar } = await executor.archive('~/mixed', ['other/abs']);
    await readTarAs(tar, { rename: (n) => n, linksAsIs: true }, async (e) => void links.push(`${e.type} ${e.name} -> ${e.linkname}`));
    expect(links).toEqual(['directory other -> undefined', 'symlink other/abs -> /etc']);
  }, 60_000);

  it('a reader that stops early closes the archive; the executor goes on working', async () => {
    await sh(executor, 'mkdir -p ~/early && head -c 20971520 /dev/urandom > ~/early/big.bin && echo small > ~/early/z.txt');
    const { tar } = await executor.archive('~/early', ['.']);
    for await (const chunk of tar) {
      expect(chunk.length).toBeGreaterThan(0);
      break;
    }
    const again = await entriesOf((await executor.archive('~/early', ['z.txt'])).tar);
    expect(again.map((e) => `${e.type} ${e.name} ${e.sha}`)).toEqual([`file z.txt ${sha256(Buffer.from('small\n'))}`]);
    expect(await sh(executor, 'echo still here')).toEqual({ exitCode: 0, output: 'still here\n' });
  }, 60_000);

  it('extract spools the checked archive to a temporary file, writes it byte-identical, and removes the file', async () => {
    const big = Buffer.alloc(30 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    let seenWhileReading: Array<{ name: string; files: Array<{ name: string; size: number }> }> = [];
    async function* withBig(): AsyncIterable<Uint8Array> {
      yield Buffer.concat([entryHeader(dir('out').entry), entryHeader(file('out/a.txt', 'alpha\n').entry), Buffer.from('alpha\n'), padding(6)]);
      yield entryHeader({ name: 'out/big.bin', type: 'file', size: big.length, mode: 0o644, mtime: 1_700_000_000 });
      for (let i = 0; i < big.length; i += 1024 * 1024) yield big.subarray(i, i + 1024 * 1024);
      yield padding(big.length);
      // By now everything before the end was checked and is being spooled: look at the spool once
      // its writes have caught up (a slow disk may still hold a few of the chunks read).
      const look = () => spooled().map((name) => ({ name, files: readdirSync(join(spool, name)).map((f) => ({ name: f, size: statSync(join(spool, name, f)).size })) }));
      for (const by = Date.now() + 10_000; Date.now() < by; await new Promise((r) => setTimeout(r, 50))) {
        seenWhileReading = look();
        if ((seenWhileReading[0]?.files[0]?.size ?? 0) > big.length - 2 * 1024 * 1024) break;
      }
      yield END_OF_ARCHIVE;
    }
    const result = await executor.extract('/tmp/extracted', withBig());
    expect(result).toEqual({ entries: 3, bytes: big.length + 6 });
    expect(seenWhileReading).toHaveLength(1);
    expect(seenWhileReading[0].name).toMatch(/^gyre-extract-/);
    expect(seenWhileReading[0].files[0].size).toBeGreaterThan(big.length - 2 * 1024 * 1024);
    expect(spooled()).toEqual([]);
    const check = await sh(executor, 'cat /tmp/extracted/out/a.txt; sha256sum /tmp/extracted/out/big.bin | cut -d" " -f1');
    expect(check).toEqual({ exitCode: 0, output: `alpha\n${sha256(big)}\n` });
  }, 60_000);

  it('extract with a bad entry after good ones writes nothing and leaves no temporary file', async () => {
    let spooledBeforeBadEntry: string[] = [];
    async function* source(): AsyncIterable<Uint8Array> {
      yield Buffer.concat([entryHeader(dir('good').entry), entryHeader(file('good/one.txt', 'one\n').entry), Buffer.from('one\n'), padding(4)]);
      yield Buffer.concat([entryHeader(file('good/two.txt', 'two\n').entry), Buffer.from('two\n'), padding(4)]);
      spooledBeforeBadEntry = spooled();
      yield Buffer.concat([entryHeader({ name: 'good/../../escape.txt', type: 'file', size: 4, mode: 0o644, mtime: 0 }), Buffer.from('bad\n'), padding(4), END_OF_ARCHIVE]);
    }
    await expect(executor.extract('/tmp/bad-dest', source())).rejects.toThrow(/'\.\.' would leave the root/);
    expect(spooledBeforeBadEntry).toHaveLength(1);
    expect(spooled()).toEqual([]);
    expect(await sh(executor, 'ls -d /tmp/bad-dest /tmp/escape.txt /escape.txt 2>/dev/null || true; echo done')).toEqual({ exitCode: 0, output: 'done\n' });
  }, 60_000);

  it('extract over the byte limit, or into a destination that cannot be made, writes nothing and leaves no temporary file', async () => {
    await expect(executor.extract('/tmp/limited', tarOf([dir('d'), file('d/a.txt', 'x'.repeat(600)), file('d/b.txt', 'y'.repeat(600))]), { maxBytes: 1000 })).rejects.toThrow(/more than 1000 bytes/);
    expect(spooled()).toEqual([]);
    expect((await sh(executor, 'ls -d /tmp/limited 2>/dev/null || true; echo done')).output).toBe('done\n');

    await sh(executor, 'echo i-am-a-file > /tmp/a-file');
    await expect(executor.extract('/tmp/a-file/under', tarOf([file('x.txt', 'x')]))).rejects.toThrow(/cannot make \/tmp\/a-file\/under/);
    expect(spooled()).toEqual([]);
  }, 60_000);
});

async function primaryOf(engine: ReturnType<typeof createDockerEngine>, taskId: string): Promise<string> {
  const { body } = await engine.call<any[]>('GET', `/containers/json?filters=${encodeURIComponent(JSON.stringify({ label: [`gyre.task=${taskId}`, 'gyre.role=primary'] }))}`);
  if (body.length !== 1) throw new Error(`expected one primary container of task ${taskId}, found ${body.length}`);
  return body[0].Id;
}
