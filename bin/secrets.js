// Secrets leave the environment before anything else runs (tsx starts an esbuild process that
// would inherit them, and /proc/<pid>/environ shows the environment a process started with
// whatever it deletes later). Plain JavaScript so that it runs before the TypeScript loader.
'use strict';
const { closeSync, openSync, readFileSync, readSync, writeSync } = require('node:fs');

/** What `gyre server`, `gyre runner` and `gyre agent` read once and keep out of their environment. */
const SECRET_VARIABLES = [
  'GYRE_ADMIN_TOKEN',
  'DATABASE_URL',
  'GYRE_AGENT_SECRET',
  'NOMAD_TOKEN',
  'GYRE_RUNNER_TOKEN',
  'GYRE_TASK_TOKEN',
  'GYRE_TOKEN',
  // Sign-in, the GitHub App and the key wrapper: read from the settings, never needed by a child.
  'GYRE_GITHUB_CLIENT_SECRET',
  'GYRE_GITHUB_TOKEN',
  'GYRE_GITHUB_WEBHOOK_SECRET',
  'GYRE_OIDC_CLIENT_SECRET',
  'GYRE_LDAP_BIND_PASSWORD',
  'GYRE_METRICS_TOKEN',
  'VAULT_TOKEN',
];

/**
 * Removes the secret variables from this process's environment (so no child inherits them),
 * copies every other variable to the heap, and blanks the environment block the process started
 * with. Returns the secrets' values, and whether the block could be blanked (a kernel may refuse
 * writes to /proc/self/mem; the variables are gone from what children inherit all the same).
 */
function takeSecrets(names = SECRET_VARIABLES) {
  const values = {};
  for (const name of names) {
    if (process.env[name] !== undefined) values[name] = process.env[name];
    delete process.env[name];
  }
  // Set again, each variable is copied to the heap: the start block is no longer read from.
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined) process.env[name] = value;
  let blanked = false;
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // env_start and env_end: fields 50 and 51 of /proc/<pid>/stat (proc(5)), 48 and 49 after the name.
    const start = Number(fields[47]);
    const end = Number(fields[48]);
    if (start > 0 && end > start && end - start < 16 * 1024 * 1024) {
      const fd = openSync('/proc/self/mem', 'r+');
      try {
        const block = Buffer.alloc(end - start);
        readSync(fd, block, 0, block.length, start);
        writeSync(fd, Buffer.alloc(block.length), 0, block.length, start);
      } finally {
        closeSync(fd);
      }
      blanked = !readFileSync('/proc/self/environ').some((byte) => byte !== 0);
    }
  } catch {
    blanked = false;
  }
  return { values, blanked };
}

module.exports = { SECRET_VARIABLES, takeSecrets };
