/**
 * Jest runs the TypeScript sources through SWC; `tsc --noEmit` is the separate type check.
 * A few dependencies ship only as ES modules (openid-client and what it builds on, the Octokit
 * packages): SWC turns those into CommonJS too, since Jest's module system cannot require them.
 */
const ESM_ONLY = ['openid-client', 'oauth4webapi', 'jose', '@octokit', 'universal-user-agent', 'universal-github-app-jwt', 'before-after-hook', 'json-with-bigint', 'fast-content-type-parse', 'content-type'];

/**
 * `npm test` runs the suite in two groups: most files two at a time (this kind of machine has two
 * cores and most tests wait on processes, timers and sockets; three at once was 15% sooner but
 * stalled the machine enough to break kept-alive connections and browser waits), then, one at a
 * time, the files whose
 * assertions depend on timing: short leases that heartbeats must renew, event-loop lag, request
 * timeouts, processes racing for one row, keep-alive connections. GYRE_TEST_GROUP picks a group; unset, every file runs.
 */
const SERIAL = [
  'test/e2e/heartbeat.test.ts',
  'test/e2e/crash-recovery.test.ts',
  'test/execution/failures.test.ts',
  'test/execution/nomad-driver.test.ts',
  'test/dispatcher/dispatcher.test.ts',
  'test/output/attempts.test.ts',
  'test/config/compiler-pool.test.ts',
  'test/config/conductor-compile-pool.test.ts',
  'test/api/hostile-compile-server.test.ts',
  'test/api/boundary.test.ts',
  'test/schedules/schedules-postgres.test.ts',
  // Its client and server share one event loop: a stall past a second lets the client reuse a
  // kept-alive connection the server is closing (ECONNRESET), which two files at once made common.
  'test/output/agent-log-chunks.test.ts',
  // Every Deployment of the cluster as its own process (two dozen) with liveness probes a second
  // apart: beside another file, a stall of the machine fails every probe at once.
  'test/distribution/rehearsal.test.ts',
];
const group = process.env.GYRE_TEST_GROUP;
if (group !== undefined && group !== 'parallel' && group !== 'serial') {
  throw new Error(`GYRE_TEST_GROUP '${group}' is not a group (allowed: parallel, serial; unset runs every file)`);
}
const escape = (path) => path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const serialPattern = `<rootDir>/(${SERIAL.map(escape).join('|')})$`;

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  ...(group === 'parallel' ? { testPathIgnorePatterns: ['/node_modules/', serialPattern] } : {}),
  ...(group === 'serial' ? { testRegex: SERIAL.map((p) => `/${escape(p)}$`), testMatch: undefined } : {}),
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
    '^.+\\.m?js$': ['@swc/jest', { jsc: { parser: { syntax: 'ecmascript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json'],
  // Exports only an `import` condition (under `node`), which Jest's CommonJS resolver never picks.
  moduleNameMapper: { '^@octokit/webhooks-methods$': '<rootDir>/node_modules/@octokit/webhooks-methods/dist-node/index.js' },
  // Longest files first, from a committed table of durations (a fresh CI machine has no Jest cache).
  testSequencer: '<rootDir>/test/sequencer.js',
  testTimeout: 60000,
  // A worker's heap grows to 3–4 GiB over the parallel group (measured with ps); ending a process
  // that size took longer than Jest's default half second here (a 1.2 GB heap alone took 0.23 s to
  // exit, more when its pages are cold), with no handle left open (an environment that listed
  // them at the worker's end found only its IPC pipe): Jest then printed "A worker process has
  // failed to exit gracefully" and killed it. It is given 10 s.
  workerGracefulExitTimeout: 10000,
  setupFiles: ['<rootDir>/test/setup-env.js'],
  // Every answer Gyre gives under /api/v2/ in any test is checked against CircleCI's API v2 description.
  setupFilesAfterEnv: ['<rootDir>/test/setup-spec-watch.ts', '<rootDir>/test/setup-synth-outdirs.js'],
  globalSetup: '<rootDir>/test/global-setup.js',
  globalTeardown: '<rootDir>/test/global-teardown.js',
};
