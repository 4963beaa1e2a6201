/**
 * Pod labels the control plane's manifests and NetworkPolicies agree on. Identity labels say what a
 * pod is; capability labels (`gyre.dev/*`) say what it may reach, and the NetworkPolicies
 * (network-policies.ts) grant exactly those.
 */

/** Identity of a runtime role's pods (`gyre server --roles=<role>`). */
export const roleLabels = (role: string) => ({ 'app.kubernetes.io/name': 'gyre', 'app.kubernetes.io/component': role });
export const EDGE_LABELS = { 'app.kubernetes.io/name': 'gyre', 'app.kubernetes.io/component': 'edge' };
export const MIGRATE_LABELS = { 'app.kubernetes.io/name': 'gyre', 'app.kubernetes.io/component': 'migrate' };
export const NOMAD_SERVER_LABELS = { 'app.kubernetes.io/name': 'nomad', 'app.kubernetes.io/component': 'server' };
export const NOMAD_ACL_BOOTSTRAP_LABELS = { 'app.kubernetes.io/name': 'nomad', 'app.kubernetes.io/component': 'acl-bootstrap' };
export const AUTOSCALER_LABELS = { 'app.kubernetes.io/name': 'nomad-autoscaler' };

/** May connect to the database (every runtime role and the migration Job). */
export const CAN_REACH_DATABASE = { 'gyre.dev/database': 'true' };
/** May connect to the Nomad HTTP API (the scheduler, nomad-autoscaler and the ACL bootstrap Job). */
export const CAN_REACH_NOMAD_API = { 'gyre.dev/nomad-api': 'true' };
/** May open HTTPS connections to the outside (object storage, cloud and forge APIs). */
export const CAN_REACH_HTTPS = { 'gyre.dev/https': 'true' };
/** May connect to the SMTP server the environment names, on its port (the notifier role, when there is one). */
export const CAN_REACH_SMTP = { 'gyre.dev/smtp': 'true' };
/** May clone over SSH (git remotes of projects). */
export const CAN_REACH_GIT_SSH = { 'gyre.dev/git-ssh': 'true' };
/** Serves /healthz and /metrics on the ops port, which any pod in the cluster may scrape. */
export const SERVES_OPS = { 'gyre.dev/ops': 'true' };
