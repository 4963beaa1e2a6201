#!/usr/bin/env -S MALLOC_ARENA_MAX=1 node --max-semi-space-size=4 --liftoff-only --heap-growing-percent=50
// The process's memory settings are on the line above, so `npm start`, the image's `gyre` and an
// installed `gyre` all start with them (docs/speed.md, "Memory"): one malloc arena instead of one
// per thread (the threads' arenas held 50-100 MiB of freed memory), a young generation of at
// most 3 x 4 MiB instead of 3 x 16, and WebAssembly (PGlite, the embedded database) on V8's
// baseline compiler only: optimizing PGlite's functions took ~55 MiB and 2 CPU-seconds of a start;
// and an old generation collected again once it has grown by half of what the last collection
// kept (V8 otherwise let it nearly double: a server on PostgreSQL held ~35 MiB of garbage after
// 1,000 pipelines, 200 MiB in all, and 165-170 with this).
// The `gyre` command. Sources are TypeScript; tsx compiles them on load so there is no build step.
// Secrets are taken out of the environment first: nothing started from here inherits them.
const { takeSecrets } = require('./secrets');
const { values, blanked } = takeSecrets();
require('tsx/cjs');
require('../runtime/cli/main.ts').main(process.argv.slice(2), {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  env: { ...process.env, ...values },
  ownProcess: { environmentBlanked: blanked },
});
