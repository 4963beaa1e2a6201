import type { RoleName } from './names';
import type { Role } from './role';

/**
 * The role map: every name in ROLE_NAMES has its module here (the type makes a missing one a
 * compile error), and the Kubernetes constructs deploy exactly these names.
 */
export const ROLES: Readonly<Record<RoleName, Role>> = {
  api: lazy('api', () => (require('./api') as typeof import('./api')).apiRole),
  conductor: lazy('conductor', () => (require('./conductor') as typeof import('./conductor')).conductorRole),
  dispatcher: lazy('dispatcher', () => (require('./dispatcher') as typeof import('./dispatcher')).dispatcherRole),
  scheduler: lazy('scheduler', () => (require('./scheduler') as typeof import('./scheduler')).schedulerRole),
  output: lazy('output', () => (require('./output') as typeof import('./output')).outputRole),
  identity: lazy('identity', () => (require('./identity') as typeof import('./identity')).identityRole),
  audit: lazy('audit', () => (require('./audit') as typeof import('./audit')).auditRole),
  contexts: lazy('contexts', () => (require('./contexts') as typeof import('./contexts')).contextsRole),
  cron: lazy('cron', () => (require('./cron') as typeof import('./cron')).cronRole),
  insights: lazy('insights', () => (require('./insights') as typeof import('./insights')).insightsRole),
  notifier: lazy('notifier', () => (require('./notifier') as typeof import('./notifier')).notifierRole),
  machines: lazy('machines', () => (require('./machines') as typeof import('./machines')).machinesRole),
};

/**
 * The order roles start in: the dispatcher first (an embedded server ends a dead run's leases
 * before anyone can claim), the API before the scheduler (whose agents call it back), the
 * scheduler and the machines last (nothing runs before the roles that watch it are up). Stopped in reverse.
 */
export const START_ORDER: readonly RoleName[] = ['dispatcher', 'conductor', 'output', 'identity', 'audit', 'contexts', 'cron', 'insights', 'notifier', 'api', 'scheduler', 'machines'];

/**
 * A role whose module is loaded when it starts: a pod runs one or two roles, and loading every
 * role's module (the config compiler, the API's routes, the drivers…) cost each pod's start what
 * it never used.
 */
function lazy(name: RoleName, load: () => Role): Role {
  return { name, start: (core) => load().start(core) };
}
