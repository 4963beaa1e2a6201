import { parseArgs } from 'node:util';
import { ConfigurationError } from '../domain/errors';
import { rewrapAll, type RewrapResult } from '../secrets/rewrap';
import { SEALED_TABLES } from '../secrets/sealed-tables';
import { createSecretBox } from '../secrets/secret-box';
import { rotateLocalKey } from '../secrets/local-key-wrapper';
import { createKeyWrapper, readSecretsSettings, type SecretsSettings } from '../secrets/settings';
import { readDatabaseSettings } from '../settings';
import { openStore } from '../store/open-store';
import type { CliIo } from './main';

const USAGE = 'allowed: gyre secrets rotate-key [--no-rewrap] | gyre secrets rewrap [--batch-size N]';

/** How the wrapping key is rotated where Gyre does not hold it (printed by `rotate-key`). */
const ROTATE_ELSEWHERE: Record<Exclude<SecretsSettings['wrapper'], 'local'>, string> = {
  'aws-kms':
    'the key is AWS KMS\'s: rotate it there (automatic or on-demand rotation keeps the key id and needs no re-wrap; pointing GYRE_SECRETS_AWS_KMS_KEY_ID\'s alias at a new key does), then run `gyre secrets rewrap`',
  'gcp-kms': 'the key is Cloud KMS\'s: make a new primary version (gcloud kms keys versions create --primary …), then run `gyre secrets rewrap`',
  'vault-transit': 'the key is Vault\'s: rotate it (vault write -f <mount>/keys/<key>/rotate), then run `gyre secrets rewrap`',
};

/**
 * `gyre secrets rotate-key` and `gyre secrets rewrap`: key rotation from the command line.
 *
 * `rotate-key` adds a new current key to the local key file (GYRE_SECRETS_KEY_FILE), then re-wraps
 * every sealed value's data key under it (`--no-rewrap` leaves that to the servers' `contexts` role,
 * which does it at start and hourly). With a KMS or Vault wrapper the key is not Gyre's to rotate:
 * the command says how, and exits 2.
 *
 * `rewrap` moves every data key still wrapped by an older key to the current one, printing progress
 * per table; it exits 1 when some rows did not unwrap (their key is gone from the keyring or the
 * KMS), naming the key id, and leaves those rows as they were. Safe while servers run on
 * PostgreSQL; the embedded database is one process's, so stop the server first (as for `migrate`).
 */
export async function secretsCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'rotate-key' && sub !== 'rewrap') {
    io.stderr(`gyre secrets: ${sub ? `unknown command '${sub}'` : 'needs a command'} (${USAGE})\n`);
    return 2;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: sub === 'rotate-key' ? { 'no-rewrap': { type: 'boolean' } } : { 'batch-size': { type: 'string' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    io.stderr(`gyre secrets ${sub}: ${(error as Error).message} (${USAGE})\n`);
    return 2;
  }
  let settings: SecretsSettings;
  let database: ReturnType<typeof readDatabaseSettings>;
  try {
    database = readDatabaseSettings(io.env);
    settings = readSecretsSettings(io.env, database.dataDir);
  } catch (error) {
    if (error instanceof ConfigurationError) {
      io.stderr(`gyre: bad setting ${error.message}\n`);
      return 2;
    }
    throw error;
  }

  let batchSize = 100;
  if (sub === 'rewrap') {
    const raw = (values as { 'batch-size'?: string })['batch-size'];
    if (raw !== undefined) {
      if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 10_000) {
        io.stderr(`gyre secrets rewrap: --batch-size '${raw}' must be a whole number from 1 to 10000\n`);
        return 2;
      }
      batchSize = Number(raw);
    }
  }

  if (sub === 'rotate-key') {
    if (settings.wrapper !== 'local') {
      io.stderr(`gyre secrets rotate-key: GYRE_SECRETS_KEY_WRAPPER is ${settings.wrapper}; ${ROTATE_ELSEWHERE[settings.wrapper]}\n`);
      return 2;
    }
    let keyId: string;
    try {
      keyId = await rotateLocalKey(settings.keyFile);
    } catch (error) {
      io.stderr(`gyre secrets rotate-key: ${(error as Error).message}\n`);
      return 1;
    }
    io.stdout(`added key ${keyId} to ${settings.keyFile}; it wraps every new secret from now on\n`);
    if ((values as { 'no-rewrap'?: boolean })['no-rewrap']) {
      io.stdout('older keys stay in the file; the servers re-wrap at their next start and hourly (or run `gyre secrets rewrap`)\n');
      return 0;
    }
    if (!database.databaseUrl) {
      io.stdout(
        'the embedded database is the server\'s own: it re-wraps at its next start and hourly; or stop it and run `gyre secrets rewrap`\n',
      );
      return 0;
    }
  }

  const store = await openStore({ databaseUrl: database.databaseUrl, dataDir: database.databaseUrl ? undefined : database.dataDir, migrations: 'none' });
  let result: RewrapResult;
  try {
    const box = createSecretBox(createKeyWrapper(settings));
    result = await rewrapAll(store, box, SEALED_TABLES, {
      batchSize,
      onProgress: (table, rewrapped) => io.stderr(`${table}: ${rewrapped} re-wrapped\n`),
    });
  } catch (error) {
    io.stderr(`gyre secrets ${sub}: re-wrapping failed: ${(error as Error).message}\n`);
    return 1;
  } finally {
    await store.close();
  }
  for (const table of result.tables) {
    io.stdout(`${table.table}: ${table.rewrapped} re-wrapped, ${table.failed} failed, ${table.remaining} still under another key${table.firstError ? ` (${table.firstError})` : ''}\n`);
  }
  if (result.failed > 0 || result.remaining > 0) {
    io.stderr(`gyre secrets ${sub}: ${result.remaining} value${result.remaining === 1 ? ' is' : 's are'} still under an older key; keep that key until it is re-wrapped, and run this again\n`);
    return 1;
  }
  io.stdout(`every sealed value is under ${result.keyId}; older keys can be removed from ${settings.wrapper === 'local' ? settings.keyFile : 'the key service'} once backups made before now are no longer needed\n`);
  return 0;
}
