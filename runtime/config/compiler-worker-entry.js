// The entry of a config compiler worker thread (see compiler-pool.ts). A worker thread starts with
// neither the tsx loader that bin/gyre.js registers nor jest's transform, so this plain-JS file
// registers tsx (a runtime dependency) in the thread and then loads the TypeScript worker.
require('tsx/cjs');
require('./compiler-worker.ts');
