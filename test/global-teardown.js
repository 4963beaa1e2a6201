// This run's own directory (test/global-setup.js) goes, with what the run put in it; other runs' are left alone.
const { rmSync } = require('node:fs');

module.exports = async function globalTeardown() {
  if (globalThis.__gyreTestRunDir) rmSync(globalThis.__gyreTestRunDir, { recursive: true, force: true });
};
