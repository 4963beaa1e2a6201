import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDispatcher } from '../runtime/dispatcher/dispatcher';
import { createLogger } from '../runtime/logger';
import { migrate } from '../runtime/store/migrate';
import { createPostgresStore } from '../runtime/store/postgres-store';
import { createTestDatabase } from '../test/support/database';
import { makeGitRepo, startTestGyre } from '../test/support/gyre';
import { killGroup, startRunnerProcess } from '../test/support/processes';
import { median, ms, percentile } from './stats';

const silent = createLogger({ level: 'silent' });

/**
 * Claims per second on PostgreSQL: `claimers` concurrent loops claim from a queue of `tasks`
 * until it is empty, through a pool of `connections`. Every claim is the dispatcher's real one
 * (lease, fair order, limits check, job update, task context). Double claims are counted.
 * With `replicas` > 1 the claimers are spread over that many dispatchers, each with its own pool
 * (`connections` / `replicas`), as behind several server processes: each batches only its own.
 */
async function claimThroughput(tasks: number, claimers: number, connections: number, replicas = 1): Promise<{ perSecond: number; doubles: number }> {
  const db = await createTestDatabase();
  const store = await createPostgresStore({ connectionString: db.url, maxConnections: connections });
  const others = await Promise.all(
    Array.from({ length: replicas - 1 }, () => createPostgresStore({ connectionString: db.url, maxConnections: Math.max(1, Math.floor(connections / replicas)) })),
  );
  try {
    await migrate(store);
    const projectId = randomUUID();
    const pipelineId = randomUUID();
    const workflowId = randomUUID();
    const jobId = randomUUID();
    await store.query(`INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, 'gh/bench/claims', 'bench', 'claims', '/dev/null')`, [projectId]);
    await store.query(
      `INSERT INTO pipelines (id, project_id, number, state, revision, trigger_type) VALUES ($1, $2, 1, 'created', 'abc', 'api')`,
      [pipelineId, projectId],
    );
    await store.query(`INSERT INTO workflows (id, pipeline_id, name, status) VALUES ($1, $2, 'w', 'running')`, [workflowId, pipelineId]);
    await store.query(
      `INSERT INTO jobs (id, workflow_id, project_id, name, type, number, status, spec) VALUES ($1, $2, $3, 'j', 'build', 1, 'queued', $4)`,
      [jobId, workflowId, projectId, JSON.stringify({ executor: { kind: 'shell' }, steps: [], environment: {}, workingDirectory: '~/project', parallelism: tasks })],
    );
    await store.query(
      `INSERT INTO tasks (id, job_id, node_index, status, resource_class, max_attempts, project_slug, org, fair_rank)
       SELECT gen_random_uuid(), $1, n, 'queued', 'medium', 3, 'gh/bench/claims', 'bench', n FROM generate_series(0, $2 - 1) AS n`,
      [jobId, tasks],
    );
    await store.query('ANALYZE tasks');
    const dispatchers = [store, ...others].map((s) => createDispatcher({ store: s, config: { leaseTtlMs: 600_000, maxAttempts: 3 }, log: silent }));
    const claimed: string[] = [];
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: claimers }, async (_, n) => {
        for (;;) {
          const c = await dispatchers[n % dispatchers.length].claim(`bench-${n}`, ['medium']);
          if (!c) return;
          claimed.push(c.lease.taskId);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const doubles = claimed.length - new Set(claimed).size + Math.abs(tasks - claimed.length);
    return { perSecond: claimed.length / seconds, doubles };
  } finally {
    await Promise.all(others.map((s) => s.close()));
    await store.close();
    await db.drop();
  }
}

const ONE_STEP = (resourceClass: string) => `version: 2.1
jobs:
  hello:
    machine: true
    resource_class: ${resourceClass}
    steps:
      - run: "true"
workflows:
  w:
    jobs: [hello]
`;

/**
 * Trigger → first step started through a runner process (HTTP long-poll, task token, HTTP reporter),
 * and the agent's overhead per task: the task's claimed-to-completed time less its step's time.
 */
async function throughRunner(triggers: number): Promise<{ firstStep: number[]; overhead: number[] }> {
  const g = await startTestGyre({ store: process.env.DATABASE_URL ? 'postgres' : 'pglite', env: { GYRE_RUNNER_SLOTS: '0' } });
  const work = mkdtempSync(join(tmpdir(), 'gyre-bench-runner-'));
  let child: ReturnType<typeof startRunnerProcess> | undefined;
  try {
    await g.api('POST', '/api/v2/resource-classes', { name: 'bench/runner', cpu: 1, memory_mb: 1024, driver: 'runner' });
    const token = (await g.api('POST', '/api/v2/resource-classes/bench%2Frunner/tokens', {})).token;
    child = startRunnerProcess(g.url, token, ['--work-dir', work]);
    await g.api('POST', '/api/v2/projects', { org: 'bench', name: 'runner', repo_url: makeGitRepo({ '.circleci/config.yml': ONE_STEP('bench/runner') }) });
    const firstStep: number[] = [];
    const overhead: number[] = [];
    for (let i = 0; i < triggers + 3; i++) {
      const t0 = Date.now();
      const { id } = await g.api('POST', '/api/v2/project/gh/bench/runner/pipeline', {});
      let started: number | undefined;
      while (started === undefined) {
        const rows = await g.gyre.store.query<{ started_at: Date }>(
          `SELECT s.started_at FROM steps s JOIN tasks t ON t.id = s.task_id JOIN jobs j ON j.id = t.job_id
             JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1 ORDER BY s.started_at LIMIT 1`,
          [id],
        );
        if (rows[0]) started = new Date(rows[0].started_at).getTime();
        else await new Promise((r) => setTimeout(r, 2));
      }
      await g.waitForPipeline(id);
      const [task] = await g.gyre.store.query<{ task_ms: number; step_ms: number }>(
        `SELECT EXTRACT(EPOCH FROM (t.stopped_at - t.started_at)) * 1000 AS task_ms,
                EXTRACT(EPOCH FROM (s.stopped_at - s.started_at)) * 1000 AS step_ms
           FROM tasks t JOIN steps s ON s.task_id = t.id AND s.attempt = t.attempt JOIN jobs j ON j.id = t.job_id
           JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1`,
        [id],
      );
      // The first runs warm up the runner process and the database; they are not counted.
      if (i >= 3) {
        firstStep.push(started - t0);
        overhead.push(Number(task.task_ms) - Number(task.step_ms));
      }
    }
    return { firstStep, overhead };
  } finally {
    if (child) await killGroup(child);
    await g.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/** `npm run bench -- execution`. Claims need PostgreSQL (DATABASE_URL); the runner figures use it when set. */
export async function benchExecution(): Promise<void> {
  console.log('execution');
  if (process.env.DATABASE_URL) {
    for (const [connections, replicas] of [[16, 1], [64, 1], [64, 4]]) {
      const runs: number[] = [];
      let doubles = 0;
      for (let r = 0; r < 5; r++) {
        const result = await claimThroughput(5000, 64, connections, replicas);
        runs.push(result.perSecond);
        doubles += result.doubles;
      }
      const where = replicas === 1 ? `one dispatcher, pool ${connections}` : `${replicas} dispatchers, pools of ${connections / replicas}`;
      console.log(`  claims/s, 64 claimers, ${where}: median ${median(runs).toFixed(0)} (runs ${runs.map((r) => r.toFixed(0)).join(', ')}), double claims ${doubles}`);
    }
  } else {
    console.log('  claims/s: skipped (set DATABASE_URL to a PostgreSQL server)');
  }
  const { firstStep, overhead } = await throughRunner(50);
  console.log(`  trigger → first step started via a runner process: p50 ${ms(median(firstStep))}, p99 ${ms(percentile(firstStep, 99))} (${firstStep.length} runs)`);
  console.log(`  agent overhead per task (claimed → completed, less the step): median ${ms(median(overhead))}, p99 ${ms(percentile(overhead, 99))}`);
}
