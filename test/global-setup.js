/**
 * Once per test run: a blank PGlite cluster (the data directory initdb makes), written to a file
 * the test files start their embedded databases from (test/setup-env.js hands it to the store), so
 * each new database skips initdb. The cluster is made by the PGlite this checkout installed, so it
 * always matches; migrations are not in it (tests of migrations need the blank schema).
 */
const { mkdtempSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

module.exports = async function globalSetup() {
  const { PGlite } = require('@electric-sql/pglite');
  const db = await PGlite.create();
  const image = await db.dumpDataDir('none');
  await db.close();
  const dir = mkdtempSync(join(tmpdir(), 'gyre-jest-pglite-'));
  const file = join(dir, 'blank-cluster.tar');
  writeFileSync(file, Buffer.from(await image.arrayBuffer()));
  // Workers start after this and inherit the variable.
  process.env.GYRE_TEST_PGLITE_BLANK_CLUSTER = file;
  globalThis.__gyreBlankClusterDir = dir;
};
