#!/usr/bin/env node
// Reads or writes a build's tree with the build's identity for the file steps (see
// runtime/agent/sandbox/tree-helper.ts). Started by the agent, never by hand.
require('tsx/cjs');
require('../runtime/agent/sandbox/tree-helper.ts').helperMain(process.argv.slice(2));
