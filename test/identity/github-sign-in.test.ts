import { ConfigurationError } from '../../runtime/domain/errors';
import { createGitHubProvider, defaultGitHubApiUrl, type GitHubSignInSettings } from '../../runtime/identity/sign-in/github';
import { SignInError, type RedirectProvider, type SignInTransaction } from '../../runtime/identity/sign-in/provider';
import { describedOperation, githubResponseCheck, startGitHubStandIn, STANDIN_OPERATIONS, type GitHubStandIn } from '../support/github-standin';

/**
 * Signing in with GitHub as a person does it: Gyre sends the browser to GitHub's authorize page,
 * GitHub sends it back with a code, and Gyre learns who it is, against a stand-in of GitHub
 * Enterprise Server whose answers are held to GitHub's published OpenAPI description. Every way a
 * sign-in can be refused or tampered with ends in a SignInError whose message is safe to show.
 */

const REDIRECT = 'http://127.0.0.1:9/sign-in/github/callback';
const OCTOCAT = { id: 583231, login: 'octocat', name: 'The Octocat', email: 'octocat@github.com' };
const PRIVATE = {
  id: 9_000_001,
  login: 'quiet-one',
  name: null,
  email: null,
  emails: [
    { email: 'old@example.com', primary: false, verified: true, visibility: null },
    { email: 'quiet@example.com', primary: true, verified: true, visibility: 'private' as const },
  ],
};
const UNVERIFIED = {
  id: 9_000_002,
  login: 'claims-a-lot',
  name: 'Claims',
  email: null,
  emails: [
    { email: 'ceo@victim.example', primary: true, verified: false, visibility: 'private' as const },
    { email: 'me@example.com', primary: false, verified: true, visibility: null },
  ],
};

describe('GitHub sign-in', () => {
  let gh: GitHubStandIn;
  let github: RedirectProvider;
  const provider = (extra: Partial<GitHubSignInSettings> = {}) => createGitHubProvider({ clientId: gh.clientId, clientSecret: gh.clientSecret, webUrl: gh.url, timeoutMs: 2000, ...extra });

  /** What the browser does: follows Gyre's URL to GitHub and comes back to the redirect URI. */
  const visit = async (url: string): Promise<URL> => {
    const res = await fetch(url, { redirect: 'manual' });
    expect(res.status).toBe(302);
    return new URL(res.headers.get('location')!);
  };
  const signIn = async (p = github) => {
    const { url, transaction } = await p.begin(REDIRECT);
    const callback = await visit(url);
    return { callback, transaction, identity: () => p.finish(callback, transaction, REDIRECT) };
  };
  const refusal = async (promise: Promise<unknown>): Promise<SignInError> => {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SignInError);
    return error as SignInError;
  };

  beforeAll(async () => {
    gh = await startGitHubStandIn({ accounts: [OCTOCAT, PRIVATE, UNVERIFIED] });
    github = provider();
  });
  afterAll(() => gh?.stop());
  beforeEach(() => {
    gh.signInAs('octocat');
    gh.fail(undefined);
  });

  it('sends the browser to GitHub Enterprise with the client, the scopes, a fresh state and a PKCE S256 challenge', async () => {
    expect(github).toMatchObject({ kind: 'redirect', name: 'github', label: 'GitHub' });
    const a = await github.begin(REDIRECT);
    const b = await github.begin(REDIRECT);
    const url = new URL(a.url);
    expect(`${url.origin}${url.pathname}`).toBe(`${gh.url}/login/oauth/authorize`);
    expect(url.searchParams.get('client_id')).toBe(gh.clientId);
    expect(url.searchParams.get('redirect_uri')).toBe(REDIRECT);
    expect(url.searchParams.get('scope')).toBe('read:user user:email');
    expect(url.searchParams.get('state')).toBe(a.transaction.state);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.get('code_challenge')).not.toBe(a.transaction.codeVerifier);
    expect(a.url).not.toContain(gh.clientSecret);
    expect(a.transaction.state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a.transaction.codeVerifier).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(b.transaction.state).not.toBe(a.transaction.state);
    expect(b.transaction.codeVerifier).not.toBe(a.transaction.codeVerifier);
  });

  it('a round trip gives the GitHub account: numeric id as subject, login, name and public email; the token goes nowhere', async () => {
    const { transaction, identity } = await signIn();
    const person = await identity();
    expect(person).toEqual({ provider: 'github', subject: '583231', login: 'octocat', name: 'The Octocat', email: 'octocat@github.com', groups: [] });
    // The exchange carried the PKCE verifier and the redirect URI; the user's token is not in the answer.
    expect(gh.exchanges.at(-1)).toMatchObject({ result: 'ok', codeVerifier: transaction.codeVerifier, redirectUri: REDIRECT });
    expect(JSON.stringify(person)).not.toContain(gh.issuedTokens.at(-1)!);
    // The profile was read with the person's token, through the GHE API path.
    expect(gh.requests.filter((r) => r.path === '/api/v3/user').at(-1)?.token).toBe(gh.issuedTokens.at(-1));
  });

  it('without a public email it takes the primary verified address, and never an unverified one', async () => {
    gh.signInAs('quiet-one');
    expect(await (await signIn()).identity()).toEqual({ provider: 'github', subject: '9000001', login: 'quiet-one', email: 'quiet@example.com', groups: [] });
    gh.signInAs('claims-a-lot');
    const person = await (await signIn()).identity();
    expect(person).toMatchObject({ subject: '9000002', login: 'claims-a-lot', name: 'Claims' });
    expect(person.email).toBeUndefined();
  });

  it("refuses a callback carrying another sign-in's state, and does not spend the code", async () => {
    const mine = await signIn();
    const theirs = await signIn();
    // An attacker's callback (their code, their state) delivered to my browser's transaction.
    const error = await refusal(github.finish(theirs.callback, mine.transaction, REDIRECT));
    expect(error.message).toMatch(/not the one this browser started/);
    const noState = new URL(theirs.callback);
    noState.searchParams.delete('state');
    await refusal(github.finish(noState, theirs.transaction, REDIRECT));
    expect(gh.exchanges.some((x) => x.code === theirs.callback.searchParams.get('code'))).toBe(false);
    // The rightful owner can still finish.
    expect((await theirs.identity()).login).toBe('octocat');
  });

  it('a person who cancels at GitHub (error=access_denied) gets a SignInError saying so', async () => {
    gh.denyNext();
    const { callback, identity } = await signIn();
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect((await refusal(identity())).message).toMatch(/cancelled/);
    // Another error code is named only when it looks like one; hostile text is not echoed.
    const { transaction } = await github.begin(REDIRECT);
    const hostile = new URL(`${REDIRECT}?state=${transaction.state}&error=${encodeURIComponent('<script>alert(1)</script>')}`);
    const message = (await refusal(github.finish(hostile, transaction, REDIRECT))).message;
    expect(message).not.toContain('<script>');
    const odd = new URL(`${REDIRECT}?state=${transaction.state}&code=${encodeURIComponent('../../user?x=1')}`);
    await refusal(github.finish(odd, transaction, REDIRECT));
  });

  it('a wrong client secret is refused without the secret in the message', async () => {
    const wrong = provider({ clientSecret: 'not-the-secret-0123456789' });
    const { identity } = await signIn(wrong);
    const error = await refusal(identity());
    expect(gh.exchanges.at(-1)?.result).toBe('incorrect_client_credentials');
    expect(error.message).not.toContain('not-the-secret');
    expect(String((error as { cause?: Error }).cause?.message)).toMatch(/incorrect_client_credentials/);
    expect(String((error as { cause?: Error }).cause?.message)).not.toContain('not-the-secret');
  });

  it('a code works once: replaying it is refused', async () => {
    const { identity } = await signIn();
    expect((await identity()).login).toBe('octocat');
    await refusal(identity());
    expect(gh.exchanges.at(-1)?.result).toBe('bad_verification_code');
  });

  it('a stolen code is useless without the PKCE verifier of the browser that started the sign-in', async () => {
    const { callback, transaction } = await signIn();
    const forged: SignInTransaction = { state: transaction.state, codeVerifier: 'x'.repeat(43) };
    await refusal(github.finish(callback, forged, REDIRECT));
    expect(gh.exchanges.at(-1)).toMatchObject({ result: 'bad_verification_code', codeVerifier: 'x'.repeat(43) });
    // The code is spent by the failed attempt: the right verifier no longer helps the thief either.
    await refusal(github.finish(callback, transaction, REDIRECT));
  });

  it('a callback to another redirect URI than the one sent to GitHub is refused', async () => {
    const { callback, transaction } = await signIn();
    await refusal(github.finish(callback, transaction, 'http://127.0.0.1:9/elsewhere'));
    expect(gh.exchanges.at(-1)?.result).toBe('redirect_uri_mismatch');
  });

  it('a profile without a numeric id or with a strange login is refused', async () => {
    gh.override('users/get-authenticated', { id: '583231 OR 1=1', login: 'octocat' });
    await refusal((await signIn()).identity());
    gh.override('users/get-authenticated', { id: 7, login: '../admin' });
    await refusal((await signIn()).identity());
    gh.override('users/get-authenticated', undefined);
  });

  it('GitHub not answering, or answering 500, is a SignInError within the timeout, not a hang', async () => {
    const quick = provider({ timeoutMs: 300 });
    const { identity } = await signIn(quick);
    gh.fail('hang', 'all');
    const started = Date.now();
    const error = await refusal(identity());
    // Not a hang (the message says the 300 ms budget ended it); the bound leaves room for load.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(String((error as { cause?: Error }).cause?.message)).toMatch(/did not answer within 300 ms/);
    gh.fail(undefined);
    const again = await signIn(quick);
    gh.fail({ status: 500 });
    await refusal(again.identity());
  });

  it('knows where github.com, GHE.com and GitHub Enterprise Server keep their OAuth pages and API', async () => {
    const dotcom = createGitHubProvider({ clientId: 'Ov23liABC', clientSecret: 's3cret' });
    expect((await dotcom.begin(REDIRECT)).url).toMatch(/^https:\/\/github\.com\/login\/oauth\/authorize\?/);
    const ghes = createGitHubProvider({ clientId: 'Ov23liABC', clientSecret: 's3cret', webUrl: 'https://ghe.example.com/' });
    expect((await ghes.begin(REDIRECT)).url).toMatch(/^https:\/\/ghe\.example\.com\/login\/oauth\/authorize\?/);
    expect(defaultGitHubApiUrl('https://github.com')).toBe('https://api.github.com');
    expect(defaultGitHubApiUrl('https://octo-corp.ghe.com')).toBe('https://api.octo-corp.ghe.com');
    expect(defaultGitHubApiUrl('https://ghe.example.com')).toBe('https://ghe.example.com/api/v3');
    // apiUrl left out: <webUrl>/api/v3, as the stand-in (a GHES) serves it.
    const { identity } = await signIn(createGitHubProvider({ clientId: gh.clientId, clientSecret: gh.clientSecret, webUrl: gh.url, label: 'GitHub Enterprise' }));
    expect((await identity()).subject).toBe('583231');
    expect(gh.requests.at(-1)?.path).toMatch(/^\/api\/v3\/user/);
  });

  it('bad settings stop start-up with a message naming the setting', () => {
    const bad = (s: Partial<GitHubSignInSettings>) => () => createGitHubProvider({ clientId: 'Ov23liABC', clientSecret: 's3cret', ...s });
    expect(bad({ webUrl: 'http://ghe.example.com' })).toThrow(ConfigurationError);
    expect(bad({ webUrl: 'http://ghe.example.com' })).toThrow(/GYRE_GITHUB_URL: http:\/\/ is allowed only for a loopback address/);
    expect(bad({ apiUrl: 'https://user:pw@ghe.example.com/api/v3' })).toThrow(/GYRE_GITHUB_API_URL: must not carry a user name or password/);
    expect(bad({ webUrl: 'file:///etc/passwd' })).toThrow(/GYRE_GITHUB_URL: 'file:' is not allowed/);
    expect(bad({ clientId: '' })).toThrow(/GYRE_GITHUB_CLIENT_ID/);
    expect(bad({ clientSecret: ' ' })).toThrow(/GYRE_GITHUB_CLIENT_SECRET/);
    expect(bad({ timeoutMs: 0 })).toThrow(/GitHub timeoutMs: 0 must be a whole number of milliseconds from 1 to 120000/);
  });

  describe("the stand-in speaks GitHub's REST API as GitHub describes it", () => {
    it('serves the paths the description has for its operations', () => {
      for (const [operationId, path] of Object.entries(STANDIN_OPERATIONS)) {
        expect({ operationId, at: describedOperation(operationId) }).toEqual({ operationId, at: { path, method: 'get' } });
      }
    });

    it('every answer it sent validates against the operation schema for its status', async () => {
      // Answers of every kind: each account's profile and addresses, each role, a custom role,
      // no role, an unknown repository or user, a bad token.
      const ask = (path: string, token: string) => fetch(`${gh.apiUrl}${path}`, { headers: { authorization: `token ${token}` } });
      for (const who of ['octocat', 'quiet-one', 'claims-a-lot']) {
        gh.signInAs(who);
        await (await signIn()).identity();
      }
      gh.addRepository('acme/web');
      const roles = ['admin', 'maintain', 'write', 'triage', 'read', { custom: 'security-manager', base: 'write' as const }] as const;
      for (const role of roles) {
        gh.grant('acme/web', 'octocat', role);
        expect((await ask('/repos/acme/web/collaborators/octocat/permission', gh.serverToken)).status).toBe(200);
      }
      gh.revoke('acme/web', 'octocat');
      await ask('/repos/acme/web/collaborators/octocat/permission', gh.serverToken);
      expect((await ask('/repos/acme/nothing/collaborators/octocat/permission', gh.serverToken)).status).toBe(404);
      expect((await ask('/repos/acme/web/collaborators/nobody/permission', gh.serverToken)).status).toBe(404);
      expect((await ask('/user', 'gho_forged')).status).toBe(401);

      const checked = new Set<string>();
      for (const answer of gh.sent) {
        const check = githubResponseCheck(answer.operation, answer.status);
        if (!check) continue; // a status the description lists no body for
        expect({ operation: answer.operation, status: answer.status, errors: check(answer.body) }).toEqual({ operation: answer.operation, status: answer.status, errors: [] });
        checked.add(`${answer.operation} ${answer.status}`);
      }
      expect([...checked].sort()).toEqual(
        expect.arrayContaining([
          'repos/get-collaborator-permission-level 200',
          'repos/get-collaborator-permission-level 404',
          'users/get-authenticated 200',
          'users/get-authenticated 401',
          'users/list-emails-for-authenticated-user 200',
        ]),
      );
    });

    it('the check is not a rubber stamp: a wrong field type or an unknown field fails it', () => {
      const check = githubResponseCheck('repos/get-collaborator-permission-level')!;
      expect(check({ permission: 'admin', role_name: 'admin', user: null })).toEqual([]);
      expect(check({ permission: 1, role_name: 'admin', user: null }).join()).toMatch(/permission must be string/);
      expect(check({ permission: 'admin', role_name: 'admin', user: null, rolename: 'x' }).join()).toMatch(/additional properties \(rolename\)/);
      const emails = githubResponseCheck('users/list-emails-for-authenticated-user')!;
      expect(emails([{ email: 'not an address', primary: true, verified: true, visibility: null }]).join()).toMatch(/must match format "email"/);
    });
  });
});
