import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectIsolation } from '../../runtime/agent/sandbox/isolation';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import { startTestGyre, type TestGyre } from '../support/gyre';

/**
 * File steps read the build's tree as the build. While store_artifacts reads the tree, a
 * background process of the build swaps a directory it picked for a symlink to a directory only
 * root may read. An agent that picked the files and then read them with its own (root's) rights
 * would read the secret into an artifact; one that reads as the build uid cannot.
 */
const SECRET = `server-only-${process.pid}-${Date.now()}`;
const NODES = 2;
/** The large file takes the store step long enough to read for the swap to land in between. */
const BIG_MB = 96;
const SWAP_AFTER_S = 0.4;

const root = process.getuid?.() === 0;
(root ? describe : describe.skip)('file steps under a symlink-swapping build (build uids, as root)', () => {
  let g: TestGyre;
  let secretDir: string;
  let workRoot: string;
  beforeAll(async () => {
    workRoot = mkdtempSync(join(tmpdir(), 'gyre-swap-work-'));
    chmodSync(workRoot, 0o711);
    // The secret: in a directory only root may enter (as the data directory is).
    secretDir = mkdtempSync(join(tmpdir(), 'gyre-server-only-'));
    mkdirSync(join(secretDir, 'inner'), { mode: 0o700 });
    writeFileSync(join(secretDir, 'secret.txt'), SECRET, { mode: 0o600 });
    writeFileSync(join(secretDir, 'inner', 'secret.txt'), SECRET, { mode: 0o600 });
    g = await startTestGyre({ env: { GYRE_EXECUTOR: 'sandbox', GYRE_BUILD_UIDS: '912000-912015', GYRE_RUNNER_SLOTS: '2' } });
  });
  afterAll(async () => {
    await g?.stop();
    rmSync(secretDir, { recursive: true, force: true });
    rmSync(workRoot, { recursive: true, force: true });
  });

  it('an archive picked before a swap reads, after it, only what the build may read', async () => {
    const taskDir = join(workRoot, 'task-1');
    const isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: 912100, last: 912103 } });
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      const made = executor.start(
        // a/big.bin first: the helper streams it and waits on the pipe until the archive is read.
        { script: `mkdir -p out/a out/z && head -c 8388608 /dev/zero > out/a/big.bin && printf '${'x'.repeat(SECRET.length)}' > out/z/secret.txt`, shell: '/bin/sh -e', env: { PATH: '/usr/bin:/bin', HOME: taskDir }, cwd: '~' },
        () => undefined,
        new AbortController().signal,
      );
      expect((await made.done).exitCode).toBe(0);
      // The files are picked: z is a directory. Then the build swaps z for a link to the secret.
      const { tar, missing } = await executor.archive('~/out', ['.']);
      expect(missing).toEqual([]);
      renameSync(join(taskDir, 'out', 'z'), join(taskDir, 'out', 'z.real'));
      symlinkSync(join(secretDir, 'inner'), join(taskDir, 'out', 'z'));
      const read = (async () => {
        const chunks: Buffer[] = [];
        for await (const chunk of tar) chunks.push(Buffer.from(chunk));
        return Buffer.concat(chunks).toString('latin1');
      })();
      await expect(read).rejects.toThrow(/EACCES: permission denied, open '.*out\/z\/secret.txt'/);
    } finally {
      await executor.cleanup();
      await isolation.close();
    }
  });

  it('a directory under the path that the build may not list fails the archive, naming it', async () => {
    const taskDir = join(workRoot, 'task-2');
    const isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: 912104, last: 912107 } });
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      const made = executor.start(
        { script: 'mkdir -p out/open out/locked && echo x > out/open/a.txt && echo y > out/locked/b.txt && chmod 000 out/locked', shell: '/bin/sh -e', env: { PATH: '/usr/bin:/bin', HOME: taskDir }, cwd: '~' },
        () => undefined,
        new AbortController().signal,
      );
      expect((await made.done).exitCode).toBe(0);
      // Not "nothing found": the step says which directory it could not read.
      await expect(executor.archive('~', ['out'])).rejects.toThrow(/EACCES: permission denied, scandir '.*out\/locked'/);
    } finally {
      await executor.cleanup();
      await isolation.close();
    }
  });

  it('never stores what only the server may read', async () => {
    const dir = join(secretDir, 'inner');
    const harmless = 'x'.repeat(SECRET.length);
    // The store step picks its files (a large one first, then z/secret.txt, z a directory), then
    // reads them one after another. While it reads the large one, the build's background process
    // swaps z for a link to the secret directory: a reader that follows it gets the secret.
    await g.addProject('acme/swap', {
      '.circleci/config.yml': `version: 2.1
jobs:
  swap:
    machine: true
    parallelism: ${NODES}
    steps:
      - run: |
          cat ${dir}/secret.txt && echo "the build can read the secret: this test proves nothing"
          mkdir -p ~/out/a ~/out/z
          head -c ${BIG_MB}m /dev/urandom > ~/out/a/big.bin
          printf '${harmless}' > ~/out/z/secret.txt
          setsid sh -c 'sleep ${SWAP_AFTER_S}; cd ~/out && mv z z.real && ln -s ${dir} z' >/dev/null 2>&1 < /dev/null &
      - store_artifacts: { path: ~/out }
workflows:
  w:
    jobs: [swap]
`,
    });
    const { id } = await g.trigger('acme/swap');
    const { jobs } = await g.waitForPipeline(id, 150_000);
    for (let node = 0; node < NODES; node++) {
      const output = (await g.raw('GET', `/api/v2/project/gh/acme/swap/job/${jobs.swap.job_number}/output?step=0&node_index=${node}`)).text;
      expect(output).not.toContain('proves nothing');
    }
    // The store step fails (z/secret.txt cannot be read as the build) or stores the harmless file;
    // what it stored never holds the secret.
    const artifacts = (await g.api('GET', `/api/v2/project/gh/acme/swap/${jobs.swap.job_number}/artifacts`)).items;
    for (const artifact of artifacts.filter((a: any) => a.path.endsWith('secret.txt'))) {
      const body = await (await fetch(artifact.url)).text();
      expect({ path: artifact.path, body }).toEqual({ path: artifact.path, body: harmless });
    }
    for (let node = 0; node < NODES; node++) {
      const output = (await g.raw('GET', `/api/v2/project/gh/acme/swap/job/${jobs.swap.job_number}/output?step=1&node_index=${node}`)).text;
      // Either it never saw the link (the whole tree stored), or z went between the listing of
      // out and the look at z (left out: big.bin alone stored), or reading through it was refused.
      expect(output).toMatch(/Uploaded 2 artifact files|Uploaded 1 artifact file\.|permission denied|EACCES|refused 'out\/z': the symlink points to the absolute path/i);
    }
  }, 180_000);
});

(root ? describe : describe.skip)('a build uid given to the next task', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_EXECUTOR: 'sandbox', GYRE_BUILD_UIDS: '912200-912203', GYRE_RUNNER_SLOTS: '1' } });
  });
  afterAll(() => g?.stop());

  it('finds nothing the task before it left where every user may write', async () => {
    const name = `gyre-leftover-${process.pid}-${Date.now()}`;
    await g.addProject('acme/reuse', {
      '.circleci/config.yml': `version: 2.1
jobs:
  first:
    machine: true
    steps:
      - run: |
          id -u
          umask 077
          echo first-task-private > /tmp/${name}.txt
          mkdir /tmp/${name}.d && echo first-task-private > /tmp/${name}.d/inside.txt && chmod 755 /tmp/${name}.d
          echo first-task-private > /dev/shm/${name}.txt
  second:
    machine: true
    steps:
      - run: |
          id -u
          for f in /tmp/${name}.txt /tmp/${name}.d/inside.txt /dev/shm/${name}.txt; do cat $f 2>/dev/null && echo "LEAK: $f"; done
          echo looked
workflows:
  w:
    jobs:
      - first
      - second: { requires: [first] }
`,
    });
    const leftovers = [`/tmp/${name}.txt`, `/tmp/${name}.d`, `/dev/shm/${name}.txt`];
    const { id } = await g.trigger('acme/reuse');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    const out = async (job: any) => (await g.raw('GET', `/api/v2/project/gh/acme/reuse/job/${job.job_number}/output?step=0`)).text;
    const [first, second] = [await out(jobs.first), await out(jobs.second)];
    // One slot: the second task runs as the very uid the first did.
    expect(second.split('\n')[0]).toBe(first.split('\n')[0]);
    expect(second).toContain('looked');
    try {
      expect(second).not.toContain('LEAK');
    } finally {
      for (const leftover of leftovers) rmSync(leftover, { recursive: true, force: true });
    }

  }, 90_000);
});
