import { sweepAudit } from '../audit/audit-log';
import { every, type Role } from './role';

/**
 * `audit`: keeps the audit log to its retention. At start and hourly it deletes records older than
 * GYRE_AUDIT_RETENTION_DAYS (0 keeps them for ever), in batches. Records are written by the
 * services that make each change, in its transaction, and read through the API
 * (`GET /api/v2/audit`, `gyre audit`).
 */
export const auditRole: Role = {
  name: 'audit',
  async start(core) {
    const log = core.log.child({ role: 'audit' });
    const days = core.settings.auditRetentionDays;
    const sweep = () =>
      sweepAudit(core.store, days).then(
        (n) => n > 0 && log.info('old audit records deleted', { records: n, retention_days: days }),
        (error) => log.error('audit retention sweep failed', { error: (error as Error).message }),
      );
    await sweep();
    const stop = every(60 * 60_000, sweep, () => undefined);
    return {
      async stop() {
        stop();
      },
    };
  },
};
