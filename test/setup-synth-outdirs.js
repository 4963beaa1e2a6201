/**
 * The tests of the distribution synthesize cdktf apps: cdktf's `Testing.app()` (and `synthScope`,
 * which calls it) makes a directory `cdktf.outdir.*` in the machine's temporary directory for every
 * app and never removes it. A full run left about a thousand there, which every build uid's sweep
 * on that machine then lists, entry by entry, at the end of each task (docs/speed.md). Those files'
 * apps get theirs in this run's own directory instead (GYRE_TEST_RUN_DIR, test/global-setup.js),
 * which the run removes at its end, and only its own: runs going on at once keep theirs.
 */
const { mkdirSync, mkdtempSync } = require('node:fs');
const { join, relative } = require('node:path');

const runDir = process.env.GYRE_TEST_RUN_DIR;
const testPath = expect.getState().testPath;
const SYNTH_SUITES = /^test\/(constructs|stacks|distribution)\//;

if (runDir && testPath && SYNTH_SUITES.test(relative(join(__dirname, '..'), testPath))) {
  const { Testing } = require('cdktf');
  const outdirs = join(runDir, 'cdktf-outdirs');
  mkdirSync(outdirs, { recursive: true });
  const app = Testing.app;
  Testing.app = function appInThisRun(options = {}) {
    return app.call(this, { ...options, outdir: options.outdir ?? mkdtempSync(join(outdirs, 'cdktf.outdir.')) });
  };
}
