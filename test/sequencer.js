/**
 * Runs the longest test files first, so that neither of the two workers is left alone with a long
 * file at the end of the run. Jest's own sequencer knows durations only from its cache, which a
 * fresh CI machine does not have; there it falls back to file size, which puts some of the slowest
 * files (short files that start servers and browsers) last. test/durations.json holds the seconds
 * each file took in a full run (`node test/update-durations.js <jest --json output>...` rewrites
 * it). A file not in the table runs first, sized by Jest's cache or, failing that, first of all.
 */
const { default: TestSequencer } = require('@jest/test-sequencer');
const { relative } = require('node:path');
const durations = require('./durations.json');

/**
 * Files that wait for something .ci/run makes in the background while the tests run (the runtime
 * image, which the Docker-jobs-on-Nomad test runs as its agent): they go last, when it is long done.
 */
const LAST = ['test/images/runtime-image.test.ts', 'test/execution/nomad-docker.test.ts'];

class LongestFirst extends TestSequencer {
  sort(tests) {
    const seconds = (test) => {
      const path = relative(test.context.config.rootDir, test.path);
      if (LAST.includes(path)) return Number.NEGATIVE_INFINITY;
      const known = durations[path];
      if (known !== undefined) return known;
      const cached = this.time(test);
      return cached !== undefined ? cached / 1000 : Number.POSITIVE_INFINITY;
    };
    return [...tests].sort((a, b) => seconds(b) - seconds(a));
  }
}

module.exports = LongestFirst;
