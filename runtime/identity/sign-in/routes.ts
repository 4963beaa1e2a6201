import { timingSafeEqual } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CSRF_HEADER, principalOf, SESSION_COOKIE, type GyreApp } from '../../api/http-app';
import { Segment } from '../../api/schemas';
import { GyreError, PermissionError } from '../../domain/errors';
import type { Logger } from '../../logger';
import type { SignIn, StartedSession } from './sign-in';

/**
 * Sign-in routes (under `/auth`, public except `/auth/session`):
 *
 * - `GET /auth/providers`: what the sign-in page offers.
 * - `POST /auth/token` `{ token }`: a session for a personal API token's user.
 * - `POST /auth/:provider` `{ username, password }`: a session for a directory user (LDAP).
 * - `GET /auth/:provider/start[?return_to=#/…]`: off to GitHub or the OpenID Connect provider…
 * - `GET /auth/:provider/callback`: …and back, signed in (or at `/login#error=…`).
 * - `GET /auth/session`: who is signed in, and the CSRF token writes must carry.
 * - `POST /auth/sign-out`: ends the session, on the server.
 *
 * The session cookie is HttpOnly (page scripts never see it), SameSite=Lax, `Secure` whenever Gyre
 * is reached over HTTPS, and lasts as long as the session.
 */
export interface SignInRouteDeps {
  readonly signIn: SignIn;
  /** GYRE_PUBLIC_URL: where browsers reach Gyre, for the providers' redirect URIs. */
  readonly publicUrl?: string;
  readonly log: Logger;
}

/** The cookie that ties a redirect sign-in to the browser that started it. */
const STATE_COOKIE = 'gyre_sign_in';
const SMALL_BODY = 16 * 1024;

const ProviderParams = Type.Object({ provider: Segment });
const TokenBody = Type.Object({ token: Type.String({ minLength: 1, maxLength: 1024 }) });
const PasswordBody = Type.Object({ username: Type.String({ minLength: 1, maxLength: 256 }), password: Type.String({ minLength: 1, maxLength: 1024 }) });
const StartQuery = Type.Object({ return_to: Type.Optional(Type.String({ maxLength: 500 })) });

export function registerSignInRoutes(app: GyreApp, deps: SignInRouteDeps): void {
  const { signIn } = deps;
  const PUBLIC = { auth: 'public' as const };

  const origin = (request: FastifyRequest) => deps.publicUrl?.replace(/\/+$/, '') ?? `${request.protocol}://${request.host}`;
  const secure = (request: FastifyRequest) => (deps.publicUrl ? deps.publicUrl.startsWith('https:') : request.protocol === 'https');
  const redirectUri = (request: FastifyRequest, provider: string) => `${origin(request)}/auth/${encodeURIComponent(provider)}/callback`;

  const setSession = (request: FastifyRequest, reply: FastifyReply, session: StartedSession) => {
    reply.setCookie(SESSION_COOKIE, session.cookie, { path: '/', httpOnly: true, sameSite: 'lax', secure: secure(request), expires: session.expiresAt });
  };
  const sessionView = (session: { login: string; csrf: string | null; provider: string; expiresAt?: Date }) => ({
    login: session.login,
    provider: session.provider,
    csrf_token: session.csrf,
    expires_at: session.expiresAt?.toISOString() ?? null,
  });

  app.get('/auth/providers', { config: PUBLIC }, async () => ({
    providers: signIn.providers().map((p) => ({ ...p, ...(p.kind === 'redirect' ? { start_url: `/auth/${encodeURIComponent(p.name)}/start` } : {}) })),
    token: true,
  }));

  app.post('/auth/token', { config: PUBLIC, bodyLimit: SMALL_BODY, schema: { body: TokenBody } }, async (request, reply) => {
    const session = await signIn.withToken(request.body.token, { address: request.ip });
    setSession(request, reply, session);
    return sessionView(session);
  });

  app.get('/auth/session', { config: { permission: 'authenticated' } }, async (request) => {
    const principal = principalOf(request);
    const cookie = request.cookies[SESSION_COOKIE];
    if (principal.token?.kind === 'session' && cookie) {
      const session = await signIn.session(cookie);
      if (session) return sessionView({ login: principal.login, csrf: session.csrf, provider: session.provider, expiresAt: session.expiresAt });
    }
    // Called with an API token: there is no session, and no CSRF token is needed.
    return sessionView({ login: principal.login, csrf: null, provider: 'token' });
  });

  app.post('/auth/sign-out', { config: PUBLIC, bodyLimit: SMALL_BODY }, async (request, reply) => {
    const cookie = request.cookies[SESSION_COOKIE];
    if (cookie) {
      const session = await signIn.session(cookie);
      if (session) {
        // Another site must not be able to sign a user out either.
        const sent = request.headers[CSRF_HEADER];
        const given = Buffer.from(typeof sent === 'string' ? sent : '');
        const expected = Buffer.from(session.csrf);
        if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new PermissionError('Signing out needs the X-Gyre-CSRF header.');
        await signIn.signOut(cookie, { address: request.ip });
      }
    }
    reply.clearCookie(SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'lax', secure: secure(request) });
    return reply.code(204).send();
  });

  app.post('/auth/:provider', { config: PUBLIC, bodyLimit: SMALL_BODY, schema: { params: ProviderParams, body: PasswordBody } }, async (request, reply) => {
    const session = await signIn.withPassword(request.params.provider, request.body.username, request.body.password, { address: request.ip });
    setSession(request, reply, session);
    return sessionView(session);
  });

  app.get('/auth/:provider/start', { config: PUBLIC, schema: { params: ProviderParams, querystring: StartQuery } }, async (request, reply) => {
    const { provider } = request.params;
    const { url, state } = await signIn.begin(provider, redirectUri(request, provider), request.query.return_to);
    reply.setCookie(STATE_COOKIE, state, { path: '/auth', httpOnly: true, sameSite: 'lax', secure: secure(request), maxAge: 600 });
    return reply.header('Cache-Control', 'no-store').redirect(url, 302);
  });

  app.get('/auth/:provider/callback', { config: PUBLIC, schema: { params: ProviderParams } }, async (request, reply) => {
    const { provider } = request.params;
    const callbackUrl = new URL(request.url, origin(request));
    reply.clearCookie(STATE_COOKIE, { path: '/auth', httpOnly: true, sameSite: 'lax', secure: secure(request) });
    reply.header('Cache-Control', 'no-store');
    try {
      const session = await signIn.finish(provider, callbackUrl, request.cookies[STATE_COOKIE], redirectUri(request, provider), { address: request.ip });
      setSession(request, reply, session);
      return reply.redirect(`/${session.returnTo ?? '#/'}`, 302);
    } catch (error) {
      // The browser is on a redirect, not in the UI: send it to the sign-in page with the reason.
      const shown = error instanceof GyreError ? error.message : 'The sign-in failed; try again or ask an admin.';
      if (!(error instanceof GyreError)) deps.log.error('sign-in callback failed', { provider, error: (error as Error).message });
      return reply.redirect(`/login#error=${encodeURIComponent(shown)}`, 302);
    }
  });
}
