import { createServer, type Server, type Socket } from 'node:net';
import { ConfigurationError } from '../../runtime/domain/errors';
import { createOidcProvider, type OidcSettings } from '../../runtime/identity/sign-in/oidc';
import { SignInError, type RedirectProvider } from '../../runtime/identity/sign-in/provider';
import { startOidcProvider, signInAtProvider, type TestOidcAccount } from '../support/oidc-provider';
import { freePort } from '../support/processes';

// The redirect URI is never loaded: the provider's last redirect is read, not followed.
const REDIRECT_URI = 'http://127.0.0.1:9/auth/oidc/callback';
const CLIENT = { clientId: 'gyre', clientSecret: 'a-client-secret-for-tests', redirectUris: [REDIRECT_URI] };
const ACCOUNTS: TestOidcAccount[] = [
  { sub: 'u-1001', preferred_username: 'alice', email: 'alice@example.com', email_verified: true, name: 'Alice Liddell', groups: ['ci-admins', 'developers'] },
  // No preferred_username (login falls back to the email), and a groups claim that is not a list.
  { sub: 'u-1002', email: 'bob@example.com', groups: 'ci-admins' },
  // groups with a non-string in it; an email the provider says it has not verified.
  { sub: 'u-1003', preferred_username: 'mallory', email: 'alice@example.com', email_verified: false, groups: ['developers', { admin: true }] },
];

let issuer: string;
let stopProvider: () => Promise<void>;
const hung: Socket[] = [];
let hangingServer: Server;

beforeAll(async () => {
  ({ issuer, stop: stopProvider } = await startOidcProvider({ ...CLIENT, accounts: ACCOUNTS }));
});

afterAll(async () => {
  await stopProvider?.();
  for (const socket of hung) socket.destroy();
  await new Promise((r) => (hangingServer ? hangingServer.close(r) : r(undefined)));
});

function provider(overrides: Partial<OidcSettings> = {}, timeoutMs?: number): RedirectProvider {
  return createOidcProvider({ label: 'Test IdP', issuer, clientId: CLIENT.clientId, clientSecret: CLIENT.clientSecret, allowInsecureHttp: true, ...overrides }, { timeoutMs });
}

async function signIn(oidc: RedirectProvider, login?: string) {
  const { url, transaction } = await oidc.begin(REDIRECT_URI);
  const callback = await signInAtProvider(url, login);
  return { url, transaction, callback };
}

async function signInError(promise: Promise<unknown>): Promise<SignInError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SignInError);
  return error as SignInError;
}

describe('OpenID Connect sign-in against a real provider', () => {
  test('begin sends the browser to the provider with PKCE (S256), state and nonce; finish gives the person', async () => {
    const oidc = provider({ label: 'Okta' });
    expect(oidc).toMatchObject({ kind: 'redirect', name: 'oidc', label: 'Okta' });
    const { url, transaction, callback } = await signIn(oidc, 'alice');
    const sent = new URL(url);
    expect(sent.origin).toBe(issuer);
    expect(Object.fromEntries(sent.searchParams)).toMatchObject({
      client_id: 'gyre',
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope: 'openid profile email',
      code_challenge_method: 'S256',
      state: transaction.state,
      nonce: transaction.nonce,
    });
    expect(sent.searchParams.get('code_challenge')).not.toBe(transaction.codeVerifier);
    expect(callback.searchParams.get('code')).toBeTruthy();

    // This provider puts only `sub` in the ID token: the rest comes from userinfo.
    await expect(oidc.finish(callback, transaction, REDIRECT_URI)).resolves.toEqual({
      provider: 'oidc',
      subject: 'u-1001',
      login: 'alice',
      name: 'Alice Liddell',
      email: 'alice@example.com',
      groups: ['ci-admins', 'developers'],
    });
  });

  test('two sign-ins never share state, nonce or PKCE verifier', async () => {
    const oidc = provider();
    const a = await oidc.begin(REDIRECT_URI);
    const b = await oidc.begin(REDIRECT_URI);
    expect(a.transaction.state).not.toBe(b.transaction.state);
    expect(a.transaction.nonce).not.toBe(b.transaction.nonce);
    expect(a.transaction.codeVerifier).not.toBe(b.transaction.codeVerifier);
  });

  test('login falls back to the email local part; groups that are not a list of strings count as none; an unverified email is left out', async () => {
    const oidc = provider({ name: 'keycloak' });
    const bob = await signIn(oidc, 'u-1002');
    await expect(oidc.finish(bob.callback, bob.transaction, REDIRECT_URI)).resolves.toEqual({
      provider: 'keycloak',
      subject: 'u-1002',
      login: 'bob',
      name: undefined,
      email: 'bob@example.com',
      groups: [],
    });
    const mallory = await signIn(oidc, 'mallory');
    const identity = await oidc.finish(mallory.callback, mallory.transaction, REDIRECT_URI);
    expect(identity).toMatchObject({ subject: 'u-1003', login: 'mallory', groups: [] });
    expect(identity.email).toBeUndefined();
  });

  test('a configured login claim is used, and falls back to sub when nothing names the person', async () => {
    const oidc = provider({ loginClaim: 'nickname', scopes: ['openid', 'profile'] });
    const { callback, transaction } = await signIn(oidc, 'alice');
    // No email scope, no nickname claim: the login is the subject.
    await expect(oidc.finish(callback, transaction, REDIRECT_URI)).resolves.toMatchObject({ subject: 'u-1001', login: 'u-1001', email: undefined, groups: ['ci-admins', 'developers'] });
  });

  test('attack: a callback carrying another sign-in\u2019s state is refused', async () => {
    const oidc = provider();
    const victim = await signIn(oidc, 'alice');
    const attacker = await oidc.begin(REDIRECT_URI);
    const error = await signInError(oidc.finish(victim.callback, attacker.transaction, REDIRECT_URI));
    expect(error.message).toMatch(/state/);
    // The code was not spent on the refused attempt: the rightful sign-in still works.
    await expect(oidc.finish(victim.callback, victim.transaction, REDIRECT_URI)).resolves.toMatchObject({ subject: 'u-1001' });
  });

  test('attack: a replayed code is refused', async () => {
    const oidc = provider();
    const { callback, transaction } = await signIn(oidc, 'alice');
    await oidc.finish(callback, transaction, REDIRECT_URI);
    const error = await signInError(oidc.finish(callback, transaction, REDIRECT_URI));
    expect(error.message).toBe('Test IdP did not accept the sign-in (invalid_grant); start again.');
  });

  test('attack: an ID token for another nonce (a transaction with a tampered nonce) is refused, and no token leaks', async () => {
    const oidc = provider();
    const { callback, transaction } = await signIn(oidc, 'alice');
    const error = await signInError(oidc.finish(callback, { ...transaction, nonce: 'attacker-chosen-nonce' }, REDIRECT_URI));
    expect(error.message).toBe("Test IdP's answer did not check out (OAUTH_JWT_CLAIM_COMPARISON_FAILED); start again.");
    expect(error.message).not.toMatch(/eyJ|attacker-chosen|u-1001|alice/);
  });

  test('attack: a wrong PKCE verifier (a stolen code used from another sign-in) is refused', async () => {
    const oidc = provider();
    const victim = await signIn(oidc, 'alice');
    const attacker = await oidc.begin(REDIRECT_URI);
    const error = await signInError(oidc.finish(victim.callback, { ...victim.transaction, codeVerifier: attacker.transaction.codeVerifier }, REDIRECT_URI));
    expect(error.message).toMatch(/invalid_grant/);
  });

  test('the person declining at the provider (error=access_denied) is a SignInError naming the refusal', async () => {
    const oidc = provider();
    const { callback, transaction } = await signIn(oidc, 'nobody-known');
    expect(callback.searchParams.get('error')).toBe('access_denied');
    const error = await signInError(oidc.finish(callback, transaction, REDIRECT_URI));
    expect(error.message).toBe('Test IdP refused the sign-in (access_denied).');
  });

  test('attack: a forged error callback cannot put its own text into the message', async () => {
    const oidc = provider();
    const { transaction } = await oidc.begin(REDIRECT_URI);
    const forged = new URL(REDIRECT_URI);
    forged.search = new URLSearchParams({ state: transaction.state, iss: issuer, error: 'Your account is locked, call +1 555 0100', error_description: 'call us' }).toString();
    const error = await signInError(oidc.finish(forged, transaction, REDIRECT_URI));
    expect(error.message).toBe('Test IdP refused the sign-in (error).');
  });

  test('a wrong client secret is refused by the provider', async () => {
    const oidc = provider({ clientSecret: 'not-the-secret' });
    const { callback, transaction } = await signIn(oidc, 'alice');
    const error = await signInError(oidc.finish(callback, transaction, REDIRECT_URI));
    expect(error.message).toMatch(/^Test IdP did not accept the sign-in \(invalid_client\)/);
    expect(error.message).not.toMatch(/not-the-secret/);
  });

  test('an issuer that accepts connections but never answers is an error after the timeout, not a hang', async () => {
    hangingServer = createServer((socket) => void hung.push(socket));
    await new Promise<void>((r) => hangingServer.listen(0, '127.0.0.1', r));
    const port = (hangingServer.address() as { port: number }).port;
    const oidc = provider({ issuer: `http://127.0.0.1:${port}` }, 300);
    const started = Date.now();
    const error = await signInError(oidc.begin(REDIRECT_URI));
    expect(error.message).toBe('Test IdP did not answer; try again later.');
    expect(Date.now() - started).toBeLessThan(10_000); // not a hang; room for a loaded machine
    expect(hung.length).toBeGreaterThan(0);
  });

  test('a provider that is down at the first sign-in is discovered on a later one; claims can come from the ID token alone', async () => {
    const port = await freePort();
    const oidc = provider({ issuer: `http://127.0.0.1:${port}` });
    expect((await signInError(oidc.begin(REDIRECT_URI))).message).toBe('Test IdP did not answer; try again later.');

    // Now it is up, with no userinfo endpoint: every claim is in the ID token.
    const later = await startOidcProvider({ ...CLIENT, port, accounts: ACCOUNTS, userinfo: false });
    try {
      const { callback, transaction } = await signIn(oidc, 'alice');
      await expect(oidc.finish(callback, transaction, REDIRECT_URI)).resolves.toEqual({
        provider: 'oidc',
        subject: 'u-1001',
        login: 'alice',
        name: 'Alice Liddell',
        email: 'alice@example.com',
        groups: ['ci-admins', 'developers'],
      });
    } finally {
      await later.stop();
    }
  });

  test('settings that cannot work are refused up front, naming the setting', () => {
    const base = { label: 'X', clientId: 'gyre', clientSecret: 's' };
    expect(() => createOidcProvider({ ...base, issuer: 'http://idp.example.com' })).toThrow(new ConfigurationError('oidc.issuer', "'http://idp.example.com' must be an https:// URL (http:// only with allowInsecureHttp, for a test issuer)"));
    expect(() => createOidcProvider({ ...base, issuer: 'idp.example.com' })).toThrow(/oidc\.issuer: 'idp\.example\.com' is not a URL/);
    expect(() => createOidcProvider({ ...base, issuer: 'https://idp.example.com', scopes: ['profile'] })).toThrow(/oidc\.scopes: 'profile' must include openid/);
    expect(() => createOidcProvider({ ...base, issuer: 'https://idp.example.com', clientId: '' })).toThrow(/oidc\.clientId: is required/);
  });
});
