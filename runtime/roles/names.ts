/**
 * The roles that have code behind them: `gyre server --roles=…`, GYRE_ROLES and the Kubernetes
 * constructs (one Deployment per role) all take their names from this list, so no Deployment can
 * exist without a role module to run. A role is added here by the issue that builds its behaviour.
 *
 * This file is deliberately free of imports: the cdktf distribution reads it at synth time.
 */
export const ROLE_NAMES = ['api', 'conductor', 'dispatcher', 'scheduler', 'output', 'identity', 'audit', 'contexts', 'cron', 'insights', 'notifier', 'machines'] as const;
export type RoleName = (typeof ROLE_NAMES)[number];

/** Port of the API and UI (GYRE_PORT) in processes that run the `api` role. */
export const DEFAULT_API_PORT = 8080;

/**
 * Port every process serves `/healthz` (ready only when its dependencies answer) and `/metrics` on
 * (GYRE_OPS_PORT), whatever its roles. Kubernetes probes and Prometheus scrape this port; it is not
 * exposed through the load balancer.
 */
export const DEFAULT_OPS_PORT = 9090;
