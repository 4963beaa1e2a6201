import { createInsightsRollup } from '../runtime/insights/rollup';
import type { Store } from '../runtime/store/store';
import { startTestGyre, type StoreKind } from '../test/support/gyre';
import { median, ms, percentile } from './stats';

/**
 * `npm run bench -- insights`: a year of history, 100,000 jobs (20,000 pipelines, each a `build`
 * workflow of four jobs and a `release` workflow of one; 60 % on main, the rest over 120 feature
 * branches; 85 % successes, 10 % failures, 5 % canceled), written in bulk by SQL, rolled up by the
 * insights role's pass, then the main insights operations asked over HTTP: the median and p95
 * answer time of each. On PGlite, and on PostgreSQL too when DATABASE_URL is set.
 */
export async function benchInsights(options: { pipelines?: number; requests?: number } = {}): Promise<void> {
  const stores: StoreKind[] = process.env.DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
  for (const store of stores) await benchOn(store, options.pipelines ?? 20_000, options.requests ?? 20);
}

async function benchOn(kind: StoreKind, pipelines: number, requests: number): Promise<void> {
  // No runner and no periodic pass: the bench times the rollup itself.
  const g = await startTestGyre({ store: kind, env: { GYRE_RUNNER_SLOTS: '0', GYRE_INSIGHTS_INTERVAL_MS: '3600000', GYRE_RATE_LIMIT_TOKEN: '0' } });
  try {
    await g.addProject('gh/bench/year', { '.circleci/config.yml': 'version: 2.1\n' });
    const [{ id: projectId }] = await g.gyre.store.query<{ id: string }>(`SELECT id FROM projects WHERE slug = 'gh/bench/year'`);

    let t0 = Date.now();
    const jobs = await loadHistory(g.gyre.store, projectId, pipelines);
    const loadMs = Date.now() - t0;

    t0 = Date.now();
    const workflows = await createInsightsRollup({ store: g.gyre.store }).pass();
    const rollupMs = Date.now() - t0;
    const [{ rows }] = await g.gyre.store.query<{ rows: number }>(`SELECT count(*)::int AS rows FROM insights_daily WHERE project_id = $1`, [projectId]);

    console.log(`\ninsights on ${kind}: ${jobs.toLocaleString('en')} jobs in ${workflows.toLocaleString('en')} workflows over a year`);
    console.log(`  load (bulk SQL)            ${ms(loadMs)}`);
    console.log(`  rollup (first pass)        ${ms(rollupMs)}  → ${rows.toLocaleString('en')} daily rows`);

    const P = '/api/v2/insights/gh/bench/year';
    const routes: [string, string][] = [
      ['workflows (90 days, main)', `${P}/workflows`],
      ['workflows (90 days, all branches)', `${P}/workflows?all-branches=true`],
      ['workflows (24 hours)', `${P}/workflows?reporting-window=last-24-hours`],
      ['workflow jobs (90 days)', `${P}/workflows/build/jobs`],
      ['workflow summary + trend', `${P}/workflows/build/summary?all-branches=true`],
      ['workflow runs (a page)', `${P}/workflows/build?all-branches=true`],
      ['job time series (daily)', `/api/v2/insights/time-series/gh/bench/year/workflows/build/jobs`],
      ['project summary page', `/api/v2/insights/pages/gh/bench/year/summary`],
      ['org summary', `/api/v2/insights/gh/bench/summary`],
      ['branches', `${P}/branches`],
    ];
    for (const [name, path] of routes) {
      const times: number[] = [];
      for (let i = 0; i < requests + 2; i++) {
        const start = performance.now();
        const res = await fetch(g.url + path, { headers: { 'Circle-Token': g.token } });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`GET ${path} → ${res.status}`);
        if (i >= 2) times.push(performance.now() - start); // the first two warm the caches
      }
      console.log(`  ${name.padEnd(34)} median ${ms(median(times)).padStart(9)}   p95 ${ms(percentile(times, 95)).padStart(9)}`);
    }
  } finally {
    await g.stop();
  }
}

/** Writes `pipelines` pipelines over the last year, each with `build` (4 jobs) and `release` (1 job); answers the jobs written. */
async function loadHistory(store: Store, projectId: string, pipelines: number): Promise<number> {
  await store.query(`SELECT setseed(0.42)`);
  await store.query(
    `INSERT INTO pipelines (id, project_id, number, state, trigger_type, branch, created_at)
     SELECT gen_random_uuid(), $1, i, 'created', 'api', CASE WHEN i % 5 < 3 THEN 'main' ELSE 'feature-' || (i % 300) END,
            now() - make_interval(secs => 365 * 86400 * (1 - i::float8 / $2) + 3600)
       FROM generate_series(1, $2) AS i`,
    [projectId, pipelines],
  );
  await store.query(
    `INSERT INTO workflows (id, pipeline_id, name, status, position, created_at, stopped_at)
     SELECT gen_random_uuid(), p.id, n.name, (ARRAY['success','success','success','success','success','success','success','success','success','success',
              'success','success','success','success','success','success','success','failed','failed','canceled'])[1 + floor(random() * 20)::int],
            n.position, p.created_at, p.created_at + make_interval(secs => 60 + floor(random() * 900))
       FROM pipelines p CROSS JOIN (VALUES ('build', 0), ('release', 1)) AS n(name, position)
      WHERE p.project_id = $1`,
    [projectId],
  );
  const [{ n }] = await store.query<{ n: number }>(
    `WITH made AS (
       INSERT INTO jobs (id, workflow_id, project_id, name, type, status, position, queued_at, started_at, stopped_at)
       SELECT gen_random_uuid(), w.id, $1, j.name, 'build', CASE WHEN w.status = 'success' OR random() < 0.5 THEN w.status ELSE 'success' END, j.position,
              w.created_at, w.created_at + make_interval(secs => floor(random() * 30)), w.created_at + make_interval(secs => 30 + floor(random() * 600))
         FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id
        CROSS JOIN LATERAL unnest(CASE WHEN w.name = 'build' THEN ARRAY['compile', 'unit', 'lint', 'integration'] ELSE ARRAY['ship'] END) WITH ORDINALITY AS j(name, position)
        WHERE p.project_id = $1
       RETURNING 1)
     SELECT count(*)::int AS n FROM made`,
    [projectId],
  );
  return n;
}
