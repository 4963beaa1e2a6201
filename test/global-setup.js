/**
 * Once per test run: this run's own directory (GYRE_TEST_RUN_DIR, removed by
 * test/global-teardown.js at the run's end: what the run's files would otherwise leave in the
 * machine's temporary directory goes there, see test/setup-synth-outdirs.js), and in it a blank
 * PGlite cluster (the data directory initdb makes), written to a file
 * the test files start their embedded databases from (test/setup-env.js hands it to the store), so
 * each new database skips initdb. The cluster is made by the PGlite this checkout installed, so it
 * always matches; migrations are not in it (tests of migrations need the blank schema).
 */
const { execFile } = require('node:child_process');
const { chmodSync, mkdtempSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const WASM_BASELINE = join(__dirname, 'support/wasm-baseline.js');

module.exports = async function globalSetup() {
  // WebAssembly on the baseline compiler only, here (a serial run's tests run in this process) and
  // in every Node process started from here (test/support/wasm-baseline.js says why).
  require(WASM_BASELINE);
  const given = process.env.NODE_OPTIONS ?? '';
  if (!given.includes(WASM_BASELINE)) process.env.NODE_OPTIONS = `${given} --require ${JSON.stringify(WASM_BASELINE)}`.trim();
  const { PGlite } = require('@electric-sql/pglite');
  const db = await PGlite.create();
  const image = await db.dumpDataDir('none');
  await db.close();
  const dir = mkdtempSync(join(tmpdir(), 'gyre-jest-run-'));
  // Others may pass, not list, as in the machine's temporary directory: a test that hands a
  // directory of its own to another user (chown) finds it reachable.
  chmodSync(dir, 0o711);
  const file = join(dir, 'blank-cluster.tar');
  writeFileSync(file, Buffer.from(await image.arrayBuffer()));
  // Workers start after this and inherit the variables.
  process.env.GYRE_TEST_PGLITE_BLANK_CLUSTER = file;
  process.env.GYRE_TEST_RUN_DIR = dir;
  globalThis.__gyreTestRunDir = dir;
  // The migrated embedded database that `gyre server` processes of the tests start from
  // (test/support/embedded-database.ts), made here once rather than by the first test files of
  // two workers at once inside their start-up budget. Kept in the temporary directory per schema,
  // so later runs find it made.
  await new Promise((resolve, reject) => {
    const script = "require('./test/support/embedded-database.ts').migratedTemplate().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); })";
    execFile(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script], { cwd: join(__dirname, '..'), timeout: 300_000 }, (error, _stdout, stderr) =>
      error ? reject(new Error(`making the migrated test database failed: ${stderr || error.message}`)) : resolve(),
    );
  });
};
