import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigurationError } from '../domain/errors';
import { checkGitHubUrl, defaultGitHubApiUrl } from '../identity/sign-in/github-urls';

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The GitHub App Gyre acts as (README: "GitHub"): it receives the app's webhooks, reads
 * configurations and checks out code with the short-lived tokens of the app's installations.
 * github.com, GitHub Enterprise Cloud with data residency (`*.ghe.com`) and GitHub Enterprise
 * Server alike; the addresses are the ones sign-in with GitHub uses (GYRE_GITHUB_URL,
 * GYRE_GITHUB_API_URL), since one Gyre talks to one GitHub.
 */
export interface GitHubAppSettings {
  /** GYRE_GITHUB_APP_ID: the app's numeric id (its settings page, "About"). */
  readonly appId: number;
  /** GYRE_GITHUB_APP_PRIVATE_KEY_FILE: the path of the app's private key (PEM), as read at start. */
  readonly privateKeyFile: string;
  /** The key itself (PKCS#1 as GitHub hands it out, or PKCS#8). */
  readonly privateKey: string;
  /** GYRE_GITHUB_WEBHOOK_SECRET or GYRE_GITHUB_WEBHOOK_SECRET_FILE: what deliveries are signed with. */
  readonly webhookSecret: string;
  /** GYRE_GITHUB_URL: where people and git reach GitHub. @default 'https://github.com' */
  readonly webUrl: string;
  /** GYRE_GITHUB_API_URL: GitHub's REST API. @default from the web address (`<web>/api/v3` for GitHub Enterprise Server) */
  readonly apiUrl: string;
  /** GYRE_GITHUB_TIMEOUT_MS: how long one call to GitHub may take. @default 15000 */
  readonly timeoutMs: number;
}

/** The settings that make the app: all of them, or none (no GitHub App). */
const APP_SETTINGS = ['GYRE_GITHUB_APP_ID', 'GYRE_GITHUB_APP_PRIVATE_KEY_FILE'] as const;

/**
 * Reads the GitHub App settings; undefined when none is set. A bad or missing one throws a
 * ConfigurationError naming it.
 */
export function readGitHubAppSettings(env: Env): GitHubAppSettings | undefined {
  const secretSet = Boolean(env.GYRE_GITHUB_WEBHOOK_SECRET || env.GYRE_GITHUB_WEBHOOK_SECRET_FILE);
  const given = APP_SETTINGS.filter((name) => env[name]);
  if (given.length === 0) {
    if (secretSet) throw new ConfigurationError(env.GYRE_GITHUB_WEBHOOK_SECRET ? 'GYRE_GITHUB_WEBHOOK_SECRET' : 'GYRE_GITHUB_WEBHOOK_SECRET_FILE', 'is set but the GitHub App is not (GYRE_GITHUB_APP_ID, GYRE_GITHUB_APP_PRIVATE_KEY_FILE)');
    return undefined;
  }
  const missing = APP_SETTINGS.find((name) => !env[name]);
  if (missing) throw new ConfigurationError(missing, `is required with ${given.join(', ')}`);

  const rawId = env.GYRE_GITHUB_APP_ID!.trim();
  if (!/^[1-9]\d{0,15}$/.test(rawId) || !Number.isSafeInteger(Number(rawId))) {
    throw new ConfigurationError('GYRE_GITHUB_APP_ID', `'${rawId.slice(0, 50)}' is not an app id (the number on the app's settings page, not its client id)`);
  }

  const privateKeyFile = resolve(env.GYRE_GITHUB_APP_PRIVATE_KEY_FILE!);
  const privateKey = readText('GYRE_GITHUB_APP_PRIVATE_KEY_FILE', privateKeyFile);
  try {
    const key = createPrivateKey(privateKey);
    if (key.asymmetricKeyType !== 'rsa') throw new Error(`it is an ${key.asymmetricKeyType} key`);
  } catch (error) {
    throw new ConfigurationError('GYRE_GITHUB_APP_PRIVATE_KEY_FILE', `${privateKeyFile} is not the app's RSA private key in PEM form (${(error as Error).message.slice(0, 120)}); generate one on the app's settings page`);
  }

  if (env.GYRE_GITHUB_WEBHOOK_SECRET && env.GYRE_GITHUB_WEBHOOK_SECRET_FILE) {
    throw new ConfigurationError('GYRE_GITHUB_WEBHOOK_SECRET_FILE', 'and GYRE_GITHUB_WEBHOOK_SECRET are both set; set one');
  }
  const secretSetting = env.GYRE_GITHUB_WEBHOOK_SECRET_FILE ? 'GYRE_GITHUB_WEBHOOK_SECRET_FILE' : 'GYRE_GITHUB_WEBHOOK_SECRET';
  const webhookSecret = env.GYRE_GITHUB_WEBHOOK_SECRET_FILE
    ? readText('GYRE_GITHUB_WEBHOOK_SECRET_FILE', resolve(env.GYRE_GITHUB_WEBHOOK_SECRET_FILE)).replace(/\r?\n$/, '')
    : env.GYRE_GITHUB_WEBHOOK_SECRET;
  if (!webhookSecret) throw new ConfigurationError('GYRE_GITHUB_WEBHOOK_SECRET', 'is required with the GitHub App: Gyre refuses unsigned deliveries (or set GYRE_GITHUB_WEBHOOK_SECRET_FILE)');
  if (webhookSecret.length < 16) throw new ConfigurationError(secretSetting, 'must be at least 16 characters (a random value, e.g. `openssl rand -hex 32`)');

  const webUrl = checkGitHubUrl('GYRE_GITHUB_URL', env.GYRE_GITHUB_URL || 'https://github.com');
  const apiUrl = env.GYRE_GITHUB_API_URL ? checkGitHubUrl('GYRE_GITHUB_API_URL', env.GYRE_GITHUB_API_URL) : defaultGitHubApiUrl(webUrl);
  const rawTimeout = env.GYRE_GITHUB_TIMEOUT_MS;
  let timeoutMs = 15_000;
  if (rawTimeout) {
    if (!/^\d+$/.test(rawTimeout.trim()) || Number(rawTimeout) < 100 || Number(rawTimeout) > 300_000) {
      throw new ConfigurationError('GYRE_GITHUB_TIMEOUT_MS', `'${rawTimeout}' is not a whole number of milliseconds (allowed: 100 to 300000)`);
    }
    timeoutMs = Number(rawTimeout);
  }
  return { appId: Number(rawId), privateKeyFile, privateKey, webhookSecret, webUrl, apiUrl, timeoutMs };
}

function readText(setting: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigurationError(setting, `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}
