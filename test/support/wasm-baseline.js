/**
 * Test processes run WebAssembly on V8's baseline compiler only (Liftoff), as `gyre` itself does
 * (`--liftoff-only` on bin/gyre.js's first line; docs/speed.md, "Memory"): PGlite is a large
 * WebAssembly module, and optimizing its functions took an embedded server about 2 of its 5.5
 * CPU-seconds of start-up. The Jest workers open PGlite in-process, and some tests start
 * `node bin/gyre.js` without the first line's flags; with two test files and their servers sharing
 * two cores, that optimizing was about a minute of the suite (24 minutes in CI).
 *
 * test/global-setup.js loads this file in the Jest process and puts it in NODE_OPTIONS
 * (`--require`), so the workers and every Node process a test starts load it first.
 */
require('node:v8').setFlagsFromString('--liftoff-only');
