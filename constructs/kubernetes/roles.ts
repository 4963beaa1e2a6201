import { DEFAULT_API_PORT, DEFAULT_OPS_PORT, ROLE_NAMES, RoleName } from '../../runtime/roles/names';

/** A runtime role as deployed: one Deployment per role, all from the one runtime image. */
export interface RoleSpec {
  readonly name: RoleName;
  /** Replicas when the environment does not say. */
  readonly replicas: number;
  readonly cpuRequest: string;
  readonly memoryRequest: string;
  readonly memoryLimit: string;
  /** Scale on CPU with a HorizontalPodAutoscaler between `replicas` and this. */
  readonly maxReplicas?: number;
  /** The role serves the API and UI on the API port (only `api`); every role serves the ops port. */
  readonly servesApi?: boolean;
  /** The role talks to the Nomad HTTP API (only `scheduler`). */
  readonly usesNomad?: boolean;
  /**
   * The role acts as the GitHub App when the environment has one: it gets the app's settings and
   * its private key and webhook secret as files. `api` (webhooks, adding projects, pipelines
   * triggered through the API, installation tokens for checkouts), `conductor` (reads configs from
   * GitHub, sends commit statuses through the outbox) and `cron` (scheduled pipelines resolve their
   * branch and read their config on GitHub).
   */
  readonly usesGitHub?: boolean;
  /**
   * The role sends email when the environment names an SMTP server (`notifier`, the only role that
   * sends): it gets GYRE_SMTP_URL from the SMTP Secret and GYRE_SMTP_FROM, and may reach the server's port.
   */
  readonly usesSmtp?: boolean;
}

/**
 * Sizing per role. Keyed by the runtime's own role list (runtime/roles/names.ts), so a role with
 * code behind it cannot lack a Deployment, and a name the runtime does not know cannot have one:
 * adding a role there fails the type check here until it is sized.
 */
const SIZING: { readonly [R in RoleName]: Omit<RoleSpec, 'name'> } = {
  api: { replicas: 2, cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '1Gi', maxReplicas: 10, servesApi: true, usesGitHub: true },
  conductor: { replicas: 2, cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '1Gi', usesGitHub: true },
  dispatcher: { replicas: 2, cpuRequest: '250m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  scheduler: { replicas: 2, cpuRequest: '250m', memoryRequest: '256Mi', memoryLimit: '512Mi', usesNomad: true },
  output: { replicas: 2, cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '1Gi', maxReplicas: 10 },
  // Hourly sweeps (expired tokens, role refreshes; audit retention): one replica is enough, and a
  // second would only repeat idempotent work.
  identity: { replicas: 1, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  audit: { replicas: 1, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  // Hourly: OIDC signing keys due for replacement, secrets re-wrapped after a key rotation.
  contexts: { replicas: 1, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  // Scheduled pipelines: every tick is a claimed row, so a second replica fires nothing twice and
  // keeps schedules on time while the first restarts.
  cron: { replicas: 2, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi', usesGitHub: true },
  // Insights rollups: replicas take turns on one cursor, so a second one only stands by.
  insights: { replicas: 1, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  // Outbound webhooks, email and Slack: each delivery is a claimed outbox row, so two replicas send nothing twice.
  notifier: { replicas: 2, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi', usesSmtp: true },
  // The machine executor: claims are exclusive and sweeps idempotent, so one replica is enough and
  // a restarted one loses nothing (machines are tagged; its first sweep finds them). The Compute
  // Engine client alone loads ~190 MB of API descriptions, hence the larger limit.
  machines: { replicas: 1, cpuRequest: '100m', memoryRequest: '384Mi', memoryLimit: '768Mi' },
};

/** The roles that have code behind them, in the runtime's order. */
export const RUNTIME_ROLES: readonly RoleSpec[] = ROLE_NAMES.map((name) => ({ name, ...SIZING[name] }));

/** Names an environment may size (`replicas.<role>`). */
export const RUNTIME_ROLE_NAMES: readonly string[] = ROLE_NAMES;

/** Port of the API and UI (GYRE_PORT), served only by processes with the `api` role. */
export const RUNTIME_PORT = DEFAULT_API_PORT;

/** Port every process serves `/healthz` and `/metrics` on (GYRE_OPS_PORT); probed and scraped. */
export const OPS_PORT = DEFAULT_OPS_PORT;

/** Container security settings every Gyre-managed container runs with. */
export const RESTRICTED_CONTAINER = {
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};
