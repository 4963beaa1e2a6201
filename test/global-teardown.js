const { rmSync } = require('node:fs');

module.exports = async function globalTeardown() {
  if (globalThis.__gyreBlankClusterDir) rmSync(globalThis.__gyreBlankClusterDir, { recursive: true, force: true });
};
