import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { BlobStore } from '../../runtime/blob/blob-store';
import { createLocalBlobStore } from '../../runtime/blob/local-blob-store';
import { createLogger } from '../../runtime/logger';
import { createRetention } from '../../runtime/retention/retention';
import { readSettings } from '../../runtime/settings';
import { startTestGyre, testStores, type TestGyre } from '../support/gyre';

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: x }]
    steps:
      - run: mkdir -p out reports && echo "built $CIRCLE_BUILD_NUM" > out/app.txt && printf '<testsuite name="s"><testcase classname="c" name="t1" time="0.1"/></testsuite>' > reports/junit.xml
      - store_artifacts: { path: out/app.txt }
      - persist_to_workspace: { root: out, paths: [app.txt] }
      - store_test_results: { path: reports }
  deploy:
    docker: [{ image: x }]
    steps:
      - attach_workspace: { at: ws }
      - run: cat ws/app.txt
workflows:
  main:
    jobs: [build, { deploy: { requires: [build] } }]
`;

/** Every blob key the database holds for a pipeline, by what it is. */
async function blobKeysOf(g: TestGyre, pipelineId: string): Promise<string[]> {
  const rows = await g.gyre.store.query<{ blob_key: string }>(
    `SELECT a.blob_key FROM artifacts a JOIN jobs j ON j.id = a.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1
     UNION ALL SELECT l.blob_key FROM workspace_layers l JOIN workflows w ON w.id = l.workflow_id WHERE w.pipeline_id = $1
     UNION ALL SELECT s.blob_key FROM step_logs s JOIN tasks t ON t.id = s.task_id JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1`,
    [pipelineId],
  );
  return rows.map((r) => r.blob_key);
}

/** Rows a pipeline owns, table by table. */
async function rowsOf(g: TestGyre, pipelineId: string): Promise<Record<string, number>> {
  const [row] = await g.gyre.store.query<Record<string, number>>(
    `SELECT (SELECT count(*)::int FROM pipelines WHERE id = $1) AS pipelines,
            (SELECT count(*)::int FROM workflows WHERE pipeline_id = $1) AS workflows,
            (SELECT count(*)::int FROM jobs j JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1) AS jobs,
            (SELECT count(*)::int FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1) AS tasks,
            (SELECT count(*)::int FROM steps s JOIN tasks t ON t.id = s.task_id JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1) AS steps,
            (SELECT count(*)::int FROM artifacts a JOIN jobs j ON j.id = a.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1) AS artifacts,
            (SELECT count(*)::int FROM workspace_layers l JOIN workflows w ON w.id = l.workflow_id WHERE w.pipeline_id = $1) AS workspace_layers,
            (SELECT count(*)::int FROM test_results r JOIN jobs j ON j.id = r.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1) AS test_results`,
    [pipelineId],
  );
  return row;
}

const age = (g: TestGyre, pipelineId: string, days: number) =>
  g.gyre.store.query(`UPDATE pipelines SET created_at = now() - make_interval(days => $2) WHERE id = $1`, [pipelineId, days]);

describe.each(testStores())('retention (%s)', (store) => {
  let g: TestGyre;
  let blobs: BlobStore;
  const log = createLogger({ level: 'silent' });
  const blobFile = (key: string) => join(g.dataDir, 'blobs', key);

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RETENTION_DAYS: '30' } });
    blobs = createLocalBlobStore({ root: join(g.dataDir, 'blobs') });
  });
  afterAll(() => g.stop());

  /** Runs one pipeline of `slug` to the end; its id, and the build job's artifact URL. */
  async function runPipeline(slug: string): Promise<{ id: string; artifactUrl: string; buildNumber: number }> {
    const created = await g.trigger(slug, { branch: 'main' });
    const deadline = Date.now() + 90_000;
    for (;;) {
      const workflows = (await g.api('GET', `/api/v2/pipeline/${created.id}/workflow`)).items as { id: string; status: string }[];
      if (workflows.length > 0 && workflows.every((w) => w.status === 'success')) {
        const jobs = (await g.api('GET', `/api/v2/workflow/${workflows[0].id}/job`)).items as { name: string; job_number: number }[];
        const build = jobs.find((j) => j.name === 'build')!;
        // The deploy job's archived log is written as its last step ends; wait for it.
        for (const logsBy = Date.now() + 30_000; (await blobKeysOf(g, created.id)).filter((k) => k.startsWith('logs/')).length < 5; ) {
          if (Date.now() > logsBy) throw new Error(`pipeline ${created.id}: fewer than 5 archived logs 30 s after it ended`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const artifacts = (await g.api('GET', `/api/v2/project/${slug}/${build.job_number}/artifacts`)).items as { url: string }[];
        return { id: created.id, artifactUrl: artifacts[0].url, buildNumber: build.job_number };
      }
      if (workflows.some((w) => !['running', 'success'].includes(w.status)) || Date.now() > deadline) throw new Error(`pipeline ended ${JSON.stringify(workflows)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('deletes an expired pipeline with its rows and blobs, keeps recent ones, and its artifact URL is a 404', async () => {
    await g.addProject('gh/keep/short', { '.circleci/config.yml': CONFIG });
    const old = await runPipeline('gh/keep/short');
    const recent = await runPipeline('gh/keep/short');
    const oldKeys = await blobKeysOf(g, old.id);
    const recentKeys = await blobKeysOf(g, recent.id);
    expect(oldKeys.filter((k) => k.startsWith('artifacts/'))).toHaveLength(1);
    expect(oldKeys.filter((k) => k.startsWith('workspaces/'))).toHaveLength(1);
    expect(oldKeys.filter((k) => k.startsWith('logs/')).length).toBeGreaterThanOrEqual(5);
    for (const key of [...oldKeys, ...recentKeys]) expect(existsSync(blobFile(key))).toBe(true);
    expect((await fetch(old.artifactUrl)).status).toBe(200);
    const recentRows = await rowsOf(g, recent.id);
    expect(recentRows.test_results).toBe(1);

    // WHEN the first pipeline is older than GYRE_RETENTION_DAYS and a sweep runs
    await age(g, old.id, 31);
    await age(g, recent.id, 29);
    const result = await createRetention({ store: g.gyre.store, blobs, log, defaultDays: 30 }).sweep();

    // THEN it is gone from the database and the blob store, and the recent one is whole
    expect(result).toEqual({ pipelines: 1, blobs: oldKeys.length });
    expect(Object.values(await rowsOf(g, old.id)).every((n) => n === 0)).toBe(true);
    for (const key of oldKeys) expect(existsSync(blobFile(key))).toBe(false);
    expect(await rowsOf(g, recent.id)).toEqual(recentRows);
    for (const key of recentKeys) expect(existsSync(blobFile(key))).toBe(true);
    // AND its links answer 404, not an error
    const artifact = await fetch(old.artifactUrl);
    expect(artifact.status).toBe(404);
    expect(((await artifact.json()) as { message: string }).message).toMatch(/artifact/);
    expect((await g.raw('GET', `/api/v2/pipeline/${old.id}`)).status).toBe(404);
    expect((await g.raw('GET', `/api/v2/project/gh/keep/short/job/${old.buildNumber}`)).status).toBe(404);
    expect((await g.raw('GET', `/api/v2/project/gh/keep/short/job/${old.buildNumber}/output?step=0`)).status).toBe(404);
    expect((await fetch(recent.artifactUrl)).status).toBe(200);
  }, 180_000);

  it('deletes the chunks a step left in the blob store when it never ended (its output was not moved)', async () => {
    await g.addProject('gh/keep/cut', { '.circleci/config.yml': CONFIG });
    const old = await runPipeline('gh/keep/cut');
    // As the output role leaves a step whose process died before it ended: a chunk held as a blob, its row naming it.
    const [task] = await g.gyre.store.query<{ id: string; attempt: number }>(
      'SELECT t.id, t.attempt FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1 LIMIT 1',
      [old.id],
    );
    const key = `logs/${task.id}/${task.attempt}/live/9-0-${randomUUID()}.gz`;
    await blobs.put(key, gzipSync('left behind\n'));
    await g.gyre.store.query("INSERT INTO log_chunks (task_id, attempt, step_index, seq, gzip, blob_key, raw_bytes) VALUES ($1, $2, 9, 0, '', $3, 12)", [task.id, task.attempt, key]);
    await age(g, old.id, 31);
    const result = await createRetention({ store: g.gyre.store, blobs, log, defaultDays: 30 }).sweep();
    expect(result.pipelines).toBe(1);
    expect(existsSync(blobFile(key))).toBe(false);
    expect(await g.gyre.store.query('SELECT 1 FROM log_chunks WHERE task_id = $1', [task.id])).toEqual([]);
  }, 180_000);

  it('follows the project\'s own setting: 0 keeps for ever, a shorter one deletes sooner; admins set it', async () => {
    await g.addProject('gh/keep/forever', { '.circleci/config.yml': CONFIG });
    await g.addProject('gh/keep/week', { '.circleci/config.yml': CONFIG });
    expect(await g.api('GET', '/api/v2/project/gh/keep/forever/retention')).toEqual({ days: null, default_days: 30, effective_days: 30 });
    expect(await g.api('PUT', '/api/v2/project/gh/keep/forever/retention', { days: 0 })).toEqual({ days: 0, default_days: 30, effective_days: 0 });
    await g.api('PUT', '/api/v2/project/gh/keep/week/retention', { days: 7 });
    const refused = await g.raw('PUT', '/api/v2/project/gh/keep/week/retention', { body: JSON.stringify({ days: -1 }) });
    expect(refused.status).toBe(400);
    const forever = await runPipeline('gh/keep/forever');
    const week = await runPipeline('gh/keep/week');
    await age(g, forever.id, 400);
    await age(g, week.id, 8);
    await createRetention({ store: g.gyre.store, blobs, log, defaultDays: 30 }).sweep();
    expect((await rowsOf(g, forever.id)).pipelines).toBe(1);
    expect((await rowsOf(g, week.id)).pipelines).toBe(0);
  }, 180_000);

  it('a sweep cut off after the rows are gone finishes its blobs next time, and never leaves a row pointing at a missing blob', async () => {
    await g.addProject('gh/keep/crash', { '.circleci/config.yml': CONFIG });
    const old = await runPipeline('gh/keep/crash');
    const keys = await blobKeysOf(g, old.id);
    await age(g, old.id, 60);
    // WHEN the blob store fails after its first delete (the process dies midway)
    let deletes = 0;
    const failing: BlobStore = {
      ...blobs,
      async delete(k) {
        if (deletes++ > 0) throw new Error('connection reset');
        await blobs.delete(k.slice(0, 1));
        throw new Error('connection reset');
      },
    };
    await expect(createRetention({ store: g.gyre.store, blobs: failing, log, defaultDays: 30 }).sweep()).rejects.toThrow(/connection reset/);
    // THEN the rows are gone, every row left points at an object that is there, and the rest is queued
    expect((await rowsOf(g, old.id)).pipelines).toBe(0);
    const referenced = await g.gyre.store.query<{ blob_key: string }>('SELECT blob_key FROM artifacts UNION ALL SELECT blob_key FROM workspace_layers UNION ALL SELECT blob_key FROM step_logs');
    for (const { blob_key } of referenced) expect(existsSync(blobFile(blob_key))).toBe(true);
    const queued = (await g.gyre.store.query<{ blob_key: string }>('SELECT blob_key FROM retention_blobs')).map((r) => r.blob_key);
    expect(queued.sort()).toEqual([...keys].sort());
    // AND the next sweep deletes what was left
    const next = await createRetention({ store: g.gyre.store, blobs, log, defaultDays: 30 }).sweep();
    expect(next.blobs).toBe(keys.length);
    for (const key of keys) expect(existsSync(blobFile(key))).toBe(false);
    expect(await g.gyre.store.query('SELECT 1 FROM retention_blobs')).toEqual([]);
  }, 180_000);

  it('GYRE_RETENTION_DAYS defaults to 0 (keep) and names its bounds', () => {
    expect(readSettings({}).retentionDays).toBe(0);
    expect(() => readSettings({ GYRE_RETENTION_DAYS: '-3' })).toThrow(/GYRE_RETENTION_DAYS.*0 to 36500/);
  });
});
