#!/usr/bin/env node
// The `gyre` command. Sources are TypeScript; tsx compiles them on load so there is no build step.
require('tsx/cjs');
require('../runtime/cli/main.ts').main(process.argv.slice(2));
