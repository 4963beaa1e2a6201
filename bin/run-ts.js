#!/usr/bin/env node
// Runs a TypeScript entry file (benchmarks, scripts) with the same loader the gyre command uses.
require('tsx/cjs');
const path = require('node:path');
const file = process.argv[2];
if (!file) { console.error('usage: run-ts <file.ts> [args…]'); process.exit(2); }
process.argv.splice(1, 1);
require(path.resolve(file));
