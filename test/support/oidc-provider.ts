import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** A person the test OpenID provider knows; `groups` may be anything, to test hostile claims. */
export interface TestOidcAccount {
  sub: string;
  preferred_username?: string;
  email?: string;
  email_verified?: boolean;
  name?: string;
  groups?: unknown;
}

export interface TestOidcProviderOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  clientId: string;
  clientSecret: string;
  redirectUris: string[];
  accounts: TestOidcAccount[];
  /** false: no userinfo endpoint, every claim in the ID token; default: only `sub` in the ID token. */
  userinfo?: boolean;
}

/**
 * Starts test/support/oidc-provider.mjs (a real oidc-provider 9) in a child process and resolves
 * with its issuer once it listens; rejects with its stderr if it has not said so within 30 s (a
 * loaded CI machine once took more than 10 to start it).
 */
export function startOidcProvider(options: TestOidcProviderOptions): Promise<{ issuer: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [join(__dirname, 'oidc-provider.mjs')], {
    env: {
      ...process.env,
      PORT: String(options.port ?? 0),
      OIDC_CLIENT_ID: options.clientId,
      OIDC_CLIENT_SECRET: options.clientSecret,
      OIDC_REDIRECT_URIS: options.redirectUris.join(','),
      OIDC_ACCOUNTS: JSON.stringify(options.accounts),
      OIDC_USERINFO: options.userinfo === false ? 'false' : 'true',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      void stop();
      reject(new Error(`the test OpenID provider ${why}: ${stderr.trim()}`));
    };
    const timer = setTimeout(() => fail('did not print its issuer within 30 s'), 30_000);
    child.once('exit', (code, signal) => fail(`exited (${code ?? signal}) before printing its issuer`));
    child.once('error', (error) => fail(`could not start (${error.message})`));
    child.stdout!.on('data', (d) => {
      stdout += d;
      const line = stdout.split('\n')[0];
      if (!stdout.includes('\n')) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      try {
        resolve({ issuer: (JSON.parse(line) as { issuer: string }).issuer, stop });
      } catch {
        fail(`printed ${JSON.stringify(line)} instead of {"issuer": …}`);
      }
    });
  });
}

/** The cookies a browser would keep for one origin: enough for an OpenID provider's login round trip. */
class CookieJar {
  private readonly cookies = new Map<string, { value: string; path: string }>();

  store(headers: Headers): void {
    for (const line of headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = value === '';
      for (const attribute of attributes) {
        const [key, ...rest] = attribute.trim().split('=');
        const v = rest.join('=');
        if (/^path$/i.test(key)) path = v || '/';
        if (/^max-age$/i.test(key) && Number(v) <= 0) expired = true;
        if (/^expires$/i.test(key) && Date.parse(v) <= Date.now()) expired = true;
      }
      const key = `${path} ${name}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { value, path });
    }
  }

  header(url: URL): string {
    return [...this.cookies.entries()]
      .filter(([, c]) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map(([key, c]) => `${key.slice(key.indexOf(' ') + 1)}=${c.value}`)
      .join('; ');
  }
}

/**
 * Signs in at the test provider the way a browser would, without one: follows its redirects from
 * `authorizationUrl` (with a cookie jar) as the person named `login` (a `sub` or
 * `preferred_username`; unknown or omitted: the person declines), and returns the URL the provider
 * finally sent the browser to (the client's redirect URI with `code` or `error`), without loading it.
 */
export async function signInAtProvider(authorizationUrl: string, login?: string): Promise<URL> {
  let url = new URL(authorizationUrl);
  if (login !== undefined) url.searchParams.set('login_hint', login);
  const origin = url.origin;
  const jar = new CookieJar();
  for (let hop = 0; hop < 10; hop++) {
    const cookie = jar.header(url);
    const response = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {}, signal: AbortSignal.timeout(5_000) });
    jar.store(response.headers);
    const location = response.headers.get('location');
    if (response.status < 300 || response.status > 399 || !location) {
      throw new Error(`the test OpenID provider answered ${response.status} at ${url.pathname}: ${(await response.text()).slice(0, 500)}`);
    }
    await response.body?.cancel();
    url = new URL(location, url);
    if (url.origin !== origin) return url;
  }
  throw new Error('the test OpenID provider redirected more than 10 times');
}
