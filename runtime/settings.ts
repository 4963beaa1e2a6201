import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { ConfigurationError } from './domain/errors';
import { readSignInSettings, type SignInSettings } from './identity/sign-in/settings';
import { readGitHubAppSettings, type GitHubAppSettings } from './github/settings';
import { readOidcSettings, type OidcSettings } from './secrets/oidc-publish';
import { readNotificationSettings, type NotificationSettings } from './notifications/settings';
import { readSecretsSettings, type SecretsSettings } from './secrets/settings';
import { readExecutorSettings, type ExecutorSettings } from './agent/task-executor';
import { CACHE_TRUST_VALUES, type CacheTrust } from './output/cache-trust';
import type { NomadConnection } from './scheduler/nomad-client';
import { readMachineSettings, type MachineSettings } from './machines/machine-settings';
import type { HttpLimits } from './api/http-app';
import { DEFAULT_API_PORT, DEFAULT_OPS_PORT, ROLE_NAMES, type RoleName } from './roles/names';
import { DEFAULT_COMPILE_BUDGETS } from './config/compile/budget';
import type { CompilerLimits } from './config/compiler-pool';

export type Role = RoleName;

/** Every setting `gyre server` reads, once, at start-up. */
export interface Settings {
  /** GYRE_PORT: the HTTP port of the API and UI. 0 picks a free port. */
  readonly port: number;
  /** GYRE_HOST: the address to listen on. */
  readonly host: string;
  /** GYRE_DATA_DIR: embedded database, blobs, task directories, git mirrors. */
  readonly dataDir: string;
  /** DATABASE_URL: a PostgreSQL server to use instead of the embedded database. */
  readonly databaseUrl?: string;
  /**
   * GYRE_MIGRATE: apply pending migrations at start (`true`, the default), or only check that the
   * schema has every migration this build knows and refuse to start when not (`false`: a cluster,
   * where `gyre migrate` runs once per release).
   */
  readonly migrate: boolean;
  /** GYRE_RETENTION_DAYS: pipelines older than this are deleted with their output (0 keeps them); projects may set their own. */
  readonly retentionDays: number;
  /** GYRE_AUDIT_RETENTION_DAYS: audit records older than this are deleted by the audit role (0 keeps them). */
  readonly auditRetentionDays: number;
  /** GYRE_ADMIN_TOKEN: the first admin's API token; generated and printed once when unset. */
  readonly adminToken?: string;
  /** GYRE_PUBLIC_URL: the address users reach Gyre at (links in output and CIRCLE_BUILD_URL). */
  readonly publicUrl?: string;
  /** GYRE_RUNNER_SLOTS: tasks the built-in runner runs at once. */
  readonly runnerSlots: number;
  /**
   * GYRE_EXECUTOR (auto, sandbox, docker, shell), GYRE_BUILD_UIDS, GYRE_REQUIRE_ISOLATION,
   * GYRE_DOCKER_SOCKET, GYRE_REGISTRY_MIRROR: how the built-in runner runs steps and keeps builds apart.
   */
  readonly executor: ExecutorSettings;
  /**
   * GYRE_WORK_DIR: where the built-in runner makes task directories. Default `<data dir>/tasks`;
   * as root with build uids, `/var/lib/gyre/work/<a hash of the data dir>`, a place build uids can
   * reach without the data directory being open to them.
   */
  readonly workDir: string;
  /** GYRE_LEASE_TTL_MS: how long a task lease lasts without a heartbeat. */
  readonly leaseTtlMs: number;
  /** GYRE_MAX_ATTEMPTS: claims of a task before an expired lease is a final infrastructure failure. */
  readonly maxAttempts: number;
  /**
   * GYRE_UNSERVED_CLASS_TIMEOUT_MS: how long a job of a class no driver serves (macOS, Windows,
   * Arm without a runner registered for it) waits for one before it fails naming what to register.
   */
  readonly unservedClassTimeoutMs: number;
  /** GYRE_CONTINUATION_TTL_MS: how long a setup pipeline may be continued after its setup workflow starts. */
  readonly continuationTtlMs: number;
  /** GYRE_ROLES: comma-separated roles to run, or `all`. */
  readonly roles: ReadonlySet<Role>;
  /** GYRE_EXAMPLE: create and run the example project on first start (`true`/`false`). */
  readonly example: boolean;
  /** GYRE_AGENT_SECRET: the key task tokens are signed with; generated and kept in the database when unset. */
  readonly agentSecret?: string;
  /**
   * NOMAD_ADDR, with NOMAD_TOKEN (ACL), NOMAD_CACERT / NOMAD_CLIENT_CERT / NOMAD_CLIENT_KEY (mTLS),
   * NOMAD_NAMESPACE, NOMAD_REGION: the Nomad cluster the nomad driver submits task agents to.
   */
  readonly nomad?: NomadConnection;
  /** GYRE_AGENT_IMAGE: the task agent image Nomad jobs run. */
  readonly agentImage: string;
  /** GYRE_NOMAD_JOB_TEMPLATE: a JSON file with the Nomad job every task's job starts from, parsed. */
  readonly nomadJobTemplate?: Record<string, unknown>;
  /**
   * GYRE_NOMAD_DOCKER_SOCKET: the Docker Engine socket on the Nomad clients, mounted into the agent
   * of each `docker` job so it runs the job's images there; `none`: `docker` jobs run in the
   * agent's container as shell jobs. @default /var/run/docker.sock
   */
  readonly nomadEngineSocket?: string;
  /** GYRE_URL: the address agents started by Nomad call back to (GYRE_PUBLIC_URL wins when set). */
  readonly agentCallbackUrl?: string;
  /** GYRE_LOG_LEVEL: info, warn, error or silent. */
  readonly logLevel: 'info' | 'warn' | 'error' | 'silent';
  /** GYRE_BLOB_STORE (local, s3, gcs) and its GYRE_S3_* / GYRE_GCS_* settings: where output is kept. */
  readonly blobs: BlobSettings;
  /** GYRE_JOB_OUTPUT_LIMIT_BYTES: output kept per job node; the rest is cut with a marker. */
  readonly jobOutputLimitBytes: number;
  /** GYRE_OPS_PORT / GYRE_OPS_HOST: where every process serves /healthz and /metrics. */
  readonly opsPort: number;
  readonly opsHost: string;
  /** GYRE_METRICS_TOKEN: when set, /metrics needs `Authorization: Bearer <token>`. */
  readonly metricsToken?: string;
  /** GYRE_METRICS_REFRESH_MS: how often the dispatcher reads the queue gauges from the database. */
  readonly metricsRefreshMs: number;
  /** GYRE_TLS_CERT / GYRE_TLS_KEY: PEM files; the API listener speaks HTTPS with them. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** GYRE_TRUST_PROXY: addresses or CIDRs of proxies whose X-Forwarded-For names the client. */
  readonly trustProxy: string[];
  /** GYRE_HTTP_* and GYRE_RATE_LIMIT_*: the HTTP boundary's bounds. */
  readonly http: HttpLimits;
  /**
   * GYRE_COMPILE_MAX_BYTES, GYRE_COMPILE_MAX_NODES, GYRE_COMPILE_TIMEOUT_MS, GYRE_COMPILE_MEMORY_MB
   * and GYRE_COMPILE_WORKERS: the budgets of one config compilation, and the worker threads
   * compilations run in (see runtime/config/compiler-pool.ts).
   */
  readonly compile: CompileSettings;
  /**
   * GYRE_CACHE_TRUST: `protected` (jobs on a project's protected branches restore only caches saved
   * on protected branches) or `shared` (every job restores every cache of its project).
   */
  readonly cacheTrust: CacheTrust;
  /** Browser sessions and sign-in providers (GYRE_SESSION_*, GYRE_GITHUB_*, GYRE_JOB_OIDC_*, GYRE_LDAP_*). */
  readonly signIn: SignInSettings;
  /** How secrets are encrypted at rest (GYRE_SECRETS_*: the key wrapper and its key). */
  readonly secrets: SecretsSettings;
  /** Jobs' OIDC issuer and where its documents are published (GYRE_JOB_OIDC_*). */
  readonly oidc: OidcSettings;
  /**
   * The GitHub App (GYRE_GITHUB_APP_ID, GYRE_GITHUB_APP_PRIVATE_KEY_FILE, GYRE_GITHUB_WEBHOOK_SECRET
   * or _FILE, with GYRE_GITHUB_URL / GYRE_GITHUB_API_URL): webhooks, private checkouts, pull requests.
   */
  readonly github?: GitHubAppSettings;
  /**
   * GYRE_CRON_INTERVAL_MS: how often the `cron` role looks for due schedule ticks. Ticks fall on
   * whole minutes, so the default is late by at most 10 s; tests and operators may shorten it.
   */
  readonly cronIntervalMs: number;
  /**
   * GYRE_SMTP_URL, GYRE_SMTP_FROM, GYRE_WEBHOOKS_ALLOW_PRIVATE, GYRE_WEBHOOKS_ALLOW_HTTP,
   * GYRE_WEBHOOK_TIMEOUT_MS, GYRE_NOTIFICATION_KEEP_DAYS: how the notifier role sends
   * (docs/notifications.md).
   */
  readonly notifications: NotificationSettings;
  /**
   * GYRE_INSIGHTS_INTERVAL_MS: how often the `insights` role rolls up the workflows that ended since
   * its last pass (docs/insights.md); insights lag the end of a workflow by at most this.
   */
  readonly insightsIntervalMs: number;
  /** GYRE_MACHINE_PROVIDER and GYRE_MACHINE_*: the machine executor (runtime/machines); unset: `machine:` jobs run on the built-in runner. */
  readonly machines?: MachineSettings;
}

export interface CompileSettings extends CompilerLimits {
  /** GYRE_COMPILE_WORKERS: worker threads compiling configs at once. */
  readonly workers: number;
}

/** The compilation settings alone (the CLI's local `gyre config` commands read them too). */
export function readCompileSettings(env: Env = process.env): CompileSettings {
  return {
    maxBytes: integer(env, 'GYRE_COMPILE_MAX_BYTES', DEFAULT_COMPILE_BUDGETS.maxBytes, 1024 * 1024, 1024 ** 3),
    maxNodes: integer(env, 'GYRE_COMPILE_MAX_NODES', DEFAULT_COMPILE_BUDGETS.maxNodes, 10_000, 100_000_000),
    timeoutMs: integer(env, 'GYRE_COMPILE_TIMEOUT_MS', DEFAULT_COMPILE_BUDGETS.timeoutMs, 100, 600_000),
    memoryMb: integer(env, 'GYRE_COMPILE_MEMORY_MB', 256, 64, 16_384),
    workers: integer(env, 'GYRE_COMPILE_WORKERS', 2, 1, 64),
  };
}

export type BlobSettings =
  | { readonly kind: 'local' }
  | { readonly kind: 's3'; readonly bucket: string; readonly region: string; readonly endpoint?: string; readonly forcePathStyle: boolean }
  /** GCS through its JSON API with Application Default Credentials (Workload Identity in the cluster). */
  | { readonly kind: 'gcs'; readonly bucket: string };

const BUCKET = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/;

function blobSettings(env: Env): BlobSettings {
  const kind = env.GYRE_BLOB_STORE || 'local';
  const endpoint = env.GYRE_S3_ENDPOINT || undefined;
  if (endpoint && !/^https?:\/\/[^\s/]+/.test(endpoint)) {
    throw new ConfigurationError('GYRE_S3_ENDPOINT', `'${endpoint}' must be an http:// or https:// URL`);
  }
  const bucketOf = (name: string) => {
    const bucket = env[name];
    if (!bucket) throw new ConfigurationError(name, `is required when GYRE_BLOB_STORE is ${kind}`);
    if (!BUCKET.test(bucket)) throw new ConfigurationError(name, `'${bucket}' is not a bucket name (3-63 lower-case letters, digits, dots, hyphens)`);
    return bucket;
  };
  switch (kind) {
    case 'local':
      return { kind };
    case 's3': {
      const region = env.GYRE_S3_REGION || 'us-east-1';
      if (!/^[a-z0-9-]{2,32}$/.test(region)) throw new ConfigurationError('GYRE_S3_REGION', `'${region}' is not a region name`);
      return { kind, bucket: bucketOf('GYRE_S3_BUCKET'), region, endpoint, forcePathStyle: boolean(env, 'GYRE_S3_FORCE_PATH_STYLE', false) };
    }
    case 'gcs':
      // GCS is reached through its own API and credentials, never the S3-compatible one with keys.
      if (endpoint) throw new ConfigurationError('GYRE_S3_ENDPOINT', 'applies to GYRE_BLOB_STORE=s3 only; GYRE_BLOB_STORE=gcs uses the Cloud Storage JSON API (unset it)');
      return { kind, bucket: bucketOf('GYRE_GCS_BUCKET') };
    default:
      throw new ConfigurationError('GYRE_BLOB_STORE', `'${kind}' is not a blob store (allowed: local, s3, gcs)`);
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigurationError(name, `'${raw}' is not a whole number (allowed: ${min} to ${max})`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigurationError(name, `${value} is out of range (allowed: ${min} to ${max})`);
  return value;
}

/** A file setting: it must name a readable file. */
function file(env: Env, name: string): string | undefined {
  const value = env[name];
  if (!value) return undefined;
  const path = resolve(value);
  try {
    readFileSync(path);
  } catch (error) {
    throw new ConfigurationError(name, `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return path;
}

function httpLimits(env: Env): HttpLimits {
  return {
    bodyBytes: integer(env, 'GYRE_HTTP_BODY_LIMIT_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
    headersTimeoutMs: integer(env, 'GYRE_HTTP_HEADERS_TIMEOUT_MS', 20_000, 1000, 300_000),
    requestTimeoutMs: integer(env, 'GYRE_HTTP_REQUEST_TIMEOUT_MS', 600_000, 1000, 24 * 3600_000),
    idleTimeoutMs: integer(env, 'GYRE_HTTP_IDLE_TIMEOUT_MS', 120_000, 35_000, 3600_000),
    rate: {
      anonymous: integer(env, 'GYRE_RATE_LIMIT_ANONYMOUS', 600, 0, 10_000_000),
      token: integer(env, 'GYRE_RATE_LIMIT_TOKEN', 6000, 0, 10_000_000),
      agent: integer(env, 'GYRE_RATE_LIMIT_AGENT', 60_000, 0, 100_000_000),
    },
  };
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!(allowed as readonly string[]).includes(raw)) throw new ConfigurationError(name, `'${raw}' is not allowed (allowed: ${allowed.join(', ')})`);
  return raw as T;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(true|1|yes|on)$/i.test(raw)) return true;
  if (/^(false|0|no|off)$/i.test(raw)) return false;
  throw new ConfigurationError(name, `'${raw}' is not a boolean (allowed: true or false)`);
}

/** Where the database is: DATABASE_URL, else the embedded one under GYRE_DATA_DIR (what `gyre migrate` reads). */
export function readDatabaseSettings(env: Env = process.env): { readonly dataDir: string; readonly databaseUrl?: string } {
  const dataDir = resolve(env.GYRE_DATA_DIR || '.gyre');
  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigurationError('DATABASE_URL', `'${redact(databaseUrl)}' must be a postgres:// or postgresql:// URL`);
  }
  return { dataDir, databaseUrl };
}

/** GYRE_RETENTION_DAYS' bounds: 0 keeps everything; at most 100 years. */
export const RETENTION_DAYS_MAX = 36_500;

/** Reads and validates settings; a bad value throws a ConfigurationError naming the setting. */
export function readSettings(env: Env = process.env, uid: number | undefined = process.getuid?.()): Settings {
  const port = integer(env, 'GYRE_PORT', DEFAULT_API_PORT, 0, 65535);
  const { dataDir, databaseUrl } = readDatabaseSettings(env);
  const adminToken = env.GYRE_ADMIN_TOKEN || undefined;
  if (adminToken !== undefined && (adminToken.length < 16 || /\s/.test(adminToken))) {
    throw new ConfigurationError('GYRE_ADMIN_TOKEN', 'must be at least 16 characters with no spaces');
  }
  const publicUrl = env.GYRE_PUBLIC_URL || undefined;
  if (publicUrl && !/^https?:\/\/[^\s/]+/.test(publicUrl)) {
    throw new ConfigurationError('GYRE_PUBLIC_URL', `'${publicUrl}' must be an http:// or https:// URL`);
  }
  const rawRoles = (env.GYRE_ROLES || 'all').split(',').map((r) => r.trim()).filter(Boolean);
  const roles = new Set<Role>();
  for (const role of rawRoles) {
    if (role === 'all') ROLE_NAMES.forEach((r) => roles.add(r));
    else if ((ROLE_NAMES as readonly string[]).includes(role)) roles.add(role as Role);
    else throw new ConfigurationError('GYRE_ROLES', `unknown role '${role}' (allowed: all, ${ROLE_NAMES.join(', ')})`);
  }
  if (roles.size === 0) throw new ConfigurationError('GYRE_ROLES', `names no role (allowed: all, ${ROLE_NAMES.join(', ')})`);
  const certFile = file(env, 'GYRE_TLS_CERT');
  const keyFile = file(env, 'GYRE_TLS_KEY');
  if (Boolean(certFile) !== Boolean(keyFile)) throw new ConfigurationError(certFile ? 'GYRE_TLS_KEY' : 'GYRE_TLS_CERT', 'TLS needs both GYRE_TLS_CERT and GYRE_TLS_KEY');
  const metricsToken = env.GYRE_METRICS_TOKEN || undefined;
  if (metricsToken !== undefined && (metricsToken.length < 16 || /\s/.test(metricsToken))) throw new ConfigurationError('GYRE_METRICS_TOKEN', 'must be at least 16 characters with no spaces');
  const trustProxy = (env.GYRE_TRUST_PROXY || '').split(',').map((p) => p.trim()).filter(Boolean);
  for (const p of trustProxy) {
    if (!/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(p)) throw new ConfigurationError('GYRE_TRUST_PROXY', `'${p}' is not an address or CIDR (e.g. 10.0.0.0/8)`);
  }
  const host = env.GYRE_HOST || '0.0.0.0';
  const opsPort = integer(env, 'GYRE_OPS_PORT', DEFAULT_OPS_PORT, 0, 65535);
  if (opsPort !== 0 && opsPort === port) throw new ConfigurationError('GYRE_OPS_PORT', `${opsPort} is GYRE_PORT too; /healthz and /metrics need a port of their own`);
  const logLevel = (env.GYRE_LOG_LEVEL || 'info') as Settings['logLevel'];
  if (!['info', 'warn', 'error', 'silent'].includes(logLevel)) {
    throw new ConfigurationError('GYRE_LOG_LEVEL', `'${logLevel}' is not a level (allowed: info, warn, error, silent)`);
  }
  const agentSecret = env.GYRE_AGENT_SECRET || undefined;
  const nomad = nomadSettings(env);
  let nomadJobTemplate: Record<string, unknown> | undefined;
  if (env.GYRE_NOMAD_JOB_TEMPLATE) {
    try {
      nomadJobTemplate = JSON.parse(readFileSync(env.GYRE_NOMAD_JOB_TEMPLATE, 'utf8'));
    } catch (error) {
      throw new ConfigurationError('GYRE_NOMAD_JOB_TEMPLATE', `cannot read a JSON job from ${env.GYRE_NOMAD_JOB_TEMPLATE}: ${(error as Error).message}`);
    }
  }
  const engineSocketSetting = env.GYRE_NOMAD_DOCKER_SOCKET || '/var/run/docker.sock';
  if (engineSocketSetting !== 'none' && !/^\/[^\s]*$/.test(engineSocketSetting)) {
    throw new ConfigurationError('GYRE_NOMAD_DOCKER_SOCKET', `'${engineSocketSetting}' must be an absolute path on the Nomad clients, or none`);
  }
  const nomadEngineSocket = engineSocketSetting === 'none' ? undefined : engineSocketSetting;
  const agentCallbackUrl = publicUrl ?? (env.GYRE_URL || undefined);
  if (agentCallbackUrl && !/^https?:\/\/[^\s/]+/.test(agentCallbackUrl)) throw new ConfigurationError('GYRE_URL', `'${agentCallbackUrl}' must be an http:// or https:// URL`);
  if (agentSecret !== undefined && agentSecret.length < 32) throw new ConfigurationError('GYRE_AGENT_SECRET', 'must be at least 32 characters');
  const executor = readExecutorSettings(env);
  const buildUids = uid === 0 && executor.choice !== 'shell';
  const workDir = env.GYRE_WORK_DIR
    ? resolve(env.GYRE_WORK_DIR)
    : buildUids
      ? join('/var/lib/gyre/work', createHash('sha256').update(dataDir).digest('hex').slice(0, 12))
      : join(dataDir, 'tasks');
  return {
    port,
    host,
    dataDir,
    databaseUrl,
    migrate: boolean(env, 'GYRE_MIGRATE', true),
    retentionDays: integer(env, 'GYRE_RETENTION_DAYS', 0, 0, RETENTION_DAYS_MAX),
    auditRetentionDays: integer(env, 'GYRE_AUDIT_RETENTION_DAYS', 365, 0, RETENTION_DAYS_MAX),
    adminToken,
    publicUrl,
    runnerSlots: integer(env, 'GYRE_RUNNER_SLOTS', 4, 0, 256),
    executor,
    workDir,
    leaseTtlMs: integer(env, 'GYRE_LEASE_TTL_MS', 30_000, 500, 3_600_000),
    maxAttempts: integer(env, 'GYRE_MAX_ATTEMPTS', 3, 1, 100),
    unservedClassTimeoutMs: integer(env, 'GYRE_UNSERVED_CLASS_TIMEOUT_MS', 600_000, 1000, 7 * 24 * 3600_000),
    continuationTtlMs: integer(env, 'GYRE_CONTINUATION_TTL_MS', 6 * 3600_000, 1000, 7 * 24 * 3600_000),
    roles,
    example: boolean(env, 'GYRE_EXAMPLE', true),
    agentSecret,
    nomad,
    agentImage: env.GYRE_AGENT_IMAGE || 'ghcr.io/gyre-ci/agent:0.1.0',
    nomadJobTemplate,
    nomadEngineSocket,
    agentCallbackUrl,
    logLevel,
    blobs: blobSettings(env),
    jobOutputLimitBytes: integer(env, 'GYRE_JOB_OUTPUT_LIMIT_BYTES', 1024 ** 3, 1024, 2 ** 50),
    opsPort,
    opsHost: env.GYRE_OPS_HOST || host,
    metricsToken,
    metricsRefreshMs: integer(env, 'GYRE_METRICS_REFRESH_MS', 10_000, 100, 3_600_000),
    tls: certFile && keyFile ? { certFile, keyFile } : undefined,
    trustProxy,
    http: httpLimits(env),
    compile: readCompileSettings(env),
    cacheTrust: oneOf(env, 'GYRE_CACHE_TRUST', CACHE_TRUST_VALUES, 'protected'),
    signIn: readSignInSettings(env),
    secrets: readSecretsSettings(env, dataDir),
    oidc: readOidcSettings(env),
    github: readGitHubAppSettings(env),
    cronIntervalMs: integer(env, 'GYRE_CRON_INTERVAL_MS', 10_000, 50, 600_000),
    notifications: readNotificationSettings(env),
    insightsIntervalMs: integer(env, 'GYRE_INSIGHTS_INTERVAL_MS', 30_000, 50, 3_600_000),
    machines: readMachineSettings(env),
  };
}

function nomadSettings(env: Env): NomadConnection | undefined {
  const address = env.NOMAD_ADDR || undefined;
  if (!address) return undefined;
  if (!/^https?:\/\/[^\s/]+/.test(address)) throw new ConfigurationError('NOMAD_ADDR', `'${address}' must be an http:// or https:// URL`);
  for (const name of ['NOMAD_CACERT', 'NOMAD_CLIENT_CERT', 'NOMAD_CLIENT_KEY']) {
    if (env[name] && !existsSync(env[name]!)) throw new ConfigurationError(name, `file ${env[name]} does not exist`);
  }
  if (Boolean(env.NOMAD_CLIENT_CERT) !== Boolean(env.NOMAD_CLIENT_KEY)) {
    throw new ConfigurationError(env.NOMAD_CLIENT_CERT ? 'NOMAD_CLIENT_KEY' : 'NOMAD_CLIENT_CERT', 'mutual TLS needs both NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY');
  }
  return {
    address,
    token: env.NOMAD_TOKEN || undefined,
    caCertFile: env.NOMAD_CACERT || undefined,
    clientCertFile: env.NOMAD_CLIENT_CERT || undefined,
    clientKeyFile: env.NOMAD_CLIENT_KEY || undefined,
    namespace: env.NOMAD_NAMESPACE || undefined,
    region: env.NOMAD_REGION || undefined,
  };
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}
