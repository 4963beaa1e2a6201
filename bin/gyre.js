#!/usr/bin/env node
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
