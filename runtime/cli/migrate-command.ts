import { parseArgs } from 'node:util';
import { ConfigurationError } from '../domain/errors';
import { readDatabaseSettings } from '../settings';
import { describe, knownMigrations, migrate, schemaStatus } from '../store/migrate';
import { openStore } from '../store/open-store';
import type { Store } from '../store/store';
import type { CliIo } from './main';

const USAGE = 'allowed: gyre migrate [--wait [--timeout <seconds>] [--interval <seconds>]]';

export interface MigrateCommandOptions {
  /** Waits between checks; tests pass a fast clock. */
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => number;
}

/**
 * `gyre migrate`: applies the migrations this build knows that the database lacks, prints each,
 * and exits 0 (also when another `gyre migrate` applied them first: the advisory lock makes the
 * second wait and then find nothing to do).
 *
 * `gyre migrate --wait`: changes nothing; exits 0 once the database has every migration this build
 * knows, checking every `--interval` seconds (2) and printing what it still waits for, and exits 1
 * after `--timeout` seconds (900; 0 waits for ever). What a release's pods run before they start
 * with GYRE_MIGRATE=false, while its migration Job runs. A database that does not answer yet is
 * waited for too.
 *
 * Settings: DATABASE_URL, else the embedded database in GYRE_DATA_DIR (stop the server first:
 * the embedded database is one process's).
 */
export async function migrateCommand(args: string[], io: CliIo, options: MigrateCommandOptions = {}): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { wait: { type: 'boolean' }, timeout: { type: 'string' }, interval: { type: 'string' } }, strict: true, allowPositionals: false }));
  } catch (error) {
    io.stderr(`gyre migrate: ${(error as Error).message} (${USAGE})\n`);
    return 2;
  }
  const seconds = (name: 'timeout' | 'interval', fallback: number, min: number): number | undefined => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > 86_400) {
      io.stderr(`gyre migrate: --${name} '${raw}' must be a whole number of seconds from ${min} to 86400\n`);
      return undefined;
    }
    return Number(raw);
  };
  const timeout = seconds('timeout', 900, 0);
  const interval = seconds('interval', 2, 1);
  if (timeout === undefined || interval === undefined) return 2;
  if (!values.wait && (values.timeout !== undefined || values.interval !== undefined)) {
    io.stderr(`gyre migrate: --timeout and --interval go with --wait (${USAGE})\n`);
    return 2;
  }
  let database;
  try {
    database = readDatabaseSettings(io.env);
  } catch (error) {
    if (error instanceof ConfigurationError) {
      io.stderr(`gyre: bad setting ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  if (values.wait && !database.databaseUrl) {
    // The embedded database is one process's: a second one opening it to watch would corrupt it.
    io.stderr('gyre migrate --wait: needs DATABASE_URL (the embedded database is migrated by the server that opens it)\n');
    return 2;
  }
  const open = () => openStore({ databaseUrl: database.databaseUrl, dataDir: database.databaseUrl ? undefined : database.dataDir, migrations: 'none' });
  if (!values.wait) {
    const store = await open();
    try {
      const applied = await migrate(store);
      for (const name of applied) io.stdout(`applied ${name}\n`);
      const { newer } = await schemaStatus(store);
      io.stdout(
        applied.length === 0
          ? `the schema is up to date: all ${knownMigrations().length} migrations of this release were applied before\n`
          : `applied ${applied.length} migration${applied.length === 1 ? '' : 's'}; the schema has all ${knownMigrations().length} of this release\n`,
      );
      if (newer.length > 0) io.stdout(`the database also has ${newer.length} migration${newer.length === 1 ? '' : 's'} of a newer release (${describe(newer)})\n`);
      return 0;
    } finally {
      await store.close();
    }
  }
  return waitForSchema(open, io, { timeoutMs: timeout * 1000, intervalMs: interval * 1000, sleep: options.sleep, now: options.now });
}

async function waitForSchema(
  open: () => Promise<Store>,
  io: CliIo,
  options: { timeoutMs: number; intervalMs: number; sleep?: (ms: number) => Promise<void>; now?: () => number },
): Promise<number> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const now = options.now ?? Date.now;
  const started = now();
  const total = knownMigrations().length;
  let store: Store | undefined;
  let said = '';
  let lastSaidAt = started;
  const say = (line: string) => {
    const elapsed = Math.round((now() - started) / 1000);
    // A line when what it waits for changes, and every 30 s in any case, so a log shows it alive.
    if (line === said && now() - lastSaidAt < 30_000) return;
    said = line;
    lastSaidAt = now();
    io.stderr(`[${elapsed}s] ${line}\n`);
  };
  try {
    for (;;) {
      try {
        store ??= await open();
        const { pending } = await schemaStatus(store);
        if (pending.length === 0) {
          io.stdout(`the schema has all ${total} migrations of this release\n`);
          return 0;
        }
        say(`waiting for ${pending.length} of ${total} migrations: ${describe(pending)} (applied by \`gyre migrate\`, the release's migration Job)`);
      } catch (error) {
        // The database may not answer yet (starting, or its address not yet resolvable): wait for it too.
        say(`waiting for the database: ${(error as Error).message}`);
        await store?.close().catch(() => undefined);
        store = undefined;
      }
      if (options.timeoutMs > 0 && now() - started >= options.timeoutMs) {
        io.stderr(`gyre migrate --wait: gave up after ${Math.round(options.timeoutMs / 1000)} s; ${said || 'the schema is not ready'}. Is the release's migration Job running? (kubectl -n gyre get jobs; kubectl -n gyre logs job/<gyre-migrate-…>)\n`);
        return 1;
      }
      await sleep(options.intervalMs);
    }
  } finally {
    await store?.close().catch(() => undefined);
  }
}
