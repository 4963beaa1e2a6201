/**
 * `npm run bench`: every benchmark, printing its figures (medians and percentiles over repeated
 * runs). Not a test: nothing here passes or fails on timing. `npm run bench -- pipelines` runs one;
 * `npm run bench -- masking` runs only the log ingestion part of `output` (masking off and on);
 * `npm run bench -- latency` measures Gyre as a user sees it (its own process, over REST; with DATABASE_URL beside the floor, bench/floor.ts), `peers`
 * the same beside Buildbot when it is installed; `npm run bench -- api` measures requests a second of one API route on PostgreSQL (DATABASE_URL);
 * `npm run bench -- memory` an embedded server's RSS on a first start, a restart and after pipelines;
 * `npm run bench -- docker` a Docker-executor job's start beside a bare `podman run`.
 */
import { benchPipelineLatency } from './pipeline-latency';

const suites: Record<string, () => Promise<void>> = {
  pipelines: () => benchPipelineLatency(),
  latency: async () => {
    const { benchUserLatency } = require('./user-view') as typeof import('./user-view');
    await benchUserLatency();
  },
  peers: async () => {
    const { benchPeers } = require('./user-view') as typeof import('./user-view');
    await benchPeers();
  },
  memory: async () => {
    const { benchMemory } = require('./memory') as typeof import('./memory');
    await benchMemory();
  },
  execution: async () => {
    const { benchExecution } = require('./execution') as typeof import('./execution');
    await benchExecution();
  },
  output: async () => {
    const { benchOutput } = require('./output') as typeof import('./output');
    await benchOutput();
  },
  masking: async () => {
    const { benchMasking } = require('./output') as typeof import('./output');
    await benchMasking();
  },
  config: async () => {
    const { benchConfigCompile } = require('./config-compile') as typeof import('./config-compile');
    await benchConfigCompile();
  },
  'hostile-catalogue': async () => {
    const { benchHostileCatalogue } = require('./hostile-catalogue') as typeof import('./hostile-catalogue');
    await benchHostileCatalogue();
  },
  insights: async () => {
    const { benchInsights } = require('./insights') as typeof import('./insights');
    await benchInsights();
  },
  api: async () => {
    const { benchApiThroughput } = require('./api-throughput') as typeof import('./api-throughput');
    await benchApiThroughput();
  },
  docker: async () => {
    const { benchDockerStart } = require('./docker-start') as typeof import('./docker-start');
    await benchDockerStart();
  },
  'hostile-compile': async () => {
    const { benchHostileCompile } = require('./hostile-compile') as typeof import('./hostile-compile');
    await benchHostileCompile();
  },
};

/** Run only when named: parts of another suite (`output` already runs `masking`, `peers` runs `latency`), and `memory` (minutes of server starts). */
const ONLY_WHEN_NAMED = new Set(['masking', 'latency', 'memory']);

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  for (const name of wanted) if (!suites[name]) throw new Error(`unknown benchmark '${name}' (allowed: ${Object.keys(suites).join(', ')})`);
  for (const [name, run] of Object.entries(suites)) {
    if (wanted.length ? !wanted.includes(name) : ONLY_WHEN_NAMED.has(name)) continue;
    await run();
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
