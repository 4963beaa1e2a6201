/** A runtime role as deployed: one Deployment per role, all from the one runtime image. */
export interface RoleSpec {
  readonly name: string;
  /** Replicas when the environment does not say. */
  readonly replicas: number;
  readonly cpuRequest: string;
  readonly memoryRequest: string;
  readonly memoryLimit: string;
  /** Scale on CPU with a HorizontalPodAutoscaler between `replicas` and this. */
  readonly maxReplicas?: number;
}

/**
 * The roles of DESIGN.md. `machines` (VM provisioning) is later work: it is deployed with zero
 * replicas so its Service exists for the load balancer's port 3000, and an environment turns it on
 * with `replicas: { machines: 1 }`.
 */
export const RUNTIME_ROLES: readonly RoleSpec[] = [
  { name: 'api', replicas: 2, cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '1Gi', maxReplicas: 10 },
  { name: 'triggers', replicas: 2, cpuRequest: '250m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  { name: 'conductor', replicas: 2, cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '1Gi' },
  { name: 'dispatcher', replicas: 2, cpuRequest: '250m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  { name: 'scheduler', replicas: 2, cpuRequest: '250m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  { name: 'output', replicas: 2, cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '1Gi', maxReplicas: 10 },
  { name: 'contexts', replicas: 2, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  { name: 'cron', replicas: 1, cpuRequest: '100m', memoryRequest: '128Mi', memoryLimit: '256Mi' },
  { name: 'identity', replicas: 2, cpuRequest: '100m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  { name: 'audit', replicas: 1, cpuRequest: '100m', memoryRequest: '128Mi', memoryLimit: '256Mi' },
  { name: 'insights', replicas: 1, cpuRequest: '250m', memoryRequest: '256Mi', memoryLimit: '512Mi' },
  { name: 'notifier', replicas: 1, cpuRequest: '100m', memoryRequest: '128Mi', memoryLimit: '256Mi' },
  { name: 'machines', replicas: 0, cpuRequest: '100m', memoryRequest: '128Mi', memoryLimit: '256Mi' },
];

/** Port every role listens on (GYRE_PORT). */
export const RUNTIME_PORT = 8080;

/** Container security settings every Gyre-managed container runs with. */
export const RESTRICTED_CONTAINER = {
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};
