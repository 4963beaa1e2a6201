import { randomUUID } from 'node:crypto';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { CHANNELS, createDispatcher, queuedAnnouncement, type Dispatcher } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import type { JobSpec } from '../../runtime/config/plan';
import { openStore } from '../../runtime/store/open-store';
import type { Store } from '../../runtime/store/store';
import { openTestStore, testStores } from '../support/database';
import { queueJobs } from '../support/queued-jobs';

const spec = (parallelism = 1): JobSpec => ({
  executor: { kind: 'shell' },
  steps: [{ type: 'run', name: 'hello', command: 'echo hi', when: 'on_success' }],
  environment: {},
  workingDirectory: '~/project',
  parallelism,
});

/** Queues one job (and the rows it hangs from); returns its id. */
async function queueJob(store: Store, dispatcher: Dispatcher, parallelism = 1): Promise<string> {
  const [jobId] = await queueJobs(store, dispatcher, [spec(parallelism)]);
  return jobId;
}

describe.each(testStores())('dispatcher on %s', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let databaseUrl: string | undefined;
  const log = createLogger({ level: 'silent' });

  beforeAll(async () => {
    ({ store, drop, url: databaseUrl } = await openTestStore(kind));
  });
  afterAll(async () => {
    await store.close();
    await drop?.();
  });

  /** Moves a task's lease expiry to `agoMs` before now, as time passing would (a short real lease raced a loaded machine). */
  const expireLease = (taskId: string, agoMs: number) =>
    store.query('UPDATE tasks SET lease_expires_at = now() - make_interval(secs => $2::double precision / 1000) WHERE id = $1', [taskId, agoMs]);

  it('refuses writes under a lease that expired and was claimed again', async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    const jobId = await queueJob(store, dispatcher);
    const first = await dispatcher.claim('agent-a', ['*']);
    expect(first?.task.jobId).toBe(jobId);
    await dispatcher.stepStarted(first!.lease, { index: 0, name: 'hello', type: 'run' });

    // Past the lease and its grace (10 s for this TTL).
    expect(await dispatcher.reapExpiredLeases()).not.toContain(first!.lease.taskId);
    await expireLease(first!.lease.taskId, 11_000);
    expect(await dispatcher.reapExpiredLeases()).toContain(first!.lease.taskId);
    const second = await dispatcher.claim('agent-b', ['*']);
    expect(second?.lease.taskId).toBe(first!.lease.taskId);
    expect(second?.lease.attempt).toBe(2);

    // The first agent comes back: every kind of write it tries is refused.
    await expect(dispatcher.appendOutput(first!.lease, 0, 0, Buffer.from('late'))).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(dispatcher.heartbeat(first!.lease)).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(dispatcher.completeTask(first!.lease, 'success')).rejects.toBeInstanceOf(StaleLeaseError);
    const [task] = await store.query<{ status: string; attempt: number }>('SELECT status, attempt FROM tasks WHERE id = $1', [first!.lease.taskId]);
    expect(task).toEqual({ status: 'running', attempt: 2 });
    const chunks = await store.query('SELECT * FROM log_chunks WHERE task_id = $1 AND attempt = 1', [first!.lease.taskId]);
    expect(chunks).toHaveLength(0);

    // The current holder's writes go through.
    await dispatcher.completeTask(second!.lease, 'success');
    const [job] = await store.query<{ status: string }>('SELECT status FROM jobs WHERE id = $1', [jobId]);
    expect(job.status).toBe('success');
  });

  /** What is announced on `channel` while `during` runs (and a moment after, for delivery). */
  async function announced(channel: string, during: () => Promise<void>): Promise<string[]> {
    const heard: string[] = [];
    const off = await store.listen(channel, (payload) => heard.push(payload));
    try {
      await during();
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await off();
    }
    return heard;
  }

  it("announces a step's start and end to output followers, and nothing a stale lease tried", async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    await queueJob(store, dispatcher);
    const { lease } = (await dispatcher.claim('agent-a', ['*']))!;
    const heard = await announced(CHANNELS.taskOutput, async () => {
      await dispatcher.stepStarted(lease, { index: 0, name: 'hello', type: 'run' });
      await dispatcher.stepFinished(lease, { index: 0, status: 'success', exitCode: 0 });
      const stale = { ...lease, leaseId: '00000000-0000-4000-8000-000000000000' };
      await expect(dispatcher.stepFinished(stale, { index: 0, status: 'failed', exitCode: 1 })).rejects.toBeInstanceOf(StaleLeaseError);
    });
    const step = { taskId: lease.taskId, attempt: lease.attempt, step: 0 };
    expect(heard.map((p) => JSON.parse(p))).toEqual([step, step]);
    const [row] = await store.query<{ status: string }>('SELECT status FROM steps WHERE task_id = $1 AND index = 0', [lease.taskId]);
    expect(row.status).toBe('success');
  });

  it("announces how many tasks each queued job has, so a runner wakes as many slots", async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    let ids: string[] = [];
    // Two jobs queued in one transaction: PostgreSQL folds equal announcements, so each has its own.
    const heard = await announced(CHANNELS.taskQueued, async () => void (ids = await queueJobs(store, dispatcher, [spec(3), spec(1)])));
    expect(heard.sort()).toEqual([`1 ${ids[1]}`, `3 ${ids[0]}`].sort());
    expect(heard.map(queuedAnnouncement).sort()).toEqual([1, 3]);
    // One written otherwise (an older server's resource class) still wakes a slot.
    expect(queuedAnnouncement('linux.medium')).toBe(1);
    expect(queuedAnnouncement('0 x')).toBe(1);
    while (await dispatcher.claim('drain', ['*']));
  });

  it('stores an output chunk once however often it is sent', async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 10_000, maxAttempts: 3 } });
    await queueJob(store, dispatcher);
    const claimed = (await dispatcher.claim('agent', ['*']))!;
    await dispatcher.stepStarted(claimed.lease, { index: 0, name: 's', type: 'run' });
    await dispatcher.appendOutput(claimed.lease, 0, 0, Buffer.from('one\n'));
    await dispatcher.appendOutput(claimed.lease, 0, 0, Buffer.from('one\n'));
    await dispatcher.appendOutput(claimed.lease, 0, 1, Buffer.from('two\n'));
    const rows = await store.query<{ data: Uint8Array }>('SELECT data FROM log_chunks WHERE task_id = $1 ORDER BY seq', [claimed.lease.taskId]);
    expect(Buffer.concat(rows.map((r) => Buffer.from(r.data))).toString()).toBe('one\ntwo\n');
    await dispatcher.completeTask(claimed.lease, 'success');
  });

  it('retries a task whose lease expires, then makes it an infrastructure failure', async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 200, maxAttempts: 2 } });
    const jobId = await queueJob(store, dispatcher);
    for (let attempt = 1; attempt <= 2; attempt++) {
      const claimed = await dispatcher.claim(`agent-${attempt}`, ['*']);
      expect(claimed?.lease.attempt).toBe(attempt);
      await new Promise((r) => setTimeout(r, 350));
      await dispatcher.reapExpiredLeases();
    }
    expect(await dispatcher.claim('agent-3', ['*'])).toBeUndefined();
    const [task] = await store.query<{ status: string; failure_reason: string }>('SELECT status, failure_reason FROM tasks WHERE job_id = $1', [jobId]);
    expect(task.status).toBe('infrastructure_fail');
    expect(task.failure_reason).toMatch(/attempt 2 of 2/);
    const [job] = await store.query<{ status: string }>('SELECT status FROM jobs WHERE id = $1', [jobId]);
    expect(job.status).toBe('infrastructure_fail');
  });

  it('settles a parallel job only when every node has finished', async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 10_000, maxAttempts: 3 } });
    const jobId = await queueJob(store, dispatcher, 3);
    const claims = [];
    for (let i = 0; i < 3; i++) claims.push((await dispatcher.claim(`agent-${i}`, ['*']))!);
    expect(claims.map((c) => c.task.nodeIndex).sort()).toEqual([0, 1, 2]);
    expect(claims.every((c) => c.task.parallelism === 3)).toBe(true);
    await dispatcher.completeTask(claims[0].lease, 'success');
    await dispatcher.completeTask(claims[1].lease, 'failed');
    let [job] = await store.query<{ status: string }>('SELECT status FROM jobs WHERE id = $1', [jobId]);
    expect(job.status).toBe('running');
    await dispatcher.completeTask(claims[2].lease, 'success');
    [job] = await store.query<{ status: string }>('SELECT status FROM jobs WHERE id = $1', [jobId]);
    expect(job.status).toBe('failed');
  });

  it('refuses every write from the moment a lease expires, but ends the attempt only a grace later', async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3, leaseGraceMs: 30_000 } });
    const jobId = await queueJob(store, dispatcher);
    const claimed = (await dispatcher.claim('agent', ['*']))!;
    await dispatcher.stepStarted(claimed.lease, { index: 0, name: 'hello', type: 'run' });
    expect(await dispatcher.cancelRequested(claimed.lease)).toBe(false);

    await expireLease(claimed.lease.taskId, 100);
    // Expired: one rule says the lease is not current, whichever path asks.
    await expect(dispatcher.heartbeat(claimed.lease)).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(dispatcher.appendOutput(claimed.lease, 0, 0, Buffer.from('late'))).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(dispatcher.stepFinished(claimed.lease, { index: 0, status: 'success', exitCode: 0 })).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(dispatcher.stepStarted(claimed.lease, { index: 1, name: 'late', type: 'run' })).rejects.toBeInstanceOf(StaleLeaseError);
    // Refused writes wrote nothing: the first step still runs, and the late one was not recorded.
    expect(await store.query('SELECT index, status FROM steps WHERE task_id = $1 ORDER BY index', [claimed.lease.taskId])).toEqual([{ index: 0, status: 'running' }]);
    await expect(dispatcher.completeTask(claimed.lease, 'success')).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(dispatcher.cancelRequested(claimed.lease)).rejects.toBeInstanceOf(StaleLeaseError);
    // Within the grace the attempt stays: its agent may still be stopping its steps.
    expect(await dispatcher.reapExpiredLeases()).not.toContain(claimed.lease.taskId);
    expect(await dispatcher.claim('agent-2', ['*'])).toBeUndefined();

    await expireLease(claimed.lease.taskId, 31_000);
    expect(await dispatcher.reapExpiredLeases()).toContain(claimed.lease.taskId);
    const again = (await dispatcher.claim('agent-2', ['*']))!;
    expect(again.lease).toMatchObject({ taskId: claimed.lease.taskId, attempt: 2 });
    await dispatcher.completeTask(again.lease, 'success');
    const [job] = await store.query<{ status: string }>('SELECT status FROM jobs WHERE id = $1', [jobId]);
    expect(job.status).toBe('success');
  });

  it("numbers a job with its project's next number as it queues it, and lets projects take turns", async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    const resourceClass = `turns-${randomUUID()}`;
    const own = { ...spec(), resourceClass };
    /** A project with a workflow of `count` jobs not yet numbered, queued in one transaction; the jobs' ids in order. */
    const queued = async (count: number): Promise<string[]> => {
      const [projectId, pipelineId, workflowId] = [randomUUID(), randomUUID(), randomUUID()];
      await store.query(`INSERT INTO projects (id, slug, org, name, repo_url, job_seq) VALUES ($1, $2, 'o', 'r', '/nowhere', 41)`, [projectId, `gh/o/${projectId}`]);
      await store.query(`INSERT INTO pipelines (id, project_id, number, state, trigger_type, revision) VALUES ($1, $2, 1, 'created', 'api', 'abc')`, [pipelineId, projectId]);
      await store.query(`INSERT INTO workflows (id, pipeline_id, name, status) VALUES ($1, $2, 'w', 'running')`, [workflowId, pipelineId]);
      const ids = Array.from({ length: count }, () => randomUUID());
      for (const [n, id] of ids.entries()) {
        await store.query(`INSERT INTO jobs (id, workflow_id, project_id, name, type, status, spec) VALUES ($1, $2, $3, $4, 'build', 'blocked', $5)`, [id, workflowId, projectId, `j${n}`, JSON.stringify(own)]);
      }
      await store.transaction(async (tx) => {
        for (const id of ids) await dispatcher.enqueueJob(tx, { id, spec: own, numbered: true });
      });
      return ids;
    };
    const busy = await queued(3);
    const later = await queued(1);
    const numbers = await store.query<{ id: string; number: number; status: string }>('SELECT id, number, status FROM jobs WHERE id = ANY($1::uuid[])', [[...busy, ...later]]);
    const numberOf = (id: string) => numbers.find((j) => j.id === id)?.number;
    expect([...busy.map(numberOf), numberOf(later[0])]).toEqual([42, 43, 44, 42]);
    expect(numbers.every((j) => j.status === 'queued')).toBe(true);
    // The project that queued one job after another's three is served second, not fourth.
    const claimed: string[] = [];
    for (let i = 0; i < 4; i++) claimed.push((await dispatcher.claim('agent-turns', [resourceClass]))!.task.jobId);
    expect(claimed).toEqual([busy[0], later[0], busy[1], busy[2]]);
  });

  it("ends only the built-in runner's attempts when asked for its holder's, not a remote runner's", async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    await queueJob(store, dispatcher);
    await queueJob(store, dispatcher);
    const builtin = (await dispatcher.claim('builtin-1', ['*'], 'builtin'))!;
    const remote = (await dispatcher.claim('some-runner', ['*']))!;
    expect(await dispatcher.reapExpiredLeases({ heldBy: 'builtin' })).toEqual([builtin.lease.taskId]);
    // The remote runner's lease is still current; the built-in's task is queued again.
    await expect(dispatcher.heartbeat(remote.lease)).resolves.toMatchObject({ cancelRequested: false });
    await expect(dispatcher.heartbeat(builtin.lease)).rejects.toBeInstanceOf(StaleLeaseError);
    const again = (await dispatcher.claim('builtin-2', ['*'], 'builtin'))!;
    expect(again.lease).toMatchObject({ taskId: builtin.lease.taskId, attempt: 2 });
    await dispatcher.completeTask(again.lease, 'success');
    await dispatcher.completeTask(remote.lease, 'success');
  });

  if (kind === 'postgres') {
    it('never hands one task to two concurrent claimers', async () => {
      const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
      await store.query(`UPDATE tasks SET status = 'canceled' WHERE status IN ('queued', 'running')`);
      for (let i = 0; i < 20; i++) await queueJob(store, dispatcher, 5);
      const claimed: string[] = [];
      await Promise.all(
        Array.from({ length: 16 }, async (_, n) => {
          for (;;) {
            const c = await dispatcher.claim(`claimer-${n}`, ['*']);
            if (!c) return;
            claimed.push(c.lease.taskId);
          }
        }),
      );
      expect(claimed).toHaveLength(100);
      expect(new Set(claimed).size).toBe(100);
    });

    it('keeps a concurrency limit when one batch of claims could take the whole queue', async () => {
      const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
      await store.query(`UPDATE tasks SET status = 'canceled' WHERE status IN ('queued', 'running')`);
      const jobId = await queueJob(store, dispatcher, 20);
      const [{ project_slug: slug }] = await store.query<{ project_slug: string }>('SELECT project_slug FROM tasks WHERE job_id = $1 LIMIT 1', [jobId]);
      await store.query(`INSERT INTO concurrency_limits (scope, key, max_running) VALUES ('project', $1, 3)`, [slug]);
      try {
        const got = await Promise.all(Array.from({ length: 16 }, (_, n) => dispatcher.claim(`limited-${n}`, ['*'])));
        expect(got.filter(Boolean)).toHaveLength(3);
        const [{ running, queued }] = await store.query<{ running: number; queued: number }>(
          `SELECT count(*) FILTER (WHERE status = 'running')::int AS running, count(*) FILTER (WHERE status = 'queued')::int AS queued FROM tasks WHERE job_id = $1`,
          [jobId],
        );
        // Tasks put back after losing the race are queued as before, not lost or burnt attempts.
        expect({ running, queued }).toEqual({ running: 3, queued: 17 });
        const attempts = await store.query<{ attempt: number }>(`SELECT attempt FROM tasks WHERE job_id = $1 AND status = 'queued'`, [jobId]);
        expect(attempts.every((t) => t.attempt === 0)).toBe(true);
      } finally {
        await store.query(`DELETE FROM concurrency_limits WHERE key = $1`, [slug]);
      }
    });

    it('settles a parallel job once, with the status its nodes decide, when its nodes finish at the same moment on two servers', async () => {
      const other = await openStore({ databaseUrl });
      const dispatchers = [createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } }), createDispatcher({ store: other, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } })];
      const finished: string[] = [];
      const unlisten = await store.listen('gyre_job_finished', (jobId) => finished.push(jobId));
      try {
        await store.query(`UPDATE tasks SET status = 'canceled' WHERE status IN ('queued', 'running')`);
        for (let round = 0; round < 5; round++) {
          const jobId = await queueJob(store, dispatchers[0], 6);
          const claims = [];
          for (let i = 0; i < 6; i++) claims.push((await dispatchers[i % 2].claim(`racer-${round}-${i}`, ['*']))!);
          // One node fails (a different one each round); all six end at once, from both servers.
          await Promise.all(claims.map((c, i) => dispatchers[i % 2].completeTask(c.lease, i === round % 6 ? 'failed' : 'success')));
          const [job] = await store.query<{ status: string; stopped_at: Date | null }>('SELECT status, stopped_at FROM jobs WHERE id = $1', [jobId]);
          expect(job.status).toBe('failed');
          expect(job.stopped_at).not.toBeNull();
          for (let i = 0; i < 1000 && !finished.includes(jobId); i++) await new Promise((r) => setTimeout(r, 10));
          await new Promise((r) => setTimeout(r, 200));
          expect(finished.filter((id) => id === jobId)).toHaveLength(1);
        }
      } finally {
        await unlisten();
        await other.close();
      }
    });

    it('leases each task of a batched claim to the agent that asked, across competing servers', async () => {
      // Two dispatchers on their own connection pools stand for two server replicas; each batches
      // the claims of its own agents into shared statements.
      const other = await openStore({ databaseUrl });
      const dispatchers = [createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } }), createDispatcher({ store: other, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } })];
      const blocker = await openStore({ databaseUrl });
      let release = () => {};
      try {
        await store.query(`UPDATE tasks SET status = 'canceled' WHERE status IN ('queued', 'running')`);
        const jobIds: string[] = [];
        for (let i = 0; i < 10; i++) jobIds.push(await queueJob(store, dispatchers[0], 12));
        // The replicas' first statements are made to overlap, whatever the machine's scheduler
        // does: a third connection holds the jobs' rows, so each statement picks and leases its
        // tasks (skipping the rows the other has locked) and then waits to mark their jobs
        // running. Once both wait, the rows are let go; the race for the rest follows freely.
        const released = new Promise<void>((r) => (release = r));
        let held!: () => void;
        const holding = new Promise<void>((r) => (held = r));
        const hold = blocker.transaction(async (tx) => {
          await tx.query('SELECT id FROM jobs WHERE id = ANY($1::uuid[]) FOR UPDATE', [jobIds]);
          held();
          await released;
        });
        await holding;
        const byAgent = new Map<string, string[]>();
        const racing = Promise.all(
          Array.from({ length: 24 }, async (_, n) => {
            const agent = `replica-${n % 2}-agent-${n}`;
            for (;;) {
              const c = await dispatchers[n % 2].claim(agent, ['*']);
              if (!c) return;
              byAgent.set(agent, [...(byAgent.get(agent) ?? []), c.lease.taskId]);
            }
          }),
        );
        const deadline = Date.now() + 20_000;
        for (;;) {
          const [{ n }] = await store.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%picked AS%'`,
          );
          if (n >= 2) break;
          if (Date.now() > deadline) throw new Error(`only ${n} of the two replicas' claims reached the held jobs in 20 s`);
          await new Promise((r) => setTimeout(r, 20));
        }
        release();
        await hold;
        await racing;
        const all = [...byAgent.values()].flat();
        expect(all).toHaveLength(120);
        expect(new Set(all).size).toBe(120);
        // Both replicas' overlapping first statements leased tasks: each skipped what the other held.
        for (const replica of ['replica-0', 'replica-1']) {
          expect([...byAgent].filter(([a]) => a.startsWith(replica)).flatMap(([, ids]) => ids).length).toBeGreaterThanOrEqual(12);
        }
        // The database records the agent each task went to.
        const rows = await store.query<{ id: string; agent_id: string }>(`SELECT id, agent_id FROM tasks WHERE status = 'running'`);
        const recorded = new Map(rows.map((r) => [r.id, r.agent_id]));
        for (const [agent, ids] of byAgent) for (const id of ids) expect(recorded.get(id)).toBe(agent);
      } finally {
        release();
        await blocker.close();
        await other.close();
      }
    });
  }
});
