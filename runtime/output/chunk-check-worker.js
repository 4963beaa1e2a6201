'use strict';
// A chunk checker's worker thread (runtime/output/chunk-checker.ts). Plain JavaScript: it needs
// only zlib, so it starts without the TypeScript loader. It inflates each gzip chunk it is sent and
// answers how many bytes the chunk holds (at most one more than it claims), or why it could not.
// The bytes themselves are dropped here: they are garbage of this thread's small heap.
const { parentPort } = require('node:worker_threads');
const { gunzipSync } = require('node:zlib');

parentPort.on('message', ({ id, gzip, rawBytes }) => {
  try {
    // Room for the whole result in one buffer: zlib inflates it in one go.
    const raw = gunzipSync(gzip, { chunkSize: Math.max(16 * 1024, rawBytes + 1024), maxOutputLength: rawBytes + 1 });
    parentPort.postMessage({ id, bytes: raw.length });
  } catch (error) {
    parentPort.postMessage({ id, code: error && error.code, message: error && error.message ? error.message : String(error) });
  }
});
parentPort.postMessage({ ready: true });
