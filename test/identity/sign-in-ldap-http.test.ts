import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { BASE_DN, PEOPLE, slapdMissing, startSlapd } from '../support/slapd';

/**
 * Directory sign-in as a user goes through it, against a real OpenLDAP: the sign-in page's form,
 * a session with the roles the user's groups give, a wrong password and a filter injected in the
 * user name refused and recorded, and a user name that keeps failing made to wait.
 */

const missing = slapdMissing();
if (missing) console.warn(`skipping LDAP sign-in over HTTP: ${missing}`);
const describeLdap = missing ? describe.skip : describe;

describeLdap('LDAP sign-in through Gyre', () => {
  let g: TestGyre;
  let directory: Awaited<ReturnType<typeof startSlapd>>;

  beforeAll(async () => {
    directory = await startSlapd();
    g = await startTestGyre({
      env: {
        GYRE_LDAP_URL: directory.url,
        GYRE_LDAP_BIND_DN: directory.bindDn,
        GYRE_LDAP_BIND_PASSWORD: directory.bindPassword,
        GYRE_LDAP_USER_BASE: `ou=people,${BASE_DN}`,
        GYRE_LDAP_GROUP_BASE: `ou=groups,${BASE_DN}`,
        GYRE_LDAP_LABEL: 'Corporate directory',
        GYRE_LDAP_ROLES: 'developers=gh/acme/web:write; release-managers=gh/acme:admin',
      },
    });
    await g.addProject('gh/acme/web', { 'README.md': 'x' });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await directory?.stop();
  });

  const signIn = (username: string, password: string) =>
    fetch(`${g.url}/auth/ldap`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }) });
  const sessionOf = (res: Response) => res.headers.getSetCookie().find((c) => c.startsWith('gyre_session='))?.split(';')[0];

  it('the sign-in page offers the directory, and Bob signs in with the roles his groups give', async () => {
    const providers = (await (await fetch(`${g.url}/auth/providers`)).json()) as any;
    expect(providers.providers).toEqual([{ name: 'ldap', label: 'Corporate directory', kind: 'password' }]);
    const res = await signIn('bob', PEOPLE.bob.password);
    expect(res.status).toBe(200);
    const cookie = sessionOf(res);
    expect(cookie).toBeDefined();
    const me = (await (await fetch(`${g.url}/api/v2/me`, { headers: { Cookie: cookie! } })).json()) as any;
    expect(me.login).toBe('bob');
    expect(me.name).toBe(PEOPLE.bob.name);
    const org = await g.api('GET', '/api/v2/organization/gh/acme/members');
    expect(org.items.find((m: any) => m.login === 'bob')).toMatchObject({ role: 'admin' });
    const project = await g.api('GET', '/api/v2/project/gh/acme/web/members');
    expect(project.items.find((m: any) => m.login === 'bob')).toMatchObject({ role: 'write' });
  });

  const browserPath = process.env.GYRE_TEST_CHROMIUM || '/usr/bin/chromium';
  (existsSync(browserPath) ? it : it.skip)("in a browser, the sign-in page's directory form signs Alice in and lands on the page she asked for", async () => {
    const browser = await chromium.launch({ executablePath: browserPath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'] });
    try {
      const page = await browser.newPage();
      await page.goto(`${g.url}/#/project/gh/acme/web`);
      await page.locator('form.signin-password').waitFor({ timeout: 20_000 });
      expect(await page.locator('form.signin-password button[type=submit]').textContent()).toBe('Sign in with Corporate directory');
      await page.fill('form.signin-password input[name=username]', 'alice');
      await page.fill('form.signin-password input[name=password]', 'not it');
      await page.click('form.signin-password button[type=submit]');
      await page.locator('.form-error', { hasText: 'not right' }).waitFor({ timeout: 20_000 });
      await page.fill('form.signin-password input[name=password]', PEOPLE.alice.password);
      await page.click('form.signin-password button[type=submit]');
      await page.locator('.who .login', { hasText: 'alice' }).waitFor({ timeout: 20_000 });
      expect(page.url()).toBe(`${g.url}/#/project/gh/acme/web`);
    } finally {
      await browser.close();
    }
  }, 60_000);

  it('a wrong password, an unknown user and filter injection in the user name sign nobody in, and are recorded', async () => {
    for (const [username, password] of [
      ['alice', 'not her password'],
      ['nobody-here', 'whatever'],
      ['*', PEOPLE.alice.password],
      ['al*', PEOPLE.alice.password],
      ['alice)(uid=*', PEOPLE.alice.password],
      ['*)(|(uid=*', 'x'],
    ]) {
      const res = await signIn(username, password);
      expect({ username, status: res.status }).toEqual({ username, status: 401 });
      expect(((await res.json()) as any).message).toBe('The user name or password is not right.');
      expect(sessionOf(res)).toBeUndefined();
    }
    const audit = await g.api('GET', '/api/v2/audit?limit=100');
    const failed = audit.items.filter((e: any) => e.action === 'session.sign-in' && e.result === 'failed').map((e: any) => e.actor.login);
    expect(failed).toEqual(expect.arrayContaining(['alice', 'nobody-here', 'alice)(uid=*']));
  });

  it('an empty password is refused before the directory is asked (an LDAP server takes it as an anonymous bind)', async () => {
    const res = await signIn('alice', '');
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).message).toMatch(/password/);
  });

  it('sign-ins that keep failing from one address wait out the window, even with the right password after', async () => {
    for (let i = 0; i < 9; i++) await signIn('carol', `wrong-${i}`);
    const res = await signIn('carol', PEOPLE.carol.password);
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
  });
});
