// cdktf phones home for version checks unless told not to; tests run with no network.
process.env.CHECKPOINT_DISABLE = '1';

// Embedded databases start from the blank cluster test/global-setup.js made, skipping initdb.
if (process.env.GYRE_TEST_PGLITE_BLANK_CLUSTER) {
  const { readFileSync } = require('node:fs');
  const { useBlankCluster } = require('../runtime/store/pglite-store');
  useBlankCluster(new Blob([readFileSync(process.env.GYRE_TEST_PGLITE_BLANK_CLUSTER)]));
}
