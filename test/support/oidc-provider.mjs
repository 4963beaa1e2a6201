// A real OpenID Connect provider (oidc-provider 9) for the OIDC sign-in tests, run in a process of
// its own (oidc-provider is ESM only). Started by test/support/oidc-provider.ts; prints one JSON line,
// {"issuer":"http://127.0.0.1:PORT"}, once it listens.
//
// Environment:
//   PORT                  port on 127.0.0.1 (0 picks a free one)
//   OIDC_CLIENT_ID        the one registered client (client_secret_basic or client_secret_post)
//   OIDC_CLIENT_SECRET
//   OIDC_REDIRECT_URIS    comma-separated
//   OIDC_ACCOUNTS         JSON array of { sub, preferred_username?, email?, email_verified?, name?, groups? }
//   OIDC_USERINFO         `false`: no userinfo endpoint, so every claim goes into the ID token; by
//                         default the ID token carries only `sub` and the rest comes from userinfo
//
// Sign-in is not interactive: /interaction/:uid logs in the account whose `sub` or
// `preferred_username` the authorization request named in `login_hint`, and grants what the client
// asked for. With no login_hint, or one naming nobody, the person "declines": the client gets
// error=access_denied. PKCE (S256) is required.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const env = process.env;
const accounts = JSON.parse(env.OIDC_ACCOUNTS || '[]');
const userinfo = env.OIDC_USERINFO !== 'false';

function findAccountByName(name) {
  if (typeof name !== 'string' || name === '') return undefined;
  return accounts.find((a) => a.sub === name || a.preferred_username === name);
}

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(env.PORT || 0), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: env.OIDC_CLIENT_ID || 'gyre',
      client_secret: env.OIDC_CLIENT_SECRET || 'gyre-secret',
      redirect_uris: (env.OIDC_REDIRECT_URIS || 'http://127.0.0.1/callback').split(',').filter(Boolean),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'groups'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: userinfo },
  },
  // Grant every scope the client asks for, so the only interaction is the login.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.account.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
    await grant.save();
    return grant;
  },
  async findAccount(_ctx, id) {
    const account = accounts.find((a) => a.sub === id);
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ ...account }) };
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const account = findAccountByName(details.params.login_hint);
    const result = account ? { login: { accountId: account.sub } } : { error: 'access_denied', error_description: 'the person declined' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } catch (error) {
    res.statusCode = 400;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ error: 'invalid_request', error_description: String(error.message) }));
  }
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) void interaction(req, res);
  else callback(req, res);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.stdout.write(JSON.stringify({ issuer }) + '\n');
