import { parse } from 'pg-connection-string';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPostgresStore } from '../../runtime/store/postgres-store';

/**
 * The cluster install's DATABASE_URL ends in `?sslmode=verify-full&sslrootcert=<CA file>`
 * (docs/deploying.md, "Database TLS"). Gyre hands the URL to `pg`, which reads it with
 * pg-connection-string: these tests prove the installed versions verify the server with that CA
 * and check its name.
 */
describe('DATABASE_URL with sslmode=verify-full and sslrootcert', () => {
  let dir: string;
  let ca: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-db-ca-'));
    ca = join(dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('becomes a TLS config that trusts only that CA and checks the server name', () => {
    const config = parse(`postgres://gyre:pw@db.internal:5432/gyre?sslmode=verify-full&sslrootcert=${ca}`);
    expect(config.ssl).toEqual({ ca: expect.stringContaining('not really') });
    // Neither verification is turned off: Node's defaults (rejectUnauthorized, checkServerIdentity) apply.
    const ssl = config.ssl as Record<string, unknown>;
    expect(ssl.rejectUnauthorized).toBeUndefined();
    expect(ssl.checkServerIdentity).toBeUndefined();
    // A CA file that is not there stops the connection config, naming the file.
    expect(() => parse(`postgres://db/gyre?sslmode=verify-full&sslrootcert=${join(dir, 'missing.pem')}`)).toThrow(/missing\.pem/);
  });
});

const url = process.env.GYRE_TEST_TLS_DATABASE_URL;
const withTlsServer = url ? describe : describe.skip;

/** Against a PostgreSQL that takes only TLS, with a certificate for `localhost` from a CA of its own (.ci/tls-postgres.sh). */
withTlsServer('a TLS-only PostgreSQL', () => {
  const ca = process.env.GYRE_TEST_TLS_DATABASE_CA!;
  const otherCa = process.env.GYRE_TEST_TLS_DATABASE_OTHER_CA!;
  const withParams = (base: string, params: string) => `${base}${base.includes('?') ? '&' : '?'}${params}`;
  const connect = async (connectionString: string) => {
    const store = await createPostgresStore({ connectionString, maxConnections: 1 });
    try {
      return (await store.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'))[0].ssl;
    } finally {
      await store.close();
    }
  };

  it('is reached over verified TLS with its CA', async () => {
    expect(await connect(withParams(url!, `sslmode=verify-full&sslrootcert=${ca}`))).toBe(true);
  });

  it('is refused with another CA, with Node\'s CA list, and under a name its certificate does not carry', async () => {
    await expect(connect(withParams(url!, `sslmode=verify-full&sslrootcert=${otherCa}`))).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);
    await expect(connect(withParams(url!, 'sslmode=verify-full'))).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);
    // The certificate names localhost, not 127.0.0.1: verify-full checks the name, not only the chain.
    const byAddress = url!.replace('@localhost:', '@127.0.0.1:');
    await expect(connect(withParams(byAddress, `sslmode=verify-full&sslrootcert=${ca}`))).rejects.toThrow(/altnames|does not match|Hostname\/IP/i);
  });

  it('refuses a connection without TLS (so the tests above did use it)', async () => {
    await expect(connect(withParams(url!, 'sslmode=disable'))).rejects.toThrow(/no pg_hba\.conf entry|SSL off|reject/i);
  });
});
