import { apiRole } from './api';
import { auditRole } from './audit';
import { conductorRole } from './conductor';
import { contextsRole } from './contexts';
import { cronRole } from './cron';
import { dispatcherRole } from './dispatcher';
import { identityRole } from './identity';
import { insightsRole } from './insights';
import { machinesRole } from './machines';
import { notifierRole } from './notifier';
import type { RoleName } from './names';
import { outputRole } from './output';
import type { Role } from './role';
import { schedulerRole } from './scheduler';

/**
 * The role map: every name in ROLE_NAMES has its module here (the type makes a missing one a
 * compile error), and the Kubernetes constructs deploy exactly these names.
 */
export const ROLES: Readonly<Record<RoleName, Role>> = {
  api: apiRole,
  conductor: conductorRole,
  dispatcher: dispatcherRole,
  scheduler: schedulerRole,
  output: outputRole,
  identity: identityRole,
  audit: auditRole,
  contexts: contextsRole,
  cron: cronRole,
  insights: insightsRole,
  notifier: notifierRole,
  machines: machinesRole,
};

/**
 * The order roles start in: the dispatcher first (an embedded server ends a dead run's leases
 * before anyone can claim), the API before the scheduler (whose agents call it back), the
 * scheduler and the machines last (nothing runs before the roles that watch it are up). Stopped in reverse.
 */
export const START_ORDER: readonly RoleName[] = ['dispatcher', 'conductor', 'output', 'identity', 'audit', 'contexts', 'cron', 'insights', 'notifier', 'api', 'scheduler', 'machines'];
