import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startServerProcess, until } from '../support/processes';

/**
 * Issue #19: an embedded server holds only what its settings use. The SDKs and parsers of features
 * that are not configured, or not yet used, are not loaded at all (each is megabytes of a server's
 * memory), and load when the feature is first used.
 */
const ROOT = resolve(__dirname, '../..');
const TOKEN = 'footprint-token-0123456789abcdef';

/** Packages an idle embedded server with nothing configured must not have loaded. */
const NOT_LOADED_IDLE = [
  '@aws-sdk/client-s3',
  '@aws-sdk/client-kms',
  '@aws-sdk/client-ec2',
  '@aws-sdk/client-ecr',
  '@google-cloud/storage',
  '@google-cloud/kms',
  '@google-cloud/compute',
  '@octokit/rest',
  'nodemailer',
  'graphql',
  'sshpk',
  'node-forge',
  'ldapts',
  'openid-client',
  'fast-xml-parser',
];

describe('an embedded server loads what it uses', () => {
  let dir: string;
  let server: { child: ChildProcess; url: string };
  const listed = () => join(dir, 'loaded-packages.txt');

  /** The packages the server process has loaded, as its preload lists them on SIGUSR2. */
  async function loadedPackages(): Promise<string[]> {
    rmSync(listed(), { force: true });
    server.child.kill('SIGUSR2');
    await until('the server to list its packages', async () => existsSync(listed()), 10_000, 20);
    return readFileSync(listed(), 'utf8').split('\n').filter(Boolean);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-footprint-'));
    server = await startServerProcess({
      GYRE_DATA_DIR: join(dir, 'data'),
      DATABASE_URL: '',
      GYRE_ADMIN_TOKEN: TOKEN,
      NODE_OPTIONS: `--require ${join(ROOT, 'test/fixtures/loaded-packages.js')}`,
      GYRE_TEST_LOADED_PACKAGES: listed(),
    });
  }, 90_000);

  afterAll(async () => {
    if (server?.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('holds no SDK or parser of an unconfigured or unused feature when idle, and loads GraphQL on its first query', async () => {
    const idle = await loadedPackages();
    // The listing works: what every server uses is there.
    expect(idle).toEqual(expect.arrayContaining(['fastify', '@electric-sql/pglite']));
    expect(NOT_LOADED_IDLE.filter((p) => idle.includes(p))).toEqual([]);

    // The circleci CLI's GraphQL is answered as before, the library loaded on that first request.
    const response = await fetch(`${server.url}/graphql-unstable`, {
      method: 'POST',
      headers: { authorization: TOKEN, 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'query { __typename }' }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ data: { __typename: 'Query' } });
    expect(await loadedPackages()).toContain('graphql');
  }, 60_000);
});
