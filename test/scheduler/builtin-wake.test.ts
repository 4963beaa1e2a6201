import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobSpec } from '../../runtime/config/plan';
import { CHANNELS, createDispatcher, type Dispatcher } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { createBuiltinDriver } from '../../runtime/scheduler/builtin-driver';
import type { Store } from '../../runtime/store/store';
import { openTestStore, testStores } from '../support/database';
import { queueJobs } from '../support/queued-jobs';

/** A second long: jobs run at once overlap, jobs run one after another do not. */
const spec: JobSpec = {
  executor: { kind: 'shell' },
  steps: [{ type: 'run', name: 'a second', command: 'sleep 1', when: 'on_success' }],
  environment: {},
  workingDirectory: '~/project',
  parallelism: 1,
};

async function until(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// The slots look for work on their own only every ten minutes here: whatever starts, a notification started.
const POLL_MS = 600_000;

describe.each(testStores())('the built-in slots woken by queued work, on %s', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let work: string;
  const log = createLogger({ level: 'silent' });

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
    work = mkdtempSync(join(tmpdir(), 'gyre-wake-'));
  });
  afterAll(async () => {
    await store.close();
    await drop?.();
    rmSync(work, { recursive: true, force: true });
  });

  /**
   * A driver of `slots` idle slots whose claims are counted. `duringEmptyClaim` runs once inside
   * the first claim that finds nothing, before that claim answers.
   */
  async function driver(slots: number, duringEmptyClaim?: (dispatcher: Dispatcher) => Promise<void>) {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 30_000, maxAttempts: 3 } });
    const claims = { made: 0, won: 0 };
    let hook = duringEmptyClaim;
    const counted: Dispatcher = {
      ...dispatcher,
      async claim(...args: Parameters<Dispatcher['claim']>) {
        claims.made++;
        const claimed = await dispatcher.claim(...args);
        if (claimed) claims.won++;
        else if (hook) {
          const run = hook;
          hook = undefined;
          await run(dispatcher);
        }
        return claimed;
      },
    };
    const d = createBuiltinDriver({ store, dispatcher: counted, log, slots, workRoot: join(work, randomUUID()), executor: { choice: 'shell' }, resourceClasses: ['*'], heartbeatMs: 10_000, pollMs: POLL_MS });
    await d.start();
    if (duringEmptyClaim) return { dispatcher, claims, stop: () => d.stop() };
    // Each slot claims once at start (nothing is queued) and goes idle.
    await until('the slots to go idle', async () => claims.made >= slots);
    await new Promise((r) => setTimeout(r, 100));
    claims.made = 0;
    return { dispatcher, claims, stop: () => d.stop() };
  }

  const finished = (ids: string[]) => async () => {
    const rows = await store.query<{ status: string }>(`SELECT status FROM jobs WHERE id = ANY($1::uuid[])`, [ids]);
    return rows.length === ids.length && rows.every((r) => r.status === 'success');
  };

  /** A job whose step waits until the test opens its gate (`open()`). */
  function gatedJob(parallelism = 1) {
    const gateDir = join(work, `gate-${randomUUID()}`);
    mkdirSync(gateDir);
    chmodSync(gateDir, 0o755);
    const gate = join(gateDir, 'open');
    const gated: JobSpec = { ...spec, parallelism, steps: [{ type: 'run', name: 'the gate', command: `while [ ! -f "${gate}" ]; do sleep 0.05; done`, when: 'on_success' }] };
    return { gated, open: () => writeFileSync(gate, '') };
  }

  const runningTasks = (ids: string[]) => async () =>
    (await store.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE job_id = ANY($1::uuid[]) AND status = 'running'`, [ids]))[0].n;

  it('runs every job a transaction queued at once, each taken with one claim', async () => {
    const { dispatcher, claims, stop } = await driver(4);
    // Each job waits for a gate the test opens once all three are running: a slot that ends its job
    // and claims the next would run them one after another, and the three would never be running
    // together. (Timing three `sleep 1` jobs against each other raced slow claims under load.)
    const { gated, open } = gatedJob();
    try {
      const ids = await queueJobs(store, dispatcher, [gated, gated, gated]);
      await until('the three jobs to run at once', async () => (await runningTasks(ids)()) === 3);
      // Three announcements woke three of the four idle slots; the fourth was not woken to look.
      await new Promise((r) => setTimeout(r, 300));
      expect(claims.won).toBe(3);
      expect(claims.made).toBe(3);
      open();
      await until('the three jobs to succeed', finished(ids));
    } finally {
      await stop();
    }
  });

  it("runs a parallel job's tasks at once, each taken with one claim", async () => {
    const { dispatcher, claims, stop } = await driver(4);
    const { gated, open } = gatedJob(3);
    try {
      const ids = await queueJobs(store, dispatcher, [gated]);
      await until("the job's three tasks to run at once", async () => (await runningTasks(ids)()) === 3);
      await new Promise((r) => setTimeout(r, 300));
      expect(claims.won).toBe(3);
      expect(claims.made).toBe(3);
      open();
      await until('the job to succeed', finished(ids));
    } finally {
      await stop();
    }
  });

  it('takes one queued task with one claim, and looks again only once the task has ended', async () => {
    const { dispatcher, claims, stop } = await driver(4);
    try {
      const ids = await queueJobs(store, dispatcher, [spec]);
      await until('the job to succeed', finished(ids));
      // The winner's, and its own once the task ended (finding nothing); every idle slot woken
      // would have made five, and a look for more by the next idle slot three. The winner's last
      // comes a moment after its job is recorded (longer on a loaded machine): waited for, then
      // given time to show any more before the count is taken (nothing else claims: the poll is 10 min).
      await until('the winner to look again', async () => claims.made >= 2, 10_000);
      await new Promise((r) => setTimeout(r, 500));
      expect(claims.won).toBe(1);
      expect(claims.made).toBe(2);
    } finally {
      await stop();
    }
  });

  it('wakes no more slots than it has for an announcement claiming a huge number of tasks (anyone may NOTIFY)', async () => {
    const { claims, stop } = await driver(2);
    try {
      await store.notify(CHANNELS.taskQueued, '999999 not-a-job');
      await until('the woken slots to look', async () => claims.made >= 2, 10_000);
      await new Promise((r) => setTimeout(r, 500));
      // Each idle slot looked once, found nothing and went back to sleep: no looks owed beyond them.
      expect(claims.made).toBe(2);
      expect(claims.won).toBe(0);
    } finally {
      await stop();
    }
  });

  /**
   * A driver of one slot whose claims wait at a gate once `hold` is set: a claim in flight, for
   * as long as a test needs it.
   */
  async function heldDriver() {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 30_000, maxAttempts: 3 } });
    let gate: { release: () => void; reached: () => void; wait: Promise<void>; inFlight: Promise<void> } | undefined;
    const hold = () => {
      let release!: () => void;
      let reached!: () => void;
      const wait = new Promise<void>((r) => (release = r));
      const inFlight = new Promise<void>((r) => (reached = r));
      gate = { release, reached, wait, inFlight };
      return gate;
    };
    const held: Dispatcher = {
      ...dispatcher,
      async claim(...args: Parameters<Dispatcher['claim']>) {
        const claimed = await dispatcher.claim(...args);
        const g = gate;
        if (g) {
          gate = undefined;
          g.reached();
          await g.wait;
        }
        return claimed;
      },
    };
    const d = createBuiltinDriver({ store, dispatcher: held, log, slots: 1, workRoot: join(work, randomUUID()), executor: { choice: 'shell' }, resourceClasses: ['*'], heartbeatMs: 10_000, pollMs: POLL_MS });
    return { dispatcher, d, hold };
  }

  /** Resolves with 'stopped', or 'held up' if the stop takes longer than a few seconds. */
  const within = (stopping: Promise<void>) => Promise.race([stopping.then(() => 'stopped'), new Promise((r) => setTimeout(() => r('held up'), 5_000).unref())]);

  it('stops at once when asked while a slot is claiming, instead of that slot sleeping to the poll first', async () => {
    const { d, hold } = await heldDriver();
    const g = hold();
    await d.start();
    await g.inFlight; // the slot's first claim has its (empty) answer, not yet returned
    const stopping = d.stop(); // its wake finds no slot asleep
    g.release();
    expect(await within(stopping)).toBe('stopped');
  });

  it('does not start a task claimed while the runner stops (it is abandoned, as the tasks in hand are)', async () => {
    const { dispatcher, d, hold } = await heldDriver();
    await d.start();
    await new Promise((r) => setTimeout(r, 200)); // the slot's first claim found nothing; it sleeps
    const g = hold();
    const long: JobSpec = { ...spec, steps: [{ type: 'run', name: 'long', command: 'sleep 30', when: 'on_success' }] };
    const [id] = await queueJobs(store, dispatcher, [long]);
    await g.inFlight; // claimed, not yet returned to the slot
    const stopping = d.stop();
    g.release();
    expect(await within(stopping)).toBe('stopped');
    const steps = await store.query(`SELECT s.index FROM steps s JOIN tasks t ON t.id = s.task_id WHERE t.job_id = $1`, [id]);
    expect(steps).toEqual([]);
  });

  it('runs a job announced while the only idle slot was claiming (its claim began before the job was there)', async () => {
    let ids: string[] = [];
    const { stop } = await driver(1, async (dispatcher) => {
      ids = await queueJobs(store, dispatcher, [spec]);
      // The announcement arrives while this claim has not answered: no slot is asleep to wake.
      await new Promise((r) => setTimeout(r, 200));
    });
    try {
      await until('the job to be queued', async () => ids.length === 1);
      await until('the job to succeed', finished(ids));
    } finally {
      await stop();
    }
  });
});
