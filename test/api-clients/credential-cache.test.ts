/**
 * The API's credential cache (runtime/identity/credential-cache.ts) never lets a revoked token or
 * a removed role keep working: at once through this process, as soon as the NOTIFY of another
 * process's change arrives, and within DEFAULT_CREDENTIAL_CACHE_TTL_MS (2 s) whatever happens.
 */
import { createCredentialCache, DEFAULT_CREDENTIAL_CACHE_TTL_MS, IDENTITY_CHANGED_CHANNEL } from '../../runtime/identity/credential-cache';
import type { AccessTarget, Standing } from '../../runtime/domain/permissions';
import type { Principal } from '../../runtime/domain/principal';
import { DEFAULT_PIPELINE_VIEW_TTL_MS, PIPELINE_CHANGED_CHANNEL } from '../../runtime/api/pipeline-view-cache';
import { startTestGyre, testStores, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';
import { readGate } from '../support/read-gate';

describe('the credential cache, alone', () => {
  const alice: Principal = { userId: 'u1', login: 'alice', isAdmin: false, token: { id: 't1', kind: 'personal' } };
  const target: AccessTarget = { kind: 'pipeline', id: '0c1e2d3f-0000-4000-8000-000000000001' };

  async function setup(options: { expiresAt?: Date } = {}) {
    let clock = 1_000_000;
    const calls = { authenticate: 0, standing: 0 };
    let principal: Principal | undefined = alice;
    let standing: Standing = { exists: true, org: 'acme', projectId: 'p1', projectRole: 'read' };
    const gate = readGate();
    const listeners: ((payload: string) => void)[] = [];
    const cache = await createCredentialCache({
      identity: {
        async authenticate() {
          calls.authenticate++;
          await gate.passed();
          return principal;
        },
        async standing() {
          calls.standing++;
          await gate.passed();
          return standing;
        },
      },
      store: {
        async listen(channel, handler) {
          expect(channel).toBe(IDENTITY_CHANGED_CHANNEL);
          listeners.push(handler);
          return async () => undefined;
        },
        async query() {
          return [{ expires_at: options.expiresAt ?? null }] as never;
        },
      },
      now: () => clock,
    });
    return {
      cache,
      calls,
      tick: (ms: number) => (clock += ms),
      notify: () => listeners.forEach((l) => l('api_tokens')),
      revoke: () => (principal = undefined),
      demote: (s: Standing) => (standing = s),
      holdReads: gate.hold,
    };
  }

  it('answers a token from memory until its time is up, then asks again', async () => {
    const t = await setup();
    expect(await t.cache.authenticate('tok')).toEqual(alice);
    expect(await t.cache.authenticate('tok')).toEqual(alice);
    expect(t.calls.authenticate).toBe(1);
    t.revoke();
    t.tick(DEFAULT_CREDENTIAL_CACHE_TTL_MS - 1);
    expect(await t.cache.authenticate('tok')).toEqual(alice);
    t.tick(2);
    expect(await t.cache.authenticate('tok')).toBeUndefined();
    expect(t.calls.authenticate).toBe(2);
  });

  it('forgets everything when a change is announced', async () => {
    const t = await setup();
    await t.cache.authenticate('tok');
    await t.cache.standing(alice, target);
    t.revoke();
    t.demote({ exists: true, org: 'acme', projectId: 'p1' });
    t.notify();
    expect(await t.cache.authenticate('tok')).toBeUndefined();
    expect(await t.cache.standing(alice, target)).toEqual({ exists: true, org: 'acme', projectId: 'p1' });
  });

  it('does not keep an answer read while a change was announced', async () => {
    const t = await setup();
    const release = t.holdReads();
    const reading = t.cache.authenticate('tok');
    t.notify(); // the token is revoked while the read is under way
    release();
    expect(await reading).toEqual(alice);
    t.revoke();
    expect(await t.cache.authenticate('tok')).toBeUndefined();
  });

  it('never keeps a token past its expiry, an unknown token, or a target that does not exist', async () => {
    const t = await setup({ expiresAt: new Date(1_000_000 + 500) });
    await t.cache.authenticate('tok');
    t.revoke();
    t.tick(501);
    expect(await t.cache.authenticate('tok')).toBeUndefined();
    expect(await t.cache.authenticate('tok')).toBeUndefined();
    expect(t.calls.authenticate).toBe(3);
    t.demote({ exists: false });
    await t.cache.standing(alice, target);
    await t.cache.standing(alice, target);
    expect(t.calls.standing).toBe(2);
  });
});

describe.each(testStores())('revocation through the API (%s)', (store) => {
  let g: TestGyre;
  let pipelineId: string;

  beforeAll(async () => {
    g = await startTestGyre({ store });
    await g.addProject('acme/cached', { '.circleci/config.yml': 'version: 2.1\njobs:\n  a:\n    docker: [{ image: x }]\n    steps: [{ run: "true" }]\nworkflows:\n  w: { jobs: [a] }\n' });
    pipelineId = (await g.trigger('acme/cached')).id;
  }, 60_000);

  afterAll(async () => {
    await g?.stop();
  });

  const read = (token: string) => fetch(`${g.url}/api/v2/pipeline/${pipelineId}`, { headers: { 'Circle-Token': token } }).then((r) => r.status);
  /** Milliseconds until `read` answers `status`, polling; fails past the cache's bound and some slack. */
  async function untilStatus(token: string, status: number): Promise<number> {
    const started = Date.now();
    while ((await read(token)) !== status) {
      if (Date.now() - started > DEFAULT_CREDENTIAL_CACHE_TTL_MS + 1500) throw new Error(`still not ${status} after ${Date.now() - started} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return Date.now() - started;
  }

  it('a token revoked through the API fails on the very next request', async () => {
    const user = await g.api('POST', '/api/v2/users', { login: `rev-${store}` });
    await g.api('PUT', `/api/v2/project/gh/acme/cached/members/rev-${store}`, { role: 'read' });
    const second = (await fetch(`${g.url}/api/v2/me/tokens`, { method: 'POST', headers: { 'Circle-Token': user.token, 'Content-Type': 'application/json' }, body: JSON.stringify({ label: 'second' }) }).then((r) => r.json())) as { id: string; token: string };
    expect(await read(second.token)).toBe(200);
    expect(await read(second.token)).toBe(200);
    const revoked = await fetch(`${g.url}/api/v2/me/tokens/${second.id}`, { method: 'DELETE', headers: { 'Circle-Token': user.token } });
    expect(revoked.status).toBeLessThan(300);
    expect(await read(second.token)).toBe(401);
    expect(await read(user.token)).toBe(200);
  });

  it("a change another process makes (straight to the database) is in force within the cache's bound", async () => {
    const user = await g.api('POST', '/api/v2/users', { login: `other-${store}` });
    await g.api('PUT', `/api/v2/project/gh/acme/cached/members/other-${store}`, { role: 'read' });
    expect(await read(user.token)).toBe(200);
    // As another process would: no request to this one, only the database and its NOTIFY.
    await g.gyre.store.query(`DELETE FROM project_members WHERE user_id = $1`, [user.id]);
    expect(await untilStatus(user.token, 404)).toBeLessThanOrEqual(DEFAULT_CREDENTIAL_CACHE_TTL_MS + 1500);
    await g.gyre.store.query(`INSERT INTO project_members (project_id, user_id, role) SELECT id, $1, 'read' FROM projects WHERE slug = 'gh/acme/cached'`, [user.id]);
    expect(await untilStatus(user.token, 200)).toBeLessThanOrEqual(DEFAULT_CREDENTIAL_CACHE_TTL_MS + 1500);
    await g.gyre.store.query(`DELETE FROM api_tokens WHERE user_id = $1`, [user.id]);
    expect(await untilStatus(user.token, 401)).toBeLessThanOrEqual(DEFAULT_CREDENTIAL_CACHE_TTL_MS + 1500);
  });

  it("a pipeline's answer is kept, and a change another process makes to it shows as soon as its NOTIFY arrives", async () => {
    const errorsOf = async () => ((await fetch(`${g.url}/api/v2/pipeline/${pipelineId}`, { headers: { 'Circle-Token': g.token } }).then((r) => r.json())) as { errors: { message: string }[] }).errors;
    await until('the pipeline to be created', async () => (await g.api('GET', `/api/v2/pipeline/${pipelineId}`)).state === 'created');
    expect(await errorsOf()).toEqual([]);
    const heard: string[] = [];
    const unlisten = await g.gyre.store.listen(PIPELINE_CHANGED_CHANNEL, (payload) => heard.push(payload));
    // As the GitHub status writer does, from another process: only the database and its NOTIFY.
    await g.gyre.store.query(`UPDATE pipelines SET errors = errors || '[{"type":"plan","message":"set by another process"}]'::jsonb WHERE id = $1`, [pipelineId]);
    const started = Date.now();
    while (!(await errorsOf()).some((e) => e.message === 'set by another process')) {
      if (Date.now() - started > DEFAULT_PIPELINE_VIEW_TTL_MS + 1500) throw new Error('the change did not show');
      await new Promise((r) => setTimeout(r, 20));
    }
    // Migration 660 names the pipeline that changed, so only its answer is dropped.
    await until('the NOTIFY of the change', async () => heard.includes(pipelineId));
    await unlisten();
  });
});
