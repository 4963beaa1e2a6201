import { randomUUID } from 'node:crypto';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { PREVIOUS_RUN, previousTestResults } from '../../runtime/output/previous-test-results';
import { testStores } from '../support/database';
import { startTestGyre, type TestGyre } from '../support/gyre';

/**
 * The test timings a task's job directory gets: the last successful run of its job that stored
 * test results. Asked on the way to every task's first command, so what it reads must not grow
 * with the project's history when the job stores no test results (most jobs).
 */
const CONFIG = 'version: 2.1\njobs:\n  unit:\n    docker: [{image: x}]\n    steps:\n      - run: "true"\nworkflows:\n  w:\n    jobs: [unit]\n';
const HISTORY = 600;

describe.each(testStores())('previous test results on %s', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ store });
  });
  afterAll(() => g?.stop());

  /** The task of the `unit` job of a new pipeline of gh/acme/history, once it has run. */
  const run = async () => {
    const { jobs } = await g.waitForPipeline((await g.trigger('gh/acme/history')).id, 60_000);
    expect(jobs.unit.status).toBe('success');
    const [task] = await g.gyre.store.query<{ id: string; job_id: string }>(
      `SELECT t.id, t.job_id FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN projects p ON p.id = j.project_id WHERE p.slug = 'gh/acme/history' AND j.number = $1`,
      [jobs.unit.job_number],
    );
    return task;
  };
  /** Shared buffers the statement touched for `taskId` (PostgreSQL's own count, the same on PGlite). */
  const buffersRead = async (taskId: string) => {
    const [row] = await g.gyre.store.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${PREVIOUS_RUN}`, [taskId]);
    const plan = (typeof row['QUERY PLAN'] === 'string' ? JSON.parse(row['QUERY PLAN']) : row['QUERY PLAN']) as { Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number } }[];
    return plan[0].Plan['Shared Hit Blocks'] + plan[0].Plan['Shared Read Blocks'];
  };

  it('reads no more for a job with a long history and no test results than for a new one, and finds the newest run that stored some', async () => {
    await g.addProject('gh/acme/history', { '.circleci/config.yml': CONFIG });
    const first = await run();
    const second = await run();
    const fresh = await buffersRead(second.id);
    // A history of successful runs of `unit`, none with test results: copies of the first run's
    // workflow and job, each its own.
    await g.gyre.store.query(
      `WITH src AS (SELECT w.*, j.id AS job FROM jobs j JOIN workflows w ON w.id = j.workflow_id WHERE j.id = $1),
            ws AS (INSERT INTO workflows SELECT (jsonb_populate_record(NULL::workflows, to_jsonb(src) - 'job' || jsonb_build_object('id', md5('w' || n)::uuid))).* FROM src, generate_series(1, $2::int) n RETURNING id)
       INSERT INTO jobs SELECT (jsonb_populate_record(NULL::jobs, to_jsonb(j) || jsonb_build_object('id', md5('j' || n)::uuid, 'workflow_id', md5('w' || n)::uuid, 'number', 100000 + n))).*
         FROM jobs j, generate_series(1, $2::int) n WHERE j.id = $1 AND EXISTS (SELECT 1 FROM ws)`,
      [first.job_id, HISTORY],
    );
    // On PGlite that statement holds this process's one thread for seconds, the server's too: the
    // timers it held back (the server closing the idle kept-alive connection, the client dropping
    // it) run now, before a request could go out on a connection being closed under it.
    await new Promise((resolve) => setTimeout(resolve, 10));
    const next = await run();
    expect(await previousTestResults(g.gyre.store, next.id)).toEqual({ jobNumber: null, items: [] });
    // Before, every job of that name was read, with a probe of test_results each: thousands of buffers.
    expect(await buffersRead(next.id)).toBeLessThanOrEqual(fresh + 10);

    // One old run of the history stored results; newer ones did not: that old run is the previous one.
    await g.gyre.store.query(
      `INSERT INTO test_results (job_id, project_id, job_name, revision, node_index, name, classname, file, result, message, run_time, created_at)
       SELECT j.id, j.project_id, j.name, 'abc', 0, 'adds', 'Calc', 'calc.test', 'success', '', 2.5, j.queued_at FROM jobs j WHERE j.id = md5('j' || 10)::uuid`,
    );
    await g.gyre.store.query(`UPDATE jobs SET stopped_at = stopped_at - interval '1 hour' WHERE id = md5('j' || 10)::uuid`);
    const last = await run();
    expect(await previousTestResults(g.gyre.store, last.id)).toEqual({ jobNumber: 100010, items: [{ file: 'calc.test', classname: 'Calc', name: 'adds', run_time: 2.5 }] });

    // Asked under a lease (the built-in runner's agent), the lease is checked in the same
    // statement: the holder of the current lease gets the same answer, anyone else nothing.
    const leaseId = randomUUID();
    const [{ attempt }] = await g.gyre.store.query<{ attempt: number }>(
      `UPDATE tasks SET status = 'running', lease_id = $2, lease_expires_at = now() + interval '1 minute' WHERE id = $1 RETURNING attempt`,
      [last.id, leaseId],
    );
    const lease = { taskId: last.id, leaseId, attempt };
    expect(await previousTestResults(g.gyre.store, last.id, lease)).toEqual({ jobNumber: 100010, items: [{ file: 'calc.test', classname: 'Calc', name: 'adds', run_time: 2.5 }] });
    await expect(previousTestResults(g.gyre.store, last.id, { ...lease, leaseId: randomUUID() })).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(previousTestResults(g.gyre.store, last.id, { ...lease, attempt: attempt + 1 })).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(previousTestResults(g.gyre.store, next.id, lease)).rejects.toBeInstanceOf(StaleLeaseError);
    await g.gyre.store.query(`UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [last.id]);
    await expect(previousTestResults(g.gyre.store, last.id, lease)).rejects.toBeInstanceOf(StaleLeaseError);
    // A job whose earlier runs stored no results: nothing, under a current lease as without one.
    await g.gyre.store.query('DELETE FROM test_results WHERE job_id = md5($1)::uuid', ['j10']);
    expect(await previousTestResults(g.gyre.store, last.id)).toEqual({ jobNumber: null, items: [] });
    await g.gyre.store.query(`UPDATE tasks SET lease_expires_at = now() + interval '1 minute' WHERE id = $1`, [last.id]);
    expect(await previousTestResults(g.gyre.store, last.id, lease)).toEqual({ jobNumber: null, items: [] });
  }, 120_000);
});
