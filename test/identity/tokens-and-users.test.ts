import { DEFAULT_CREDENTIAL_CACHE_TTL_MS } from '../../runtime/identity/credential-cache';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createIdentity } from '../../runtime/identity/identity';
import { run, type CliIo } from '../../runtime/cli/main';
import { createLogger } from '../../runtime/logger';
import { startGyre } from '../../runtime/server/gyre';
import { readSettings } from '../../runtime/settings';
import { createTestDatabase } from '../support/database';
import { flowStore, startTestGyre, testStores, type TestGyre } from '../support/gyre';

/**
 * Users and API tokens as people use them: `gyre user` and `gyre token` against a running server,
 * tokens shown once and kept only as hashes, revocation and expiry that take effect at once, last
 * use noted without a write per request, disabled users locked out, the last admin kept, and a new
 * GYRE_ADMIN_TOKEN that replaces the old one across restarts.
 */

function capture(env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env };
  return { io, out: () => stdout, err: () => stderr };
}

const CONFIG = 'version: 2.1\njobs:\n  a:\n    docker: [{image: x}]\n    steps: [{run: "true"}]\nworkflows:\n  w:\n    jobs: [a]\n';

describe.each(testStores())('users and tokens (%s)', (store) => {
  let g: TestGyre;
  const gyre = (token: string, ...args: string[]) => {
    const c = capture({ GYRE_URL: g.url, GYRE_TOKEN: token });
    return run(args, c.io).then((code) => ({ code, out: c.out(), err: c.err() }));
  };
  const as = (token: string, method: string, path: string, body?: unknown) => g.raw(method, path, { headers: { 'Circle-Token': token }, body: body === undefined ? undefined : JSON.stringify(body) });

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0' } });
    await g.addProject('gh/acme/web', { '.circleci/config.yml': CONFIG });
  });
  afterAll(() => g?.stop());

  it('an admin adds a user with gyre user add, gives them roles, and their printed token works with those roles only', async () => {
    const added = await gyre(g.token, 'user', 'add', 'alice', '--name', 'Alice Liddell');
    expect(added.code).toBe(0);
    expect(added.err).toMatch(/added user alice; their API token \(shown once/);
    const alice = added.out.trim();
    expect(alice).toMatch(/^gyre_[0-9a-f]{40}$/);
    expect((await as(alice, 'GET', '/api/v2/me')).body).toMatchObject({ login: 'alice', name: 'Alice Liddell', admin: false });
    // No role yet: the project is not there for her.
    expect((await as(alice, 'GET', '/api/v2/project/gh/acme/web')).status).toBe(404);
    expect((await as(alice, 'GET', '/api/v2/projects')).body.items).toEqual([]);

    expect(await gyre(g.token, 'user', 'role', 'alice', 'gh/acme/web', 'read')).toMatchObject({ code: 0, out: 'alice has read on gh/acme/web\n' });
    expect((await as(alice, 'GET', '/api/v2/projects')).body.items.map((p: any) => p.slug)).toEqual(['gh/acme/web']);
    const refused = await as(alice, 'POST', '/api/v2/project/gh/acme/web/pipeline', {});
    expect(refused.status).toBe(403);
    expect(refused.body.message).toMatch(/needs project:trigger, held by the project's write or admin role/);

    expect(await gyre(g.token, 'user', 'role', 'alice', 'gh/acme', 'member')).toMatchObject({ code: 0, out: 'alice is member of gh/acme\n' });
    expect((await as(alice, 'POST', '/api/v2/project/gh/acme/web/pipeline', {})).status).toBe(201);
    // Her organisations, CircleCI's shape.
    expect((await as(alice, 'GET', '/api/v2/me/collaborations')).body).toEqual([expect.objectContaining({ name: 'acme', slug: 'gh/acme', 'vcs-type': 'github', role: 'member' })]);

    const list = await gyre(g.token, 'user', 'list');
    expect(list.out).toMatch(/^LOGIN\s+NAME\s+ADMIN\s+DISABLED\s+ROLES\n/);
    expect(list.out).toMatch(/\nalice\s+Alice Liddell\s+gh\/acme=member gh\/acme\/web=read\n/);
    expect(list.out).toMatch(/\nadmin\s+Administrator\s+yes\s*\n/);

    expect(await gyre(g.token, 'user', 'role', 'alice', 'gh/acme', 'none')).toMatchObject({ code: 0 });
    expect((await as(alice, 'POST', '/api/v2/project/gh/acme/web/pipeline', {})).status).toBe(403);

    // Only an instance admin manages users.
    expect((await as(alice, 'GET', '/api/v2/users')).status).toBe(403);
    expect(await gyre(alice, 'user', 'add', 'mallory')).toMatchObject({ code: 1, err: expect.stringMatching(/403.*instance:admin/) });
  });

  it('a personal token is shown once, stored only as a hash, listed without its secret, and stops working when revoked', async () => {
    const created = await gyre(g.token, 'token', 'create', '--label', 'laptop');
    expect(created.code).toBe(0);
    const token = created.out.trim();
    expect(created.err).toMatch(/^created personal token [0-9a-f-]{36} 'laptop'; shown once:\n$/);
    expect((await as(token, 'GET', '/api/v2/me')).status).toBe(200);

    const listed = await as(g.token, 'GET', '/api/v2/me/tokens');
    const entry = listed.body.items.find((t: any) => t.label === 'laptop');
    expect(entry).toMatchObject({ kind: 'personal', hint: token.slice(0, 9), expires_at: null, expired: false });
    expect(JSON.stringify(listed.body)).not.toContain(token);
    const table = await gyre(g.token, 'token', 'list');
    expect(table.out).toContain(`${entry.id}  laptop`);
    expect(table.out).not.toContain(token);
    // The database holds its SHA-256 and nothing from which to use it.
    const rows = await g.gyre.store.query<Record<string, unknown>>('SELECT * FROM api_tokens');
    expect(JSON.stringify(rows)).not.toContain(token.slice(9));
    expect(rows.some((r) => r.token_hash === require('node:crypto').createHash('sha256').update(token).digest('hex'))).toBe(true);

    expect(await gyre(g.token, 'token', 'revoke', entry.id)).toMatchObject({ code: 0, out: `token ${entry.id} revoked\n` });
    expect((await as(token, 'GET', '/api/v2/me')).status).toBe(401);
    // A token of someone else is not found, not revoked.
    const bobs = (await as(g.token, 'POST', '/api/v2/users', { login: 'bob' })).body.token;
    const bobsId = (await as(bobs, 'GET', '/api/v2/me/tokens')).body.items[0].id;
    expect((await as(g.token, 'DELETE', `/api/v2/me/tokens/${bobsId}`)).status).toBe(404);
    expect((await as(bobs, 'GET', '/api/v2/me')).status).toBe(200);
  });

  it('an expired token is refused within the cache\'s two seconds, listed as expired, and deleted a month later with a record', async () => {
    const made = (await as(g.token, 'POST', '/api/v2/me/tokens', { label: 'short-lived', expires_in_days: 1 })).body;
    expect(Date.parse(made.expires_at) - Date.now()).toBeGreaterThan(23 * 3600_000);
    expect((await as(made.token, 'GET', '/api/v2/me')).status).toBe(200);
    await g.gyre.store.query(`UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, [made.id]);
    // A change made straight in the database (as another process would) reaches the credential
    // cache by NOTIFY: refused as soon as it arrives, and never later than the cache's 2 s.
    const refusedBy = Date.now() + 2500;
    let status = (await as(made.token, 'GET', '/api/v2/me')).status;
    while (status !== 401 && Date.now() < refusedBy) {
      await new Promise((r) => setTimeout(r, 20));
      status = (await as(made.token, 'GET', '/api/v2/me')).status;
    }
    expect(status).toBe(401);
    expect((await as(g.token, 'GET', '/api/v2/me/tokens')).body.items.find((t: any) => t.id === made.id)).toMatchObject({ expired: true });
    expect((await gyre(g.token, 'token', 'list')).out).toMatch(/short-lived\s+personal\s+gyre_\w{4}…\s+\S+ \S+\s+expired /);

    const identity = createIdentity({ store: g.gyre.store });
    expect(await identity.sweepExpiredTokens()).toBe(0);
    await g.gyre.store.query(`UPDATE api_tokens SET expires_at = now() - interval '31 days' WHERE id = $1`, [made.id]);
    expect(await identity.sweepExpiredTokens()).toBe(1);
    expect((await as(g.token, 'GET', '/api/v2/me/tokens')).body.items.find((t: any) => t.id === made.id)).toBeUndefined();
    const audit = (await as(g.token, 'GET', '/api/v2/audit?limit=5')).body.items;
    expect(audit.find((e: any) => e.action === 'token.expire')).toMatchObject({ actor: { login: 'gyre' }, target: { type: 'token', id: made.id }, result: 'success' });
  });

  it('notes when a token was last used, at most once a minute, not on every request', async () => {
    const made = (await as(g.token, 'POST', '/api/v2/me/tokens', { label: 'busy' })).body;
    expect(made.last_used_at).toBeNull();
    const lastUsed = async () => (await g.gyre.store.query<{ t: Date | null }>('SELECT last_used_at AS t FROM api_tokens WHERE id = $1', [made.id]))[0].t;
    await as(made.token, 'GET', '/api/v2/me');
    const first = await lastUsed();
    expect(first).not.toBeNull();
    for (let i = 0; i < 5; i++) await as(made.token, 'GET', '/api/v2/me');
    expect(await lastUsed()).toEqual(first);
    // A minute later, the next use is noted.
    await g.gyre.store.query(`UPDATE api_tokens SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1`, [made.id]);
    const backdated = await lastUsed();
    // The API keeps a token's check in memory for up to 2 s (runtime/identity/credential-cache.ts); a minute later it has long gone.
    await new Promise((resolve) => setTimeout(resolve, DEFAULT_CREDENTIAL_CACHE_TTL_MS + 100));
    await as(made.token, 'GET', '/api/v2/me');
    expect((await lastUsed())!.getTime()).toBeGreaterThan(backdated!.getTime());
    expect((await as(g.token, 'GET', '/api/v2/me/tokens')).body.items.find((t: any) => t.id === made.id).last_used_at).not.toBeNull();
  });

  it('a project token reads or triggers its one project, as its scope says, and nothing else', async () => {
    await g.addProject('gh/acme/api', { '.circleci/config.yml': CONFIG });
    const read = await gyre(g.token, 'token', 'create', '--project', 'gh/acme/web', '--scope', 'read', '--label', 'dashboard');
    const trigger = await gyre(g.token, 'token', 'create', '--project', 'gh/acme/web', '--scope', 'trigger', '--label', 'deployer');
    expect(read.err).toMatch(/created project token for gh\/acme\/web \(read\)/);
    const [r, t] = [read.out.trim(), trigger.out.trim()];
    expect((await as(r, 'GET', '/api/v2/project/gh/acme/web/pipeline')).status).toBe(200);
    expect((await as(r, 'POST', '/api/v2/project/gh/acme/web/pipeline', {})).status).toBe(403);
    expect((await as(r, 'GET', '/api/v2/project/gh/acme/api')).status).toBe(404);
    expect((await as(r, 'GET', '/api/v2/projects')).body.items.map((p: any) => p.slug)).toEqual(['gh/acme/web']);
    expect((await as(r, 'GET', '/api/v2/me/tokens')).status).toBe(403);
    const made = await as(t, 'POST', '/api/v2/project/gh/acme/web/pipeline', {});
    expect(made.status).toBe(201);
    // The pipeline names who made the token.
    expect((await as(t, 'GET', `/api/v2/pipeline/${made.body.id}`)).body.trigger.actor.login).toBe('admin');
    expect((await as(t, 'PUT', '/api/v2/project/gh/acme/web/members/alice', { role: 'admin' })).status).toBe(403);

    const listed = await gyre(g.token, 'token', 'list', '--project', 'gh/acme/web');
    expect(listed.out).toMatch(/^ID\s+LABEL\s+SCOPE\s+STARTS/);
    expect(listed.out).toMatch(/dashboard\s+read\s+gyre_/);
    const id = listed.out.split('\n').find((l) => l.includes('deployer'))!.split(/\s+/)[0];
    expect(await gyre(g.token, 'token', 'revoke', id, '--project', 'gh/acme/web')).toMatchObject({ code: 0 });
    expect((await as(t, 'GET', '/api/v2/project/gh/acme/web')).status).toBe(401);
    expect(await gyre(g.token, 'token', 'create', '--project', 'gh/acme/web')).toMatchObject({ code: 2, err: expect.stringMatching(/needs --scope read or --scope trigger/) });
  });

  it('a disabled user is locked out at once; the last enabled instance admin cannot be demoted or disabled', async () => {
    const carol = (await as(g.token, 'POST', '/api/v2/users', { login: 'carol' })).body.token;
    expect(await gyre(g.token, 'user', 'disable', 'carol')).toMatchObject({ code: 0, out: 'carol is disabled: their tokens no longer work\n' });
    expect((await as(carol, 'GET', '/api/v2/me')).status).toBe(401);
    await gyre(g.token, 'user', 'enable', 'carol');
    expect((await as(carol, 'GET', '/api/v2/me')).status).toBe(200);

    const last = await gyre(g.token, 'user', 'role', 'admin', 'instance', 'none');
    expect(last).toMatchObject({ code: 1, err: expect.stringMatching(/409.*'admin' is the last enabled instance admin/) });
    expect((await as(g.token, 'PATCH', '/api/v2/users/admin', { disabled: true })).status).toBe(409);
    // With a second admin, the first may step down.
    expect(await gyre(g.token, 'user', 'role', 'carol', 'instance', 'admin')).toMatchObject({ code: 0, out: 'carol is an instance admin\n' });
    expect((await as(carol, 'GET', '/api/v2/users')).status).toBe(200);
    expect(await gyre(carol, 'user', 'role', 'carol', 'instance', 'none')).toMatchObject({ code: 0 });
    expect((await as(carol, 'GET', '/api/v2/users')).status).toBe(403);
  });
});

// Two restarts of a server: a flow, on the store flowStore picks (the token queries run on both above).
describe.each(flowStore())('GYRE_ADMIN_TOKEN across restarts (%s)', (store) => {
  it('a new value replaces the bootstrap token (a generated one too); the admin’s other tokens stay', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gyre-admin-token-'));
    const database = store === 'postgres' ? await createTestDatabase() : undefined;
    const log = createLogger({ level: 'silent' });
    const start = (adminToken?: string) =>
      startGyre(
        readSettings({
          GYRE_PORT: '0',
          GYRE_OPS_PORT: '0',
          GYRE_HOST: '127.0.0.1',
          GYRE_DATA_DIR: dataDir,
          GYRE_EXAMPLE: 'false',
          GYRE_RUNNER_SLOTS: '0',
          ...(adminToken ? { GYRE_ADMIN_TOKEN: adminToken } : {}),
          ...(database ? { DATABASE_URL: database.url } : {}),
        }),
        log,
      );
    const status = (url: string, token: string) => fetch(`${url}/api/v2/me`, { headers: { 'Circle-Token': token } }).then((r) => r.status);
    try {
      let gyre = await start();
      const generated = gyre.createdAdminToken!;
      expect(generated).toMatch(/^gyre_/);
      const personal = (await (await fetch(`${gyre.url}/api/v2/me/tokens`, { method: 'POST', headers: { 'Circle-Token': generated, 'Content-Type': 'application/json' }, body: '{"label":"ci"}' })).json() as { token: string }).token;
      await gyre.stop();

      gyre = await start('first-admin-token-0123456789');
      expect(gyre.createdAdminToken).toBeUndefined();
      expect(await status(gyre.url!, generated)).toBe(401);
      expect(await status(gyre.url!, 'first-admin-token-0123456789')).toBe(200);
      expect(await status(gyre.url!, personal)).toBe(200);
      await gyre.stop();

      gyre = await start('second-admin-token-0123456789');
      expect(await status(gyre.url!, 'first-admin-token-0123456789')).toBe(401);
      expect(await status(gyre.url!, 'second-admin-token-0123456789')).toBe(200);
      expect(await status(gyre.url!, personal)).toBe(200);
      await gyre.stop();

      // The same value again changes nothing.
      gyre = await start('second-admin-token-0123456789');
      expect(await status(gyre.url!, 'second-admin-token-0123456789')).toBe(200);
      const bootstrap = await gyre.store.query<{ n: number }>(`SELECT count(*)::int AS n FROM api_tokens WHERE kind = 'bootstrap'`);
      expect(bootstrap[0].n).toBe(1);
      const replaced = await gyre.store.query<{ n: number }>(`SELECT count(*)::int AS n FROM audit_events WHERE action = 'admin.token.replace'`);
      expect(replaced[0].n).toBe(2);
      await gyre.stop();
    } finally {
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
