#!/usr/bin/env node
/**
 * Rewrites test/durations.json (read by test/sequencer.js) from the reports of
 * `jest --json --outputFile=<file>`: `node test/update-durations.js par.json ser.json`.
 */
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const table = {};
for (const file of process.argv.slice(2)) {
  const report = JSON.parse(readFileSync(file, 'utf8'));
  for (const result of report.testResults) {
    // Relative to the checkout that ran it, which need not be this one.
    table[result.name.replace(/^.*?\/(test\/)/, '$1')] = Math.round((result.endTime - result.startTime) / 100) / 10;
  }
}
if (Object.keys(table).length === 0) {
  console.error('usage: node test/update-durations.js <jest --json report>...');
  process.exit(2);
}
const sorted = Object.fromEntries(Object.entries(table).sort(([a], [b]) => a.localeCompare(b)));
writeFileSync(join(__dirname, 'durations.json'), `${JSON.stringify(sorted, null, 2)}\n`);
console.log(`test/durations.json: ${Object.keys(sorted).length} files`);
