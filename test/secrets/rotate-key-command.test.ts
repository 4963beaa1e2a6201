import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type CliIo } from '../../runtime/cli/main';
import { createIdentity } from '../../runtime/identity/identity';
import { createContexts } from '../../runtime/secrets/contexts';
import { defaultKeyFile, createLocalKeyWrapper } from '../../runtime/secrets/local-key-wrapper';
import { createSecretBox } from '../../runtime/secrets/secret-box';
import { openStore } from '../../runtime/store/open-store';
import { createTestDatabase, testStores } from '../support/database';

/** Runs `gyre …` in process with `env`, answering its exit code and what it printed. */
async function gyre(args: string[], env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), env };
  const code = await run(args, io);
  return { code, stdout, stderr };
}

describe.each(testStores())('gyre secrets rotate-key and rewrap (%s)', (kind) => {
  let dataDir: string;
  let env: Record<string, string | undefined>;
  let drop: (() => Promise<void>) | undefined;
  const ids = { org: '', project: '', context: '' };
  const open = () => openStore({ databaseUrl: env.DATABASE_URL, dataDir: env.DATABASE_URL ? undefined : dataDir });

  beforeEach(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'gyre-rotate-'));
    env = { GYRE_DATA_DIR: dataDir };
    if (kind === 'postgres') {
      const db = await createTestDatabase();
      drop = db.drop;
      env.DATABASE_URL = db.url;
    }
    // What a server stored: a project variable and a context variable, sealed under the first key.
    const store = await open();
    try {
      const contexts = createContexts({ store, box: createSecretBox(createLocalKeyWrapper({ file: defaultKeyFile(dataDir) })) });
      ids.project = randomUUID();
      await store.query("INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, 'gh/acme/app', 'acme', 'app', 'https://github.com/acme/app.git')", [ids.project]);
      ids.org = (await createIdentity({ store }).orgs.create('acme')).id;
      await contexts.projectVariables.put({ id: ids.project, slug: 'gh/acme/app', org: 'acme' }, 'DEPLOY_KEY', 'project-secret-1');
      ids.context = (await contexts.create(ids.org, 'prod')).id;
      await contexts.putVariable(ids.context, 'AWS_SECRET', 'context-secret-2');
    } finally {
      await store.close();
    }
  }, 60_000);
  afterEach(async () => {
    await drop?.();
    drop = undefined;
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** The variables a task of the project with the `prod` context gets, opened with the key file as it is now. */
  const resolved = async () => {
    const store = await open();
    try {
      const contexts = createContexts({ store, box: createSecretBox(createLocalKeyWrapper({ file: defaultKeyFile(dataDir) })) });
      return await contexts.resolveForTask({ orgId: ids.org, projectId: ids.project, contextNames: ['prod'], pipeline: { branch: 'main', values: {} }, actor: {} });
    } finally {
      await store.close();
    }
  };
  const dropKey = (id: string) => {
    const file = defaultKeyFile(dataDir);
    writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => !l.startsWith(`${id} `)).join('\n'));
  };

  it('adds a key, moves every secret under it, and the old key can then be removed', async () => {
    const rotated = await gyre(['secrets', 'rotate-key'], env);
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toContain(`added key local:2 to ${defaultKeyFile(dataDir)}`);
    if (kind === 'pglite') {
      // The embedded database is the server's own: the command does not open it unless asked to.
      expect(rotated.stdout).toContain('the embedded database is the server\'s own');
      const rewrapped = await gyre(['secrets', 'rewrap'], env);
      // Progress goes to standard error as batches finish.
      expect(rewrapped.stderr).toContain('project_variables: 1 re-wrapped\n');
      expect(rewrapped.stderr).toContain('context_variables: 1 re-wrapped\n');
      expect(rewrapped.code).toBe(0);
      expect(rewrapped.stdout).toContain('context_variables: 1 re-wrapped, 0 failed, 0 still under another key');
      expect(rewrapped.stdout).toContain('project_variables: 1 re-wrapped, 0 failed, 0 still under another key');
    } else {
      expect(rotated.stdout).toContain('context_variables: 1 re-wrapped, 0 failed, 0 still under another key');
      expect(rotated.stdout).toContain('project_variables: 1 re-wrapped, 0 failed, 0 still under another key');
      expect(rotated.stdout).toContain('every sealed value is under local:2');
    }
    dropKey('1');
    expect(await resolved()).toEqual({ ok: true, env: { DEPLOY_KEY: 'project-secret-1', AWS_SECRET: 'context-secret-2' } });
    // Nothing left to move.
    const again = await gyre(['secrets', 'rewrap'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('project_variables: 0 re-wrapped, 0 failed, 0 still under another key');
  }, 60_000);

  it('with --no-rewrap only adds the key; values under a key that is gone are reported, not lost', async () => {
    const rotated = await gyre(['secrets', 'rotate-key', '--no-rewrap'], env);
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toContain('the servers re-wrap at their next start and hourly');
    // Key 1 removed too early: rewrap says which key it needs and changes nothing.
    const file = defaultKeyFile(dataDir);
    const before = readFileSync(file, 'utf8');
    dropKey('1');
    const failed = await gyre(['secrets', 'rewrap'], env);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/project_variables: 0 re-wrapped, 1 failed, 1 still under another key \(.*local:1.*\)/);
    expect(failed.stderr).toContain('2 values are still under an older key; keep that key until it is re-wrapped');
    // Put it back and the same command finishes the job.
    writeFileSync(file, before);
    const done = await gyre(['secrets', 'rewrap', '--batch-size', '1'], env);
    expect(done.code).toBe(0);
    dropKey('1');
    expect(await resolved()).toEqual({ ok: true, env: { DEPLOY_KEY: 'project-secret-1', AWS_SECRET: 'context-secret-2' } });
  }, 60_000);
});

describe('gyre secrets: usage', () => {
  const env = { GYRE_DATA_DIR: join(tmpdir(), `gyre-rotate-none-${randomUUID()}`) };

  it('names what is allowed for a wrong command, option or value', async () => {
    expect(await gyre(['secrets'], env)).toMatchObject({ code: 2, stderr: expect.stringContaining('allowed: gyre secrets rotate-key [--no-rewrap] | gyre secrets rewrap') });
    expect(await gyre(['secrets', 'rotate'], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("unknown command 'rotate'") });
    expect(await gyre(['secrets', 'rewrap', '--batch-size', '0'], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--batch-size '0' must be a whole number from 1 to 10000") });
    expect(await gyre(['secrets', 'rotate-key', '--force'], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("Unknown option '--force'") });
  });

  it('says where a KMS key is rotated instead of pretending to', async () => {
    const answer = await gyre(['secrets', 'rotate-key'], { ...env, GYRE_SECRETS_KEY_WRAPPER: 'gcp-kms', GYRE_SECRETS_GCP_KMS_KEY: 'projects/p/locations/l/keyRings/r/cryptoKeys/k' });
    expect(answer.code).toBe(2);
    expect(answer.stderr).toContain('GYRE_SECRETS_KEY_WRAPPER is gcp-kms; the key is Cloud KMS\'s: make a new primary version');
    expect(answer.stderr).toContain('then run `gyre secrets rewrap`');
  });

  it('refuses to make a key file where there is none to rotate', async () => {
    const answer = await gyre(['secrets', 'rotate-key'], env);
    expect(answer.code).toBe(1);
    expect(answer.stderr).toContain('there is no key file at');
  });
});
