import { createServer } from 'node:net';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { signInAtProvider, startOidcProvider } from '../support/oidc-provider';

/**
 * Single sign-on as a user goes through it, against a real OpenID Connect provider (oidc-provider
 * in its own process): the sign-in page's button, the provider, back to Gyre signed in with the
 * roles the groups claim gives; and the attack where someone hands a victim a callback link of
 * their own sign-in (login CSRF), which must not sign the victim in as the attacker.
 */

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });

const cookiesOf = (res: Response) => new Map(res.headers.getSetCookie().map((line) => {
  const pair = line.split(';')[0];
  return [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)] as const;
}));

describe('OpenID Connect sign-in through Gyre', () => {
  let g: TestGyre;
  let idp: { issuer: string; stop(): Promise<void> };

  beforeAll(async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    idp = await startOidcProvider({
      clientId: 'gyre',
      clientSecret: 'a-client-secret-for-tests',
      redirectUris: [`${base}/auth/oidc/callback`],
      accounts: [
        { sub: 'u-alice', preferred_username: 'alice', email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['ci-admins', 'developers'] },
        { sub: 'u-mallory', preferred_username: 'mallory', email: 'mallory@example.com', email_verified: true, name: 'Mallory', groups: [] },
      ],
    });
    g = await startTestGyre({
      env: {
        GYRE_PORT: String(port),
        GYRE_PUBLIC_URL: base,
        GYRE_OIDC_ISSUER: idp.issuer,
        GYRE_OIDC_CLIENT_ID: 'gyre',
        GYRE_OIDC_CLIENT_SECRET: 'a-client-secret-for-tests',
        GYRE_OIDC_LABEL: 'Test SSO',
        GYRE_OIDC_ALLOW_INSECURE_HTTP: 'true',
        GYRE_OIDC_ROLES: 'developers=gh/acme:member',
      },
    });
    await g.api('POST', '/api/v2/organizations', { name: 'acme' }).catch(async () => g.addProject('gh/acme/web', { 'README.md': 'x' }));
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await idp?.stop();
  });

  /** Starts a sign-in as a browser would: the redirect to the provider and the state cookie. */
  const start = async (returnTo?: string) => {
    const res = await fetch(`${g.url}/auth/oidc/start${returnTo ? `?return_to=${encodeURIComponent(returnTo)}` : ''}`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    const state = cookiesOf(res).get('gyre_sign_in');
    expect(state).toBeTruthy();
    return { location: res.headers.get('location')!, state: state! };
  };
  const callback = (url: URL, state?: string) => fetch(url, { redirect: 'manual', headers: state ? { Cookie: `gyre_sign_in=${state}` } : {} });

  it('the sign-in page offers the provider, and a round trip signs Alice in with the role her group gives', async () => {
    const providers = (await (await fetch(`${g.url}/auth/providers`)).json()) as any;
    expect(providers.providers).toEqual([{ name: 'oidc', label: 'Test SSO', kind: 'redirect', start_url: '/auth/oidc/start' }]);

    const { location, state } = await start('#/org/gh/acme');
    expect(new URL(location).origin).toBe(new URL(idp.issuer).origin);
    const back = await signInAtProvider(location, 'alice');
    const res = await callback(back, state);
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('/#/org/gh/acme');
    const session = cookiesOf(res).get('gyre_session');
    expect(session).toBeTruthy();
    const me = (await (await fetch(`${g.url}/api/v2/me`, { headers: { Cookie: `gyre_session=${session}` } })).json()) as any;
    expect(me.login).toBe('alice');
    const members = await g.api('GET', '/api/v2/organization/gh/acme/members');
    expect(members.items.find((m: any) => m.login === 'alice')).toMatchObject({ role: 'member' });
    const audit = await g.api('GET', '/api/v2/audit?limit=50');
    expect(audit.items.find((e: any) => e.action === 'session.sign-in' && e.result === 'success' && e.actor?.login === 'alice')).toBeDefined();
  });

  it("a callback link of Mallory's sign-in, opened in Alice's browser, signs nobody in", async () => {
    const mallory = await start();
    const malloryBack = await signInAtProvider(mallory.location, 'mallory');
    const alice = await start();
    const res = await callback(malloryBack, alice.state);
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toMatch(/^\/login#error=.*not%20started%20in%20this%20browser/);
    expect(cookiesOf(res).get('gyre_session')).toBeUndefined();
    // Without any state cookie (a link opened in a fresh browser), the same.
    const bare = await callback(malloryBack);
    expect(bare.headers.get('location')).toMatch(/^\/login#error=/);
    expect(cookiesOf(bare).get('gyre_session')).toBeUndefined();
  });

  it('a person who declines at the provider lands on the sign-in page with the reason, and the attempt is in the audit log', async () => {
    const { location, state } = await start();
    const back = await signInAtProvider(location);
    expect(back.searchParams.get('error')).toBe('access_denied');
    const res = await callback(back, state);
    expect(res.headers.get('location')).toMatch(/^\/login#error=/);
    const audit = await g.api('GET', '/api/v2/audit?limit=50');
    expect(audit.items.find((e: any) => e.action === 'session.sign-in' && e.result === 'failed' && e.detail?.provider === 'oidc')).toBeDefined();
  });

  it('an unknown provider name is a 404 naming the ones configured', async () => {
    const res = await fetch(`${g.url}/auth/github/start`, { redirect: 'manual' });
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).message).toMatch(/configured: oidc/);
  });
});
