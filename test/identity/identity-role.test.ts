import { createLogger } from '../../runtime/logger';
import type { Core } from '../../runtime/roles/core';
import { identityRole } from '../../runtime/roles/identity';
import { until } from '../support/processes';

/**
 * The identity role's loops: expired tokens and ended sessions swept at start (and hourly), and every role source
 * (the seam GitHub's repository permissions will use) refreshed at start and on its own interval,
 * a failing one logged without stopping the others.
 */
describe('the identity role', () => {
  it('sweeps expired tokens and ended sessions at start and refreshes each role source on its interval', async () => {
    const swept: number[] = [];
    const sessionSweeps: number[] = [];
    const refreshed: string[] = [];
    const lines: string[] = [];
    const core = {
      log: createLogger({ level: 'info', write: (line) => lines.push(line) }),
      identity: { sweepExpiredTokens: async () => (swept.push(Date.now()), 2) },
      signIn: { sweep: async () => (sessionSweeps.push(Date.now()), 3) },
      roleSources: [
        { name: 'github', intervalMs: 20, refresh: async () => void refreshed.push('github') },
        { name: 'broken', intervalMs: 20, refresh: async () => Promise.reject(new Error('directory unreachable')) },
      ],
    } as unknown as Core;
    const running = await identityRole.start(core);
    try {
      expect(swept).toHaveLength(1);
      expect(sessionSweeps).toHaveLength(1);
      // Every 20 ms: three refreshes come within moments (a timer that fires late is not caught up,
      // so a fixed wait was not enough on a loaded machine).
      await until('three refreshes and a failed one', async () => refreshed.length >= 3 && lines.some((l) => /role refresh failed/.test(l)), 10_000, 10);
      expect(refreshed.length).toBeGreaterThanOrEqual(3);
      expect(lines.some((l) => /expired tokens deleted/.test(l) && /tokens=2/.test(l))).toBe(true);
      expect(lines.some((l) => /ended sessions deleted/.test(l) && /sessions=3/.test(l))).toBe(true);
      expect(lines.some((l) => /role refresh failed/.test(l) && /source=broken/.test(l) && /directory unreachable/.test(l))).toBe(true);
    } finally {
      await running.stop();
    }
    const after = refreshed.length;
    await new Promise((r) => setTimeout(r, 60));
    expect(refreshed.length).toBe(after);
  });
});
