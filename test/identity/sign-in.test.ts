import { randomBytes } from 'node:crypto';
import { createIdentity, type Identity } from '../../runtime/identity/identity';
import { SignInError, type ExternalIdentity, type RedirectProvider } from '../../runtime/identity/sign-in/provider';
import { parseRoleMap } from '../../runtime/identity/sign-in/role-map';
import { createSignIn, SIGN_IN_FAILURES, type SignIn } from '../../runtime/identity/sign-in/sign-in';
import { createLogger } from '../../runtime/logger';
import { openStore } from '../../runtime/store/open-store';
import type { Store } from '../../runtime/store/store';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Browser sessions: signing in with a token gives an HttpOnly session cookie that works until
 * sign-out ends it on the server; writes made with the cookie need the session's CSRF token; failed
 * sign-ins are recorded and throttled. Then the redirect sign-in's checks, with a provider that
 * vouches for whoever the test says: a callback from another browser, a replayed callback, an
 * off-site return address, a login that a Gyre user already has, and roles that follow groups.
 */

/** The cookies a response sets, by name: value and attributes. */
function setCookies(res: Response): Map<string, { value: string; attributes: string }> {
  const out = new Map<string, { value: string; attributes: string }>();
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attributes] = line.split(';');
    const eq = pair.indexOf('=');
    out.set(pair.slice(0, eq).trim(), { value: pair.slice(eq + 1), attributes: attributes.join(';').trim() });
  }
  return out;
}

describe.each(flowStore())('browser sessions over HTTP (%s)', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ store });
  });
  afterAll(() => g?.stop());

  const signIn = async (token: string, address?: string) => {
    const res = await fetch(`${g.url}/auth/token`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...(address ? { 'X-Forwarded-For': address } : {}) }, body: JSON.stringify({ token }) });
    return { res, body: (await res.json()) as any, cookie: setCookies(res).get('gyre_session') };
  };
  const withCookie = (cookie: string, method = 'GET', headers: Record<string, string> = {}, body?: unknown) => (path: string) =>
    fetch(`${g.url}${path}`, { method, headers: { Cookie: `gyre_session=${cookie}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });

  it('a token sign-in gives an HttpOnly, SameSite session cookie that the API accepts; the token itself is not in it', async () => {
    const { res, body, cookie } = await signIn(g.token);
    expect(res.status).toBe(200);
    expect(body).toMatchObject({ login: expect.any(String), provider: 'token', csrf_token: expect.stringMatching(/^[A-Za-z0-9_-]{40,}$/) });
    expect(cookie).toBeDefined();
    expect(cookie!.value).not.toContain(g.token);
    expect(cookie!.attributes).toMatch(/HttpOnly/i);
    expect(cookie!.attributes).toMatch(/SameSite=Lax/i);
    expect(cookie!.attributes).toMatch(/Path=\//);
    expect(cookie!.attributes).not.toMatch(/Secure/); // plain HTTP here: a Secure cookie would never come back
    const me = await withCookie(cookie!.value)('/api/v2/me');
    expect(me.status).toBe(200);
    expect(((await me.json()) as any).login).toBe(body.login);
    const session = (await (await withCookie(cookie!.value)("/auth/session")).json()) as any;
    expect(session).toMatchObject({ login: body.login, provider: 'token', csrf_token: body.csrf_token });
  });

  it('a write made with the cookie needs the CSRF token (another site can send the cookie, not the header)', async () => {
    const { body, cookie } = await signIn(g.token);
    const tokenBody = { label: 'from the browser' };
    const forged = await withCookie(cookie!.value, 'POST', {}, tokenBody)('/api/v2/me/tokens');
    expect(forged.status).toBe(403);
    expect(((await forged.json()) as any).message).toMatch(/X-Gyre-CSRF/);
    const wrong = await withCookie(cookie!.value, 'POST', { 'X-Gyre-CSRF': 'x'.repeat(body.csrf_token.length) }, tokenBody)('/api/v2/me/tokens');
    expect(wrong.status).toBe(403);
    // A CSRF token of another session does not do either.
    const other = await signIn(g.token);
    const crossed = await withCookie(cookie!.value, 'POST', { 'X-Gyre-CSRF': other.body.csrf_token }, tokenBody)('/api/v2/me/tokens');
    expect(crossed.status).toBe(403);
    const made = await withCookie(cookie!.value, 'POST', { 'X-Gyre-CSRF': body.csrf_token }, tokenBody)('/api/v2/me/tokens');
    expect(made.status).toBe(201);
    // Reads need no CSRF token.
    expect((await withCookie(cookie!.value)('/api/v2/me/tokens')).status).toBe(200);
  });

  it('sign-out ends the session on the server: the same cookie, replayed, is refused', async () => {
    const { body, cookie } = await signIn(g.token);
    const noCsrf = await withCookie(cookie!.value, 'POST')('/auth/sign-out');
    expect(noCsrf.status).toBe(403);
    expect((await withCookie(cookie!.value)('/api/v2/me')).status).toBe(200);
    const out = await withCookie(cookie!.value, 'POST', { 'X-Gyre-CSRF': body.csrf_token })('/auth/sign-out');
    expect(out.status).toBe(204);
    expect(setCookies(out).get('gyre_session')?.attributes).toMatch(/Expires=Thu, 01 Jan 1970|Max-Age=0/i);
    const replay = await withCookie(cookie!.value)('/api/v2/me');
    expect(replay.status).toBe(401);
    expect(((await replay.json()) as any).message).toMatch(/session has ended/);
    const audit = await g.api('GET', '/api/v2/audit?limit=100');
    const actions = audit.items.map((e: any) => `${e.action}:${e.result}`);
    expect(actions).toEqual(expect.arrayContaining(['session.sign-in:success', 'session.sign-out:success']));
  });

  it('a session ends when it expires, when it sits idle, and when its user is disabled', async () => {
    const added = await g.api('POST', '/api/v2/users', { login: `sess-${randomBytes(3).toString('hex')}` });
    const userToken = added.token;
    const expire = async (sql: string) => {
      const { cookie } = await signIn(userToken);
      expect((await withCookie(cookie!.value)('/api/v2/me')).status).toBe(200);
      await g.gyre.store.query(sql, [added.id]);
      return (await withCookie(cookie!.value)('/api/v2/me')).status;
    };
    expect(await expire(`UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1`)).toBe(401);
    expect(await expire(`UPDATE sessions SET last_seen_at = now() - interval '3 hours' WHERE user_id = $1`)).toBe(401);
    const { cookie } = await signIn(userToken);
    await g.api('PATCH', `/api/v2/users/${encodeURIComponent(added.login)}`, { disabled: true });
    expect((await withCookie(cookie!.value)('/api/v2/me')).status).toBe(401);
  });

  it('refuses a wrong token and a project token, records each failure, and throttles an address that keeps failing', async () => {
    const bad = await signIn('gyre_not-a-real-token-at-all', '203.0.113.7');
    expect(bad.res.status).toBe(401);
    expect(bad.cookie).toBeUndefined();
    const audit = await g.api('GET', '/api/v2/audit?limit=100');
    expect(audit.items.some((e: any) => e.action === 'session.sign-in' && e.result === 'failed')).toBe(true);
    // The boundary does not trust X-Forwarded-For here (no GYRE_TRUST_PROXY): every failure counts
    // against this test's own address, and the next attempt, even with the right token, waits.
    for (let i = 1; i < SIGN_IN_FAILURES; i++) expect((await signIn(`gyre_wrong-${i}-${'x'.repeat(20)}`)).res.status).toBe(401);
    const throttled = await signIn(g.token);
    expect(throttled.res.status).toBe(429);
    expect(throttled.res.headers.get('retry-after')).toMatch(/^\d+$/);
  });
});

describe('redirect sign-in (a provider that vouches for whoever the test names)', () => {
  let store: Store;
  let identity: Identity;
  let signIn: SignIn;
  let next: ExternalIdentity;
  const provider: RedirectProvider = {
    kind: 'redirect',
    name: 'oidc',
    label: 'Test SSO',
    async begin(redirectUri) {
      const state = randomBytes(16).toString('base64url');
      return { url: `https://idp.example/authorize?state=${state}&redirect_uri=${encodeURIComponent(redirectUri)}`, transaction: { state, codeVerifier: 'v'.repeat(43), nonce: 'n' } };
    },
    async finish(callbackUrl, transaction) {
      if (callbackUrl.searchParams.get('error')) throw new SignInError('The provider refused the sign-in.');
      expect(transaction.codeVerifier).toBe('v'.repeat(43));
      return next;
    },
  };
  const context = { address: '198.51.100.1' };
  const REDIRECT = 'http://gyre.example/auth/oidc/callback';
  const back = (state: string, extra = '') => new URL(`${REDIRECT}?code=abc&state=${state}${extra}`);

  beforeAll(async () => {
    store = await openStore({});
    identity = createIdentity({ store });
    await identity.ensureAdmin();
    signIn = createSignIn({
      store,
      identity,
      providers: [provider],
      roleMaps: { oidc: parseRoleMap('GYRE_OIDC_ROLES', 'ci-admins=instance:admin; devs=gh/acme:member; web-readers=gh/acme/web:read') },
      session: { ttlMinutes: 60, idleMinutes: 30 },
      log: createLogger({ level: 'silent' }),
    });
    await identity.orgs.create('acme');
  });
  afterAll(() => store?.close());

  const person = (over: Partial<ExternalIdentity> = {}): ExternalIdentity => ({ provider: 'oidc', subject: `sub-${randomBytes(4).toString('hex')}`, login: 'carol', name: 'Carol', email: 'carol@example.com', groups: [], ...over });

  it('makes a user at the first sign-in and finds the same one after, by subject (not by login)', async () => {
    next = person({ login: `dana-${randomBytes(2).toString('hex')}` });
    const first = await signIn.begin('oidc', REDIRECT);
    const one = await signIn.finish('oidc', back(first.state), first.state, REDIRECT, context);
    next = { ...next, login: 'renamed-at-the-idp' };
    const second = await signIn.begin('oidc', REDIRECT);
    const two = await signIn.finish('oidc', back(second.state), second.state, REDIRECT, context);
    expect(two.login).toBe(one.login);
    const session = await signIn.session(two.cookie);
    expect(session?.principal.login).toBe(one.login);
  });

  it('a login a Gyre user already has is not taken over: the newcomer gets a name of its own', async () => {
    const existing = await identity.users.add({ login: `erin-${randomBytes(2).toString('hex')}`, admin: true });
    next = person({ login: existing.user.login });
    const { state } = await signIn.begin('oidc', REDIRECT);
    const started = await signIn.finish('oidc', back(state), state, REDIRECT, context);
    expect(started.login).toBe(`${existing.user.login}-oidc`);
    const session = await signIn.session(started.cookie);
    expect(session?.principal.isAdmin).toBe(false);
  });

  it('refuses a callback started in another browser, a replayed callback, and an expired attempt', async () => {
    next = person();
    const mine = await signIn.begin('oidc', REDIRECT);
    const theirs = await signIn.begin('oidc', REDIRECT);
    // An attacker's callback link (their state) opened in my browser (my state cookie): refused.
    await expect(signIn.finish('oidc', back(theirs.state), mine.state, REDIRECT, context)).rejects.toThrow(/not started in this browser/);
    await expect(signIn.finish('oidc', back(mine.state), undefined, REDIRECT, context)).rejects.toThrow(/not started in this browser/);
    await signIn.finish('oidc', back(mine.state), mine.state, REDIRECT, context);
    await expect(signIn.finish('oidc', back(mine.state), mine.state, REDIRECT, context)).rejects.toThrow(/expired or was already used/);
    const late = await signIn.begin('oidc', REDIRECT);
    await store.query(`UPDATE sign_in_attempts SET expires_at = now() - interval '1 second'`);
    await expect(signIn.finish('oidc', back(late.state), late.state, REDIRECT, context)).rejects.toThrow(/expired/);
    const refused = await signIn.begin('oidc', REDIRECT);
    await expect(signIn.finish('oidc', back(refused.state, '&error=access_denied'), refused.state, REDIRECT, context)).rejects.toThrow(SignInError);
  });

  it('keeps only return addresses inside the UI', async () => {
    next = person();
    for (const [returnTo, kept] of [
      ['#/project/gh/acme/web', '#/project/gh/acme/web'],
      ['https://evil.example/', undefined],
      ['//evil.example', undefined],
      ['#/x"><script>', undefined],
    ] as const) {
      const { state } = await signIn.begin('oidc', REDIRECT, returnTo);
      const done = await signIn.finish('oidc', back(state), state, REDIRECT, context);
      expect(done.returnTo).toBe(kept);
    }
  });

  it('gives the roles the groups map to, takes them away when the groups go, and leaves roles set in Gyre alone', async () => {
    await store.query(`INSERT INTO projects (id, slug, org, name, repo_url) VALUES (gen_random_uuid(), 'gh/acme/web', 'acme', 'web', '/nowhere') ON CONFLICT DO NOTHING`);
    const subject = `sub-${randomBytes(4).toString('hex')}`;
    const go = async (groups: string[]) => {
      next = person({ subject, login: 'frank', groups });
      const { state } = await signIn.begin('oidc', REDIRECT);
      const done = await signIn.finish('oidc', back(state), state, REDIRECT, context);
      const user = await identity.users.get(done.login);
      const roles = await store.query<{ what: string }>(
        `SELECT 'org:' || o.name || ':' || m.role || ':' || m.source AS what FROM organization_members m JOIN organizations o ON o.id = m.organization_id WHERE m.user_id = $1
         UNION ALL SELECT 'project:' || p.slug || ':' || m.role || ':' || m.source FROM project_members m JOIN projects p ON p.id = m.project_id WHERE m.user_id = $1 ORDER BY 1`,
        [user.id],
      );
      return { user, roles: roles.map((r) => r.what), done };
    };
    const first = await go(['devs', 'web-readers', 'ci-admins', 'unrelated']);
    expect(first.roles).toEqual(['org:acme:member:oidc', 'project:gh/acme/web:read:oidc']);
    expect(first.user.admin).toBe(true);
    const fewer = await go(['web-readers']);
    expect(fewer.roles).toEqual(['project:gh/acme/web:read:oidc']);
    expect(fewer.user.admin).toBe(false);
    // An admin gives frank admin on gh/acme in Gyre: the provider's rules no longer touch that row.
    await store.query(
      `INSERT INTO organization_members (organization_id, user_id, role, source) SELECT id, $1, 'admin', 'gyre' FROM organizations WHERE name = 'acme'`,
      [first.user.id],
    );
    const later = await go([]);
    expect(later.roles).toEqual(['org:acme:admin:gyre']);
    const events = await store.query<{ action: string }>(`SELECT action FROM audit_events WHERE detail->>'user' = $1 ORDER BY id`, [first.user.login]);
    expect(events.map((e) => e.action)).toEqual(expect.arrayContaining(['org.member.set', 'org.member.remove', 'project.member.set', 'project.member.remove', 'user.update']));
  });

  it('with GYRE_SIGN_IN_CREATE_USERS=false a provider account nobody linked is refused', async () => {
    const closed = createSignIn({ store, identity, providers: [provider], session: { ttlMinutes: 60, idleMinutes: 30 }, createUsers: false, log: createLogger({ level: 'silent' }) });
    next = person();
    const { state } = await closed.begin('oidc', REDIRECT);
    await expect(closed.finish('oidc', back(state), state, REDIRECT, context)).rejects.toThrow(/No Gyre user is linked/);
  });
});
