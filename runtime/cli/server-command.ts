import { parseArgs } from 'node:util';
import { createLogger } from '../logger';
import { ConfigurationError } from '../domain/errors';
import { readSettings } from '../settings';
import { startGyre } from '../server/gyre';
import type { CliIo } from './main';

/**
 * `gyre server [--roles=a,b]`: reads settings, starts the roles asked for (all by default), stops
 * cleanly on SIGINT/SIGTERM. `--roles` overrides GYRE_ROLES.
 */
export async function runServer(args: string[], io: CliIo): Promise<void> {
  let settings;
  try {
    const { values } = parseArgs({ args, options: { roles: { type: 'string' } }, strict: true });
    settings = readSettings(values.roles ? { ...io.env, GYRE_ROLES: values.roles as string } : io.env);
  } catch (error) {
    if (error instanceof ConfigurationError) {
      io.stderr(`gyre: bad setting ${error.message}\n`);
      process.exitCode = 2;
      return;
    }
    if (error instanceof TypeError) {
      io.stderr(`gyre server: ${error.message} (allowed: --roles=<role,role,…>)\n`);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  const log = createLogger({ level: settings.logLevel });
  // What this process writes is its user's alone (0600, directories 0700): the data directory,
  // spools, git mirrors. The data directory is also tightened where an earlier start left it open.
  process.umask(0o077);
  // Every request's work runs inside the HTTP layer's error boundary and every loop catches its own
  // failures; a promise that still escapes is a bug to log, not a reason to stop serving everyone.
  process.on('unhandledRejection', (reason) => log.error('unhandled promise rejection (a bug: please report it)', { error: (reason as Error)?.stack ?? String(reason) }));
  // bin/gyre.js took the secrets out of the environment before anything ran: the settings hold
  // them, no child (git, a build) inherits them, and /proc/<pid>/environ shows none.
  if (io.ownProcess && !io.ownProcess.environmentBlanked) log.warn('could not blank the environment this process started with; its secrets stay readable in /proc/<pid>/environ by its own user');
  let gyre;
  try {
    gyre = await startGyre(settings, log);
  } catch (error) {
    // A start that cannot finish (a database that refuses, a port in use, a directory it may not
    // write) ends the process with the reason, rather than leave it up and serving nothing.
    log.error('could not start', { error: (error as Error).message });
    io.stderr(`gyre server: could not start: ${(error as Error).message}\n`);
    process.exit(1);
  }
  const lines = [
    `Gyre is running${gyre.url ? ` at ${gyre.url}` : ''} (${gyre.store.kind === 'pglite' ? `embedded database in ${settings.dataDir}` : 'PostgreSQL'}; roles: ${[...settings.roles].join(', ')}).`,
    `Health and metrics: ${gyre.opsUrl}/healthz and ${gyre.opsUrl}/metrics`,
  ];
  if (gyre.createdAdminToken && !settings.adminToken) {
    lines.push('', `Admin API token (shown once; keep it): ${gyre.createdAdminToken}`, `Sign in to the UI: ${gyre.url}/login#token=${gyre.createdAdminToken}`);
  }
  if (gyre.example) lines.push('', `Example pipeline ${gyre.example.pipelineNumber} of ${gyre.example.slug} is running: ${gyre.example.url}`);
  io.stdout(lines.join('\n') + '\n');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    gyre.stop().then(
      () => process.exit(0),
      (error) => {
        log.error('stop failed', { error: (error as Error).message });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
