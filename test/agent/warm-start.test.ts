import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectIsolation, type BuildBox, type Isolation } from '../../runtime/agent/sandbox/isolation';
import { uidKeepers } from '../support/keeper-processes';
import { startServerProcess } from '../support/processes';

/**
 * A runner makes ready, at its start, what its slots' first tasks would otherwise start on their way
 * (Isolation.warm): a keeper and a build uid for each slot. What a user would notice: the first
 * pipelines after a start, and the first burst of parallel jobs, wait for Node processes to start
 * (a second or more on a small machine); or, if warming were wrong, a task given a uid another task
 * holds, more keepers than slots left running, or keepers left behind at stop.
 */
const root = process.getuid?.() === 0;
const FIRST = 912500;
const LAST = 912503;
/** The server's own range, apart from the isolation tests'. */
const SERVER_UIDS = { first: 912510, last: 912519 };

/**
 * The uids (of FIRST-LAST, or `range`) whose keepers are running now, each once: a keeper's child
 * looks like the keeper until it has exec'd (its signaller, being started), so a uid may be seen twice.
 */
function keptUids(range = { first: FIRST, last: LAST }): number[] {
  return [...new Set(uidKeepers(range.first, range.last).map((k) => k.uid))].sort();
}

/** Waits until `check` holds, or `ms` have passed (a keeper is a Node start: seconds each on a loaded machine). */
async function waitFor(check: () => boolean, ms = 30_000): Promise<void> {
  for (const deadline = Date.now() + ms; !check() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 25));
}

async function runIn(box: BuildBox, script: string): Promise<string> {
  const child = box.runScript(box.home, ['/bin/sh'], script, { PATH: '/usr/bin:/bin', HOME: box.home });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise((r) => child.on('close', r));
  return out.trim();
}

(root ? describe : describe.skip)('a runner warmed at its start (build uids, as root)', () => {
  let workRoot: string;
  let isolation: Isolation | undefined;
  beforeEach(() => {
    workRoot = mkdtempSync(join(tmpdir(), 'gyre-warm-work-'));
    chmodSync(workRoot, 0o711);
    isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: FIRST, last: LAST } });
  });
  afterEach(async () => {
    await isolation?.close();
    rmSync(workRoot, { recursive: true, force: true });
  });

  it("holds a uid with its keeper for each slot before any task, and the slots' first tasks run as those uids without starting more", async () => {
    expect(keptUids()).toEqual([]);
    await isolation!.warm(2);
    const warmed = keptUids();
    expect(warmed).toHaveLength(2);

    const boxes = await Promise.all(['task-a', 'task-b'].map((name) => isolation!.openBox(join(workRoot, name))));
    try {
      const ids = await Promise.all(boxes.map((box) => runIn(box, 'id -u')));
      expect(ids.map(Number).sort()).toEqual(warmed);
      expect(boxes.map((box) => statSync(box.home).uid).sort()).toEqual(warmed);
      // Both in use: warming again counts them, and starts nothing.
      await isolation!.warm(2);
      expect(keptUids()).toEqual(warmed);
    } finally {
      for (const box of boxes) await box.close();
    }
    // Back in the pool for the next tasks, as a finished task's uid always was.
    expect(keptUids()).toEqual(warmed);
    await isolation!.close();
    await waitFor(() => keptUids().length === 0);
    expect(keptUids()).toEqual([]);
  });

  it('never holds more uids than the range has; a runner stopped while it warms leaves no keeper behind', async () => {
    await isolation!.warm(10);
    expect(keptUids()).toHaveLength(LAST - FIRST + 1);
    const box = await isolation!.openBox(join(workRoot, 'task-c'));
    expect(await runIn(box, 'id -u')).toMatch(/^91250\d$/);
    await box.close();
    expect(existsSync(join(workRoot, 'task-c'))).toBe(false);
    await isolation!.close();
    await waitFor(() => keptUids().length === 0);
    expect(keptUids()).toEqual([]);

    // A runner stopped while it warms: the close waits for what was being started, and stops it.
    isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: FIRST, last: LAST } });
    void isolation.warm(4);
    await new Promise((r) => setTimeout(r, 30));
    await isolation.close();
    expect(keptUids()).toEqual([]);
    await isolation.warm(2);
    expect(keptUids()).toEqual([]);
  });
});

(root ? describe : describe.skip)('gyre server warms its built-in runner (as root)', () => {
  it('holds a build uid with its keeper for each of its slots once started, before any pipeline, and none after it stops', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gyre-warm-data-'));
    const workDir = mkdtempSync(join(tmpdir(), 'gyre-warm-server-work-'));
    chmodSync(workDir, 0o711);
    const server = await startServerProcess({
      GYRE_DATA_DIR: dataDir,
      DATABASE_URL: '',
      GYRE_EXECUTOR: 'sandbox',
      GYRE_BUILD_UIDS: `${SERVER_UIDS.first}-${SERVER_UIDS.last}`,
      GYRE_WORK_DIR: workDir,
      GYRE_RUNNER_SLOTS: '3',
    });
    try {
      await waitFor(() => keptUids(SERVER_UIDS).length >= 3);
      expect(keptUids(SERVER_UIDS)).toHaveLength(3);
    } finally {
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(workDir, { recursive: true, force: true });
    }
    await waitFor(() => keptUids(SERVER_UIDS).length === 0);
    expect(keptUids(SERVER_UIDS)).toEqual([]);
  }, 120_000);
});
