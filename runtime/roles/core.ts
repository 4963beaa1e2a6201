import { join } from 'node:path';
import { openBlobStore } from '../blob/open-blob-store';
import type { BlobStore } from '../blob/blob-store';
import { createConductor, type CompileFn, type Conductor } from '../conductor/conductor';
import { createCompilerPool } from '../config/compiler-pool';
import { createOrbRegistry, type OrbRegistry } from '../config/orb-registry';
import { createDispatcher, type Dispatcher } from '../dispatcher/dispatcher';
import { createGitForge } from '../forge/git-forge';
import { createGitHubApp, gitTokenOf, type GitHubApp } from '../github/app';
import { createGitHubForge } from '../github/forge';
import { createGitHubStatuses, GITHUB_STATUS, workflowWebUrl } from '../github/statuses';
import type { OutboxHandler } from '../outbox/outbox';
import { createNotifierEvents } from '../notifications/events';
import { createWebhooks, type Webhooks } from '../notifications/webhooks';
import type { Forge } from '../forge/forge';
import { createIdentity, type Identity } from '../identity/identity';
import type { RoleSource } from '../identity/role-sources';
import { createSignInProviders } from '../identity/sign-in/providers';
import { createSignIn, type SignIn } from '../identity/sign-in/sign-in';
import { createContexts, type Contexts } from '../secrets/contexts';
import { createOidcPublisher } from '../secrets/oidc-publish';
import { createOidcIssuer, type OidcIssuer, type PutObject } from '../secrets/oidc-tokens';
import { createSecretBox, type SecretBox } from '../secrets/secret-box';
import { createSshKeys, type SshKeys } from '../secrets/ssh-keys';
import { createTaskSecrets, type TaskSecrets } from '../secrets/task-secrets';
import { createKeyWrapper } from '../secrets/settings';
import type { Logger } from '../logger';
import { registerExecutionMetrics, type ExecutionMetrics } from '../metrics/execution-metrics';
import { createMetrics, type Metrics } from '../metrics/metrics';
import { createHealth, type Health } from '../ops/health';
import { spoolDirOf } from '../data-dir';
import { createChunkChecker } from '../output/chunk-checker';
import { createLogStore, type LogStore } from '../output/logs';
import { createOutputService, type OutputService } from '../output/output-service';
import { createProjects, type Projects } from '../projects/projects';
import { createProjectCache } from '../projects/project-cache';
import { createSchedules, type Schedules } from '../schedules/schedules';
import { createNomadClient, type NomadClient } from '../scheduler/nomad-client';
import { createResourceClasses, type ResourceClasses } from '../scheduler/resource-classes';
import { createTaskTokens, loadTaskTokenSecret, type TaskTokens } from '../scheduler/task-token';
import type { Settings } from '../settings';
import type { Store } from '../store/store';
import { createTriggers, type Triggers } from '../triggers/triggers';
import type { RoleName } from './names';

/**
 * What every role is built from: the store and the services over it, made once per process by
 * `buildCore`, whichever roles the process runs. Services are plain objects over the store; only
 * roles start loops, listeners and drivers.
 */
export interface Core {
  readonly settings: Settings;
  readonly log: Logger;
  readonly roles: ReadonlySet<RoleName>;
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly forge: Forge;
  /**
   * The GitHub App, when it is configured (GYRE_GITHUB_APP_ID, …): its installations' clients and
   * tokens (`octokitFor`, runtime/github/app.ts), the forge's reads, the webhooks' route.
   */
  readonly github?: GitHubApp;
  readonly identity: Identity;
  /** Keepers of roles held outside Gyre (GitHub repository permissions), refreshed by the identity role. */
  readonly roleSources: readonly RoleSource[];
  /** Browser sessions and the sign-in providers configured (GitHub, OpenID Connect, LDAP). */
  readonly signIn: SignIn;
  /** Seals and opens secrets at rest (contexts' and projects' variables, OIDC signing keys). */
  readonly secretBox: SecretBox;
  /** Contexts and project environment variables. */
  readonly contexts: Contexts;
  /** OIDC tokens for jobs, and the per-organisation issuers' discovery and keys. */
  readonly oidc: OidcIssuer;
  /** Writes OIDC discovery documents to the public bucket (GYRE_JOB_OIDC_PUBLISH_BUCKET); unset when not configured. */
  readonly oidcPublisher?: PutObject;
  /** Projects' checkout keys and additional SSH keys. */
  readonly sshKeys: SshKeys;
  /** A task's secrets, opened for the agent that holds its lease. */
  readonly taskSecrets: TaskSecrets;
  readonly projects: Projects;
  readonly triggers: Triggers;
  /** Scheduled pipelines (API v2 schedules), fired by the cron role. */
  readonly schedules: Schedules;
  readonly metrics: Metrics;
  readonly executionMetrics: ExecutionMetrics;
  readonly logs: LogStore;
  readonly output: OutputService;
  readonly dispatcher: Dispatcher;
  readonly resourceClasses: ResourceClasses;
  readonly tokens: TaskTokens;
  readonly orbs: OrbRegistry;
  /** Compiles a config for a trigger (the conductor's and the API's compiler). */
  readonly compile: CompileFn;
  /** Starts the compiler's first worker now rather than on the first compilation's way (the conductor does at its start). */
  warmCompiler(): void;
  readonly conductor: Conductor;
  /**
   * The outbox's handlers by kind (runtime/outbox): what the sender in the conductor role
   * delivers. `github-status` with a GitHub App.
   */
  readonly outboxHandlers: Readonly<Record<string, OutboxHandler>>;
  /** Projects' outbound webhooks and email and Slack notifications (runtime/notifications; sent by the notifier role). */
  readonly webhooks: Webhooks;
  /** The Nomad cluster, when NOMAD_ADDR is set. */
  readonly nomad?: NomadClient;
  readonly health: Health;
  /** Where users reach Gyre: GYRE_PUBLIC_URL, else the API listener once it listens, else localhost. */
  webUrl(): string;
  /** The API role says where it listens (for `webUrl`). */
  apiListening(url: string): void;
  /** Things to close when the process stops, last made first. */
  readonly closers: (() => Promise<void>)[];
}

export async function buildCore(settings: Settings, log: Logger, store: Store): Promise<Core> {
  const closers: (() => Promise<void>)[] = [];
  const gitForge = createGitForge({ cacheDir: join(settings.dataDir, 'git-mirrors') });
  closers.push(async () => gitForge.close());
  // With a GitHub App, its repositories are read through GitHub's API as their installation.
  const github = settings.github ? createGitHubApp(settings.github, { store, log: log.child({ role: 'github' }) }) : undefined;
  const forge = github ? createGitHubForge({ app: github, fallback: gitForge }) : gitForge;
  const blobs = openBlobStore(settings.blobs, settings.dataDir);
  const outputLog = log.child({ role: 'output' });
  const spools = spoolDirOf(settings.dataDir);
  // Agents' chunks are checked in worker threads: inflating them here made this thread's heap collect (runtime/output/chunk-checker.ts).
  const checker = createChunkChecker({ log: outputLog });
  closers.push(() => checker.close());
  const logs = createLogStore({ store, blobs, log: outputLog, limitBytes: settings.jobOutputLimitBytes, spoolRoot: join(spools, 'logs'), checker });
  closers.push(() => logs.close());
  const metrics = createMetrics();
  const executionMetrics = registerExecutionMetrics(metrics);
  const dispatcher = createDispatcher({
    output: logs,
    store,
    config: { leaseTtlMs: settings.leaseTtlMs, maxAttempts: settings.maxAttempts, unservedClassTimeoutMs: settings.unservedClassTimeoutMs },
    log: log.child({ role: 'dispatcher' }),
    queueWait: executionMetrics.queueWait,
  });
  const orbs = createOrbRegistry({ store });
  // Configs compile in worker threads within their budgets, so a hostile one never stalls this thread.
  const { workers, ...compileLimits } = settings.compile;
  const compilerPool = createCompilerPool({ orbs, limits: compileLimits, workers, log: log.child({ role: 'compiler' }) });
  closers.push(() => compilerPool.close());
  const compile: CompileFn = (source, trigger) => compilerPool.compile(source, { trigger });
  const nomad = settings.nomad ? createNomadClient(settings.nomad) : undefined;
  let apiUrl: string | undefined;
  const webUrl = () => settings.publicUrl ?? apiUrl ?? `http://localhost:${settings.port}`;
  // Workflows report their status on the commit through the outbox (runtime/github/statuses.ts).
  const statuses = github ? createGitHubStatuses({ app: github, webUrl }) : undefined;
  // Webhooks, email and Slack on workflows' and jobs' ends, through the outbox (runtime/notifications).
  const notifierEvents = createNotifierEvents({ webUrl: (pipelineId, workflowId) => workflowWebUrl(webUrl(), pipelineId, workflowId) });
  const identity = createIdentity({ store });
  const signInProviders = createSignInProviders(settings.signIn, { store, log: log.child({ role: 'identity' }) });
  const signIn = createSignIn({
    store,
    identity,
    providers: signInProviders.providers,
    roleMaps: settings.signIn.roleMaps,
    session: settings.signIn.session,
    createUsers: settings.signIn.createUsers,
    afterSignIn: signInProviders.afterSignIn,
    log: log.child({ role: 'identity' }),
  });
  const secretBox = createSecretBox(createKeyWrapper(settings.secrets));
  const contexts = createContexts({ store, box: secretBox });
  const sshKeys = createSshKeys({ store, box: secretBox });
  // With GYRE_JOB_OIDC_PUBLISH_BUCKET, a new key is copied to the public bucket before it is stored
  // (so before anything signs with it). A bucket that refuses is logged, not fatal: jobs go on (most
  // never show their token to a cloud), and the contexts role publishes again hourly.
  const oidcPublisher = settings.oidc.publish ? createOidcPublisher(settings.oidc.publish) : undefined;
  const oidc: OidcIssuer = createOidcIssuer({
    store,
    box: secretBox,
    publicUrl: () => settings.oidc.issuerUrl ?? settings.publicUrl ?? apiUrl ?? `http://localhost:${settings.port}`,
    ...(oidcPublisher
      ? {
          publish: {
            put: oidcPublisher,
            failed: (orgId: string, error: Error) =>
              log.error("publishing an organisation's OIDC documents after a key change failed (cloud token services cannot verify its new key's tokens until the hourly publication works)", { org: orgId, error: error.message }),
          },
        }
      : {}),
  });
  // A new project's organisation gets its signing key now, in the background, rather than on the way
  // to its first job's first command. The process waits for keys being made before it closes the store.
  const preparing = new Set<Promise<void>>();
  closers.push(async () => void (await Promise.allSettled([...preparing])));
  const projects = createProjects({
    store,
    forge,
    onAdded: (project) => {
      const made = oidc.prepare(project.organizationId).catch((error: Error) => {
        log.warn("making the organisation's OIDC signing key ahead of its first job failed (that job makes it)", { org: project.org, error: error.message });
      });
      preparing.add(made);
      void made.finally(() => preparing.delete(made));
    },
  });
  // Every trigger reads its project first: kept in memory, dropped on any change (runtime/projects/project-cache.ts).
  const projectCache = await createProjectCache({ store, read: (slug) => projects.get(slug) });
  closers.push(() => projectCache.close());
  return {
    settings,
    log,
    roles: settings.roles,
    store,
    blobs,
    forge,
    github,
    identity,
    roleSources: signInProviders.roleSources,
    signIn,
    secretBox,
    contexts,
    oidc,
    oidcPublisher,
    sshKeys,
    taskSecrets: createTaskSecrets({ store, contexts, oidc, sshKeys, log: log.child({ role: 'secrets' }), ...(github ? { gitToken: gitTokenOf(github) } : {}) }),
    projects,
    triggers: createTriggers({ store, forge, projects: projectCache }),
    schedules: createSchedules({ store }),
    metrics,
    executionMetrics,
    logs,
    output: createOutputService({ store, blobs, log: outputLog, cacheTrust: settings.cacheTrust, spoolDir: join(spools, 'uploads') }),
    dispatcher,
    resourceClasses: createResourceClasses({ store }),
    tokens: createTaskTokens(await loadTaskTokenSecret(store, settings.agentSecret)),
    orbs,
    compile,
    warmCompiler: () => compilerPool.warm(),
    conductor: createConductor({ store, forge, compile, dispatcher, log: log.child({ role: 'conductor' }), continuationTtlMs: settings.continuationTtlMs, contexts,
      onWorkflow: async (tx, transition) => {
        await statuses?.onWorkflow(tx, transition);
        await notifierEvents.onWorkflow(tx, transition);
      },
      onJobsEnded: notifierEvents.onJobsEnded,
    }),
    outboxHandlers: statuses ? { [GITHUB_STATUS]: statuses.handler } : {},
    webhooks: createWebhooks({ store, box: secretBox, policy: settings.notifications.destinations }),
    nomad,
    // Nomad is a dependency only of the processes that submit jobs to it.
    health: createHealth({ store, blobs, nomad: settings.roles.has('scheduler') ? nomad : undefined }),
    webUrl,
    apiListening: (url) => {
      apiUrl = url;
    },
    closers,
  };
}
