import * as client from 'openid-client';
import { ConfigurationError } from '../../domain/errors';
import { type ExternalIdentity, type RedirectProvider, SignInError } from './provider';

/** How Gyre signs people in with an OpenID Connect provider (Okta, Keycloak, Entra ID, Dex, …). */
export interface OidcSettings {
  /** The provider's name in Gyre (`user_identities.provider`); default `oidc`. */
  readonly name?: string;
  /** What the sign-in page's button says (`Okta`). */
  readonly label: string;
  /** The provider's issuer URL; Gyre reads `<issuer>/.well-known/openid-configuration`. https:// only, unless `allowInsecureHttp`. */
  readonly issuer: string;
  /** The client Gyre is registered as at the provider, with its redirect URI `<GYRE_PUBLIC_URL>/…/callback`. */
  readonly clientId: string;
  /** Sent with HTTP Basic authentication (`client_secret_basic`, the OpenID Connect default). */
  readonly clientSecret: string;
  /** Scopes asked for; default `openid profile email`. Must include `openid`. */
  readonly scopes?: readonly string[];
  /** The claim listing the person's groups; default `groups`. Anything but an array of strings counts as no groups. */
  readonly groupsClaim?: string;
  /** The claim giving the login; default `preferred_username`, then the email's local part, then `sub`. */
  readonly loginClaim?: string;
  /** Allow an http:// issuer: only for tests and loopback issuers (openid-client's `allowInsecureRequests`). */
  readonly allowInsecureHttp?: boolean;
}

/** Knobs for tests. */
export interface OidcProviderOptions {
  /** How long one request to the provider may take, in milliseconds; default 10 000. */
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_SCOPES = ['openid', 'profile', 'email'];

/**
 * A redirect sign-in provider for an OpenID Connect issuer: authorization code flow with PKCE
 * (S256), `state` and `nonce`, client authentication with the client secret (HTTP Basic).
 *
 * The issuer's discovery document is read on the first sign-in and kept; a failed read is tried
 * again on the next sign-in, so a provider that is down when Gyre starts does not break sign-in for
 * good. Every request to the provider gives up after `timeoutMs` (10 s).
 *
 * The person's claims come from the verified ID token; when it lacks the groups claim and the
 * provider has a userinfo endpoint, from userinfo too (checked to be about the same `sub`), with
 * the ID token's claims winning. An email the provider marks `email_verified: false` is left out.
 * Every failure is a `SignInError` whose message names no token or claim, only what went wrong.
 *
 * Throws `ConfigurationError` for settings that cannot work (a non-URL or http:// issuer, no
 * client id, scopes without `openid`).
 */
export function createOidcProvider(settings: OidcSettings, options: OidcProviderOptions = {}): RedirectProvider {
  const name = settings.name ?? 'oidc';
  const { label, clientId, clientSecret } = settings;
  const scopes = settings.scopes ?? DEFAULT_SCOPES;
  const groupsClaim = settings.groupsClaim ?? 'groups';
  const loginClaim = settings.loginClaim ?? 'preferred_username';
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const issuer = checkIssuer(name, settings.issuer, settings.allowInsecureHttp === true);
  if (!clientId) throw new ConfigurationError(`${name}.clientId`, 'is required (the client id Gyre is registered as at the provider)');
  if (!scopes.includes('openid')) throw new ConfigurationError(`${name}.scopes`, `'${scopes.join(' ')}' must include openid`);
  if (!(timeoutMs > 0)) throw new ConfigurationError(`${name}.timeoutMs`, `${timeoutMs} must be a positive number of milliseconds`);

  let discovered: Promise<client.Configuration> | undefined;
  /** The provider's configuration, discovered once; a failure is forgotten so the next sign-in tries again. */
  function configuration(): Promise<client.Configuration> {
    if (!discovered) {
      const attempt = client.discovery(issuer, clientId, undefined, client.ClientSecretBasic(clientSecret), {
        timeout: timeoutMs / 1000,
        execute: settings.allowInsecureHttp ? [client.allowInsecureRequests] : [],
      });
      discovered = attempt;
      attempt.catch(() => {
        if (discovered === attempt) discovered = undefined;
      });
    }
    return discovered;
  }

  async function reach(): Promise<client.Configuration> {
    try {
      return await configuration();
    } catch (error) {
      throw new SignInError(isTimeoutOrNetwork(error) ? `${label} did not answer; try again later.` : `${label} could not be used to sign in (its OpenID configuration is unusable).`);
    }
  }

  return {
    kind: 'redirect',
    name,
    label,

    async begin(redirectUri) {
      const config = await reach();
      const codeVerifier = client.randomPKCECodeVerifier();
      const state = client.randomState();
      const nonce = client.randomNonce();
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope: scopes.join(' '),
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      });
      return { url: url.href, transaction: { state, codeVerifier, nonce } };
    },

    async finish(callbackUrl, transaction, redirectUri) {
      if (callbackUrl.searchParams.get('state') !== transaction.state) {
        throw new SignInError('This sign-in does not match the one you started (its state differs); start again.');
      }
      if (!transaction.nonce) throw new SignInError('This sign-in was not started for OpenID Connect; start again.');
      const config = await reach();
      // The code is exchanged for the redirect URI the sign-in began with, whatever host or proxy
      // the browser came back through.
      const current = new URL(redirectUri);
      current.search = callbackUrl.search;
      try {
        const tokens = await client.authorizationCodeGrant(config, current, {
          expectedState: transaction.state,
          expectedNonce: transaction.nonce,
          pkceCodeVerifier: transaction.codeVerifier,
          idTokenExpected: true,
        });
        const idToken = tokens.claims();
        if (!idToken) throw new SignInError(`${label} sent no ID token; start again.`);
        let claims: Record<string, unknown> = idToken;
        if (!(groupsClaim in idToken) && config.serverMetadata().userinfo_endpoint) {
          claims = { ...(await client.fetchUserInfo(config, tokens.access_token, idToken.sub)), ...idToken };
        }
        return toIdentity(name, claims, { loginClaim, groupsClaim });
      } catch (error) {
        throw refusal(label, error);
      }
    },
  };
}

function checkIssuer(name: string, issuer: string, allowInsecureHttp: boolean): URL {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new ConfigurationError(`${name}.issuer`, `'${issuer}' is not a URL (e.g. https://login.example.com)`);
  }
  if (url.protocol === 'https:' || (url.protocol === 'http:' && allowInsecureHttp)) return url;
  throw new ConfigurationError(`${name}.issuer`, `'${issuer}' must be an https:// URL${url.protocol === 'http:' ? ' (http:// only with allowInsecureHttp, for a test issuer)' : ''}`);
}

/** The person the claims describe. */
function toIdentity(provider: string, claims: Record<string, unknown>, names: { loginClaim: string; groupsClaim: string }): ExternalIdentity {
  const subject = String(claims.sub);
  const email = typeof claims.email === 'string' && claims.email !== '' && claims.email_verified !== false ? claims.email : undefined;
  const localPart = email?.includes('@') ? email.slice(0, email.lastIndexOf('@')) : undefined;
  const login = nonEmptyString(claims[names.loginClaim]) ?? (localPart || undefined) ?? subject;
  const groups = claims[names.groupsClaim];
  return {
    provider,
    subject,
    login,
    name: nonEmptyString(claims.name),
    email,
    groups: Array.isArray(groups) && groups.every((g) => typeof g === 'string') ? [...groups] : [],
  };
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** A short, showable reason for a failed code exchange; the provider's own error code at most. */
function refusal(label: string, error: unknown): SignInError {
  if (error instanceof SignInError) return error;
  if (error instanceof client.AuthorizationResponseError) return new SignInError(`${label} refused the sign-in (${errorCode(error.error)}).`);
  if (error instanceof client.ResponseBodyError || error instanceof client.WWWAuthenticateChallengeError) {
    return new SignInError(`${label} did not accept the sign-in (${errorCode(error instanceof client.ResponseBodyError ? error.error : error.cause[0]?.parameters.error)}); start again.`);
  }
  if (isTimeoutOrNetwork(error)) return new SignInError(`${label} did not answer; try again later.`);
  return new SignInError(`${label}'s answer did not check out (${errorCode((error as { code?: unknown }).code)}); start again.`);
}

/** An OAuth error code as sent, if it looks like one (it may come from a hostile callback URL). */
function errorCode(code: unknown): string {
  return typeof code === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(code) ? code : 'error';
}

function isTimeoutOrNetwork(error: unknown): boolean {
  for (let e = error as { name?: string; message?: string; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return true;
    if (e.name === 'TypeError' && e.message === 'fetch failed') return true;
  }
  return false;
}
