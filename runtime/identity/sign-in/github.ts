import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { exchangeWebFlowCode, getWebFlowAuthorizationUrl } from '@octokit/oauth-methods';
import { request } from '@octokit/request';
import { ConfigurationError } from '../../domain/errors';
import { checkGitHubUrl, defaultGitHubApiUrl } from './github-urls';
import { SignInError, type ExternalIdentity, type RedirectProvider, type SignInTransaction } from './provider';

/**
 * Sign-in with GitHub (github.com, GitHub Enterprise Cloud with data residency, or GitHub
 * Enterprise Server) through an OAuth App: the browser goes to GitHub's authorize page and comes
 * back with a code, which Gyre exchanges (with the app's secret and the PKCE verifier) for the
 * person's token, asks `GET /user` who they are, and forgets the token. The identity is GitHub's
 * numeric user id, which stays with the account when its login is renamed.
 *
 * Register the OAuth App with the callback URL Gyre's sign-in serves; Gyre asks for `read:user`
 * and `user:email` only (who the person is and their verified address), never access to code.
 */
export interface GitHubSignInSettings {
  /** The provider's name in `user_identities` and on the sign-in page. @default 'github' */
  readonly name?: 'github';
  /** What the sign-in button says. @default 'GitHub' */
  readonly label?: string;
  /** The OAuth App's client id. */
  readonly clientId: string;
  /** The OAuth App's client secret (kept server-side; sent to GitHub only, with the code). */
  readonly clientSecret: string;
  /**
   * Where people sign in to GitHub: `https://github.com`, or a GitHub Enterprise Server
   * (`https://ghe.example.com`). `http:` only for a loopback address. @default 'https://github.com'
   */
  readonly webUrl?: string;
  /**
   * GitHub's REST API: `https://api.github.com` for github.com, `https://api.<name>.ghe.com` for
   * `https://<name>.ghe.com`, else `<webUrl>/api/v3` (GitHub Enterprise Server). @default from webUrl
   */
  readonly apiUrl?: string;
  /** How long one sign-in may wait on GitHub in all (code exchange and user look-up), in ms (1 to 120000). @default 10000 */
  readonly timeoutMs?: number;
}

/** The OAuth scopes Gyre asks for: the profile (id, login, name) and the person's email addresses. */
export const GITHUB_SIGN_IN_SCOPES: readonly string[] = ['read:user', 'user:email'];

/** The REST API version Gyre speaks (`X-GitHub-Api-Version`). */
export const GITHUB_API_VERSION = '2022-11-28';

/** GitHub logins: letters, digits and `-` (and `_` on Enterprise, e.g. managed users' `name_short`). */
export const GITHUB_LOGIN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;

const DEFAULT_WEB_URL = 'https://github.com';
const DEFAULT_TIMEOUT_MS = 10_000;
/** What a code from GitHub looks like (20 hex digits today); anything else is not sent on. */
const CODE = /^[A-Za-z0-9._-]{1,512}$/;
const ERROR_CODE = /^[a-z_]{1,64}$/;



/**
 * A GitHub OAuth sign-in provider. Settings are checked here: a bad one throws `ConfigurationError`
 * naming it by its environment variable (GYRE_GITHUB_CLIENT_ID, GYRE_GITHUB_CLIENT_SECRET,
 * GYRE_GITHUB_URL, GYRE_GITHUB_API_URL).
 */
export function createGitHubProvider(settings: GitHubSignInSettings): RedirectProvider {
  const name = settings.name ?? 'github';
  const label = settings.label?.trim() || 'GitHub';
  const clientId = settings.clientId?.trim() ?? '';
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(clientId)) throw new ConfigurationError('GYRE_GITHUB_CLIENT_ID', "must be the OAuth App's client id (letters, digits, '.', '_' and '-')");
  const clientSecret = settings.clientSecret ?? '';
  if (!clientSecret.trim()) throw new ConfigurationError('GYRE_GITHUB_CLIENT_SECRET', "must be the OAuth App's client secret");
  const webUrl = checkGitHubUrl('GYRE_GITHUB_URL', settings.webUrl ?? DEFAULT_WEB_URL);
  const apiUrl = checkGitHubUrl('GYRE_GITHUB_API_URL', settings.apiUrl ?? defaultGitHubApiUrl(webUrl));
  const timeoutMs = settings.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 120_000) throw new ConfigurationError('GitHub timeoutMs', `${timeoutMs} must be a whole number of milliseconds from 1 to 120000`);

  const headers = { 'user-agent': 'Gyre' };
  // The OAuth endpoints live on the web host; @octokit/oauth-methods takes them from this baseUrl.
  const web = request.defaults({ baseUrl: webUrl, headers });
  const api = request.defaults({ baseUrl: apiUrl, headers: { ...headers, 'x-github-api-version': GITHUB_API_VERSION } });

  return {
    kind: 'redirect',
    name,
    label,

    async begin(redirectUri) {
      const state = randomBytes(32).toString('base64url');
      const codeVerifier = randomBytes(32).toString('base64url');
      const { url } = getWebFlowAuthorizationUrl({ clientType: 'oauth-app', clientId, redirectUrl: redirectUri, scopes: [...GITHUB_SIGN_IN_SCOPES], state, request: web });
      const withPkce = new URL(url);
      withPkce.searchParams.set('scope', GITHUB_SIGN_IN_SCOPES.join(' ')); // space-delimited, as GitHub documents it
      withPkce.searchParams.set('code_challenge', createHash('sha256').update(codeVerifier).digest('base64url'));
      withPkce.searchParams.set('code_challenge_method', 'S256');
      return { url: withPkce.toString(), transaction: { state, codeVerifier } };
    },

    async finish(callbackUrl, transaction, redirectUri) {
      const query = callbackUrl.searchParams;
      if (!sameSecret(query.get('state'), transaction.state)) throw new SignInError('This GitHub sign-in is not the one this browser started; start again.');
      const error = query.get('error');
      if (error !== null) {
        if (error === 'access_denied') throw new SignInError('The GitHub sign-in was cancelled: Gyre was not given access to your GitHub profile.');
        throw new SignInError(`GitHub refused the sign-in (${ERROR_CODE.test(error) ? error : 'unknown error'}); start again.`);
      }
      const code = query.get('code');
      if (!code || !CODE.test(code)) throw new SignInError('GitHub sent no usable sign-in code; start again.');

      // One budget for everything this sign-in asks GitHub.
      const signal = AbortSignal.timeout(timeoutMs);
      const token = await exchange(code, transaction, redirectUri, signal);
      const asUser = api.defaults({ headers: { authorization: `token ${token}` }, request: { signal } });
      let user: Record<string, unknown>;
      try {
        user = (await asUser('GET /user')).data as unknown as Record<string, unknown>;
      } catch (e) {
        throw failure('GitHub did not say who signed in; try again.', e, timeoutMs);
      }
      return identityOf(name, user, () => primaryVerifiedEmail(asUser));
    },
  };

  async function exchange(code: string, transaction: SignInTransaction, redirectUri: string, signal: AbortSignal): Promise<string> {
    try {
      const { authentication } = await exchangeWebFlowCode({
        clientType: 'oauth-app',
        clientId,
        clientSecret,
        code,
        redirectUrl: redirectUri,
        // code_verifier goes into the exchange's body with the other parameters.
        request: web.defaults({ code_verifier: transaction.codeVerifier, request: { signal } }),
      });
      if (typeof authentication.token !== 'string' || !authentication.token) throw new Error('the answer had no access_token');
      return authentication.token;
    } catch (e) {
      throw failure('GitHub did not accept the sign-in code (it may have expired or been used already); start again.', e, timeoutMs);
    }
  }
}

/** The person GitHub's `/user` answer names; an answer without a numeric id and a GitHub login is refused. */
async function identityOf(provider: string, user: Record<string, unknown>, emails: () => Promise<string | undefined>): Promise<ExternalIdentity> {
  const { id, login } = user;
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0 || typeof login !== 'string' || !GITHUB_LOGIN.test(login)) {
    throw new SignInError('GitHub answered with an account Gyre cannot use (no numeric id or an unexpected login).');
  }
  const name = typeof user.name === 'string' && user.name.trim() ? user.name.trim().slice(0, 200) : undefined;
  const email = emailOrUndefined(user.email) ?? (await emails());
  return { provider, subject: String(id), login, ...(name ? { name } : {}), ...(email ? { email } : {}), groups: [] };
}

/** The person's primary address, if GitHub says it is verified; undefined when there is none or it cannot be read. */
async function primaryVerifiedEmail(asUser: typeof request): Promise<string | undefined> {
  try {
    const { data } = await asUser('GET /user/emails', { per_page: 100 });
    const primary = Array.isArray(data) ? data.find((e) => e && e.primary === true && e.verified === true) : undefined;
    return emailOrUndefined(primary?.email);
  } catch {
    return undefined; // the address is optional: a token without user:email still signs in
  }
}

function emailOrUndefined(value: unknown): string | undefined {
  return typeof value === 'string' && value.length <= 320 && /^[^\s@]+@[^\s@]+$/.test(value) ? value : undefined;
}

function sameSecret(given: string | null, kept: string): boolean {
  if (given === null || !kept) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(kept);
  return a.length === b.length && timingSafeEqual(a, b);
}


/**
 * A SignInError with a message safe to show; its `cause` says what GitHub answered (an OAuth error
 * code, an HTTP status, no answer) for the server's log, without any secret or token.
 */
function failure(message: string, error: unknown, timeoutMs: number): SignInError {
  const failed = new SignInError(message);
  (failed as { cause?: unknown }).cause = new Error(describeGitHubError(error, timeoutMs));
  return failed;
}

/** What went wrong talking to GitHub, in words safe to log: never a token or the client secret. */
export function describeGitHubError(error: unknown, timeoutMs?: number): string {
  const e = error as { name?: string; status?: number; message?: string; response?: { data?: unknown }; cause?: { name?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError' || e?.cause?.name === 'TimeoutError') return `GitHub did not answer within ${timeoutMs ?? '?'} ms`;
  const data = e?.response?.data as { error?: unknown; message?: unknown } | undefined;
  if (data && typeof data.error === 'string') return `GitHub answered ${data.error.slice(0, 64)}`;
  if (e?.response && typeof e.status === 'number') return `GitHub answered HTTP ${e.status}${data && typeof data.message === 'string' ? `: ${data.message.slice(0, 200)}` : ''}`;
  return `GitHub could not be reached: ${String(e?.message ?? error).slice(0, 200)}`;
}

export { checkGitHubUrl, defaultGitHubApiUrl };
