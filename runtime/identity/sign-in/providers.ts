import type { Logger } from '../../logger';
import type { Store } from '../../store/store';
import { createGitHubRoleSource } from '../github-roles';
import type { RoleSource } from '../role-sources';
import { createGitHubProvider } from './github';
import type { SignInProvider } from './provider';
import type { SignInSettings } from './settings';

export interface SignInProviders {
  readonly providers: readonly SignInProvider[];
  /** GitHub repository roles, when GYRE_GITHUB_TOKEN is set. */
  readonly roleSources: readonly RoleSource[];
  /** After a GitHub sign-in, that user's repository roles are brought up to date at once. */
  readonly afterSignIn?: (provider: string, userId: string) => Promise<void>;
}

/** The providers the settings configure (none by default: sign-in with an API token only). */
export function createSignInProviders(settings: SignInSettings, deps: { store: Store; log: Logger }): SignInProviders {
  const providers: SignInProvider[] = [];
  const roleSources: RoleSource[] = [];
  let afterSignIn: SignInProviders['afterSignIn'];
  if (settings.github) {
    const g = settings.github;
    providers.push(createGitHubProvider({ clientId: g.clientId, clientSecret: g.clientSecret, webUrl: g.webUrl, apiUrl: g.apiUrl }));
    if (g.token) {
      const source = createGitHubRoleSource({ store: deps.store, apiUrl: g.apiUrl, token: g.token, intervalMs: g.syncMinutes * 60_000 });
      roleSources.push(source);
      afterSignIn = async (provider, userId) => {
        if (provider === 'github') await source.refreshUser(userId);
      };
    }
  }
  if (settings.oidc) {
    const o = settings.oidc;
    // openid-client and ldapts load only when their provider is configured (memory: issue #19).
    const { createOidcProvider } = require('./oidc') as typeof import('./oidc');
    providers.push(createOidcProvider({ issuer: o.issuer, clientId: o.clientId, clientSecret: o.clientSecret, label: o.label, scopes: [...o.scopes], groupsClaim: o.groupsClaim, loginClaim: o.loginClaim, allowInsecureHttp: o.allowInsecureHttp }));
  }
  if (settings.ldap) {
    const l = settings.ldap;
    const { createLdapProvider } = require('./ldap') as typeof import('./ldap');
    providers.push(createLdapProvider({ ...l }));
  }
  return { providers, roleSources, afterSignIn };
}
