import { makeGitRepo, startTestGyre } from '../test/support/gyre';
import { median, ms, percentile } from './stats';

const ONE_STEP = `version: 2.1
jobs:
  hello:
    docker: [{ image: x }]
    steps:
      - run: "true"
workflows:
  w:
    jobs: [hello]
`;

function tenJobs(): string {
  const jobs = Array.from({ length: 10 }, (_, i) => `  j${i}:\n    docker: [{ image: x }]\n    steps:\n      - run: "true"\n`).join('');
  // Two roots fan out to eight jobs, which fan in to nothing further: a realistic small DAG.
  const entries = Array.from({ length: 10 }, (_, i) => (i < 2 ? `      - j${i}` : `      - j${i}: { requires: [j${i % 2}] }`)).join('\n');
  return `version: 2.1\njobs:\n${jobs}workflows:\n  w:\n    jobs:\n${entries}\n`;
}

/**
 * Trigger → first step started, on the embedded default (PGlite on disk, built-in runner), and the
 * wall time of a 10-job no-op workflow. Set DATABASE_URL to measure against PostgreSQL instead.
 */
export async function benchPipelineLatency(options: { triggers?: number; workflows?: number } = {}): Promise<void> {
  const triggers = options.triggers ?? 50;
  const workflowRuns = options.workflows ?? 5;
  // Each run gets a fresh data dir, and on PostgreSQL a fresh database, so figures never depend on leftovers.
  const g = await startTestGyre({ store: process.env.DATABASE_URL ? 'postgres' : 'pglite' });
  const gyre = g.gyre;
  const api = g.api;
  try {
    const suffix = Date.now().toString(36);
    await api('POST', '/api/v2/projects', { org: 'bench', name: `one-${suffix}`, repo_url: makeGitRepo({ '.circleci/config.yml': ONE_STEP }) });
    await api('POST', '/api/v2/projects', { org: 'bench', name: `ten-${suffix}`, repo_url: makeGitRepo({ '.circleci/config.yml': tenJobs() }) });

    const firstStep: number[] = [];
    for (let i = 0; i < triggers + 3; i++) {
      const t0 = Date.now();
      const { id } = await api('POST', `/api/v2/project/gh/bench/one-${suffix}/pipeline`, {});
      let started: number | undefined;
      while (started === undefined) {
        const rows = await gyre.store.query<{ started_at: Date }>(
          `SELECT s.started_at FROM steps s JOIN tasks t ON t.id = s.task_id JOIN jobs j ON j.id = t.job_id
             JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = $1 ORDER BY s.started_at LIMIT 1`,
          [id],
        );
        if (rows[0]) started = new Date(rows[0].started_at).getTime();
        else await new Promise((r) => setTimeout(r, 2));
      }
      if (i >= 3) firstStep.push(started - t0); // the first few warm caches and the JIT
      await waitForPipeline(api, id);
    }

    const walls: number[] = [];
    for (let i = 0; i < workflowRuns; i++) {
      const t0 = Date.now();
      const { id } = await api('POST', `/api/v2/project/gh/bench/ten-${suffix}/pipeline`, {});
      await waitForPipeline(api, id);
      walls.push(Date.now() - t0);
    }

    console.log(`\n## Pipelines (${gyre.store.kind}, built-in runner with 4 slots)`);
    console.log(`trigger → first step started: p50 ${ms(median(firstStep))}, p99 ${ms(percentile(firstStep, 99))} (${firstStep.length} triggers)`);
    console.log(`10-job no-op workflow, trigger → workflow finished: median ${ms(median(walls))} (${walls.length} runs: ${walls.map((w) => w.toFixed(0)).join(', ')} ms)`);
  } finally {
    await g.stop();
  }
}

async function waitForPipeline(api: (m: string, p: string) => Promise<any>, id: string): Promise<void> {
  for (;;) {
    const p = await api('GET', `/api/v2/pipeline/${id}`);
    if (p.state === 'errored') throw new Error(`bench pipeline errored: ${JSON.stringify(p.errors)}`);
    if (p.state === 'created') {
      const wfs = (await api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
      if (wfs.length && wfs.every((w: any) => ['success', 'failed', 'canceled'].includes(w.status))) {
        if (wfs.some((w: any) => w.status !== 'success')) throw new Error(`bench workflow did not succeed: ${wfs.map((w: any) => w.status)}`);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}
