import { every, type Role } from './role';

/**
 * `identity`: keeps users' tokens, sessions and roles current. Hourly (and at start) it deletes
 * ended browser sessions, and tokens that expired more than a month ago, recording each token in
 * the audit log (an expired token is refused from the moment it expires; it stays listed, as
 * expired, until then). It runs the role sources
 * (runtime/identity/role-sources.ts) that keep roles held outside Gyre, such as GitHub repository
 * permissions, each on its own interval. Users, organisations, roles and tokens are served by the
 * API through the identity service; a token's last use is written by the API as it authenticates,
 * at most once a minute per token.
 */
export const identityRole: Role = {
  name: 'identity',
  async start(core) {
    const log = core.log.child({ role: 'identity' });
    const sweep = () => Promise.all([
      core.identity.sweepExpiredTokens().then(
        (n) => n > 0 && log.info('expired tokens deleted', { tokens: n }),
        (error) => log.error('expired token sweep failed', { error: (error as Error).message }),
      ),
      core.signIn.sweep().then(
        (n) => n > 0 && log.info('ended sessions deleted', { sessions: n }),
        (error) => log.error('session sweep failed', { error: (error as Error).message }),
      ),
    ]);
    await sweep();
    const stops = [every(60 * 60_000, sweep, () => undefined)];
    for (const source of core.roleSources) {
      const refresh = () => source.refresh().catch((error) => log.error('role refresh failed', { source: source.name, error: (error as Error).message }));
      void refresh();
      stops.push(every(source.intervalMs, refresh, () => undefined));
    }
    return {
      async stop() {
        for (const stop of stops) stop();
      },
    };
  },
};
