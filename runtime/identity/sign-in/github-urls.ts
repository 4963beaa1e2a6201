import { ConfigurationError } from '../../domain/errors';

/** GitHub addresses (github.com, *.ghe.com, GitHub Enterprise Server): checked and defaulted without loading the GitHub client. */

/** A GitHub address checked as a setting: http(s), no credentials, query or fragment; http only on loopback. */
export function checkGitHubUrl(setting: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigurationError(setting, `'${value.slice(0, 200)}' is not a URL (e.g. https://github.com or https://ghe.example.com)`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigurationError(setting, `'${url.protocol}' is not allowed: use an https:// address`);
  if (url.protocol === 'http:' && !isLoopback(url.hostname)) throw new ConfigurationError(setting, `http:// is allowed only for a loopback address (localhost, 127.0.0.1, [::1]); use https:// for ${url.hostname}`);
  if (url.username || url.password) throw new ConfigurationError(setting, 'must not carry a user name or password');
  if (url.search || url.hash) throw new ConfigurationError(setting, 'must not have a query or fragment');
  return url.toString().replace(/\/+$/, '');
}

/** The REST API address that goes with a GitHub web address. */
export function defaultGitHubApiUrl(webUrl: string): string {
  const url = new URL(webUrl);
  if (url.hostname === 'github.com') return 'https://api.github.com';
  if (url.hostname.endsWith('.ghe.com')) return `${url.protocol}//api.${url.host}`;
  return `${webUrl.replace(/\/+$/, '')}/api/v3`;
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}
