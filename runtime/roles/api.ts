import { registerAgentOutputRoutes } from '../api/agent-output-routes';
import { registerAgentRoutes, registerResourceClassRoutes } from '../api/agent-routes';
import { appendAudit } from '../audit/audit-log';
import { registerAuditRoutes } from '../audit/api-routes';
import { createHttpApp, listen, routesOf } from '../api/http-app';
import { registerV2Routes } from '../api/v2-routes';
import { registerV1Routes } from '../api/v1-routes';
import { registerGraphqlRoutes } from '../api/graphql/routes';
import { createCredentialCache } from '../identity/credential-cache';
import { createPipelineViewCache } from '../api/pipeline-view-cache';
import { registerRerunRoutes } from '../api/rerun-routes';
import { registerPipelineRoutes } from '../api/pipeline-routes';
import { collectRoutes, registerOpenApiRoute } from '../api/openapi';
import { registerConfigRoutes } from '../config/api-routes';
import { registerGitHubWebhookRoute } from '../github/routes';
import { createGitHubWebhooks } from '../github/webhooks';
import { DEFAULT_LIMITS } from '../config/yaml-loader';
import { registerIdentityRoutes } from '../identity/api-routes';
import { registerInsightsRoutes } from '../insights/api-routes';
import { createInsights } from '../insights/insights';
import { registerSignInRoutes } from '../identity/sign-in/routes';
import { registerSecretsRoutes } from '../secrets/api-routes';
import { registerOidcRoutes } from '../secrets/oidc-routes';
import { registerSshKeyRoutes } from '../secrets/ssh-key-routes';
import { registerNotificationRoutes } from '../notifications/api-routes';
import { registerHealthRoute } from '../ops/ops-routes';
import { registerOutputRoutes } from '../output/api-routes';
import { fileTimingsOfTask } from '../output/output-service';
import { registerRetentionRoutes } from '../retention/api-routes';
import { registerScheduleRoutes } from '../schedules/api-routes';
import { registerUiRoutes } from '../ui/routes';
import type { Role } from './role';

/** JSON around a config of the compiler's largest size (a string can double in size escaped). */
const MAX_CONFIG_BODY_BYTES = DEFAULT_LIMITS.maxChars * 2 + 64 * 1024;

/**
 * `api`: the REST API (CircleCI v2 shapes), the agent API that runners and Nomad agents call, and
 * the web UI, on GYRE_PORT (HTTPS with GYRE_TLS_CERT / GYRE_TLS_KEY).
 */
export const apiRole: Role = {
  name: 'api',
  async start(core) {
    const { settings, store, dispatcher, output } = core;
    const log = core.log.child({ role: 'api' });
    // Tokens and roles of the API's hot path, cleared by any change to them (credential-cache.ts).
    const credentials = await createCredentialCache({ identity: core.identity, store });
    // Answers of GET /pipeline/{id}, what clients poll, dropped by any change to them (pipeline-view-cache.ts).
    const pipelineViews = await createPipelineViewCache({ store });
    const app = await createHttpApp({
      log,
      limits: settings.http,
      tls: settings.tls,
      trustProxy: settings.trustProxy,
      metrics: core.metrics,
      credentials: {
        user: (token) => credentials.authenticate(token),
        session: (cookie) => core.signIn.session(cookie),
        task: (token) => core.tokens.verify(token),
        runner: (token) => core.resourceClasses.classOfRunnerToken(token),
      },
      access: credentials,
      auditLog: { append: (event) => appendAudit(store, event) },
    });
    // Every API v2 route from here on is in GET /api/v2/openapi.json.
    const described = collectRoutes(app);
    // A change made through this process is in force for its very next request, before any
    // NOTIFY arrives: a write that succeeded clears the caches as its answer goes out. Not the
    // agents' and runners' writes (output chunks, heartbeats, step reports, claims, many a second
    // while builds run): they change no token, role or pipeline row, and clearing on each would
    // leave the caches empty whenever anything is building. Nor a trigger's (`keepsCaches`): it
    // makes a new pipeline and changes nothing cached, and clearing on each made every trigger of
    // a busy project authenticate and authorise from the database again.
    app.addHook('onSend', async (request, reply, payload) => {
      const config = request.routeOptions.config ?? {};
      const auth = config.auth ?? 'user';
      if (request.method !== 'GET' && request.method !== 'HEAD' && reply.statusCode < 400 && auth !== 'task' && auth !== 'runner' && !config.keepsCaches) {
        credentials.clear();
        pipelineViews.clear();
      }
      return payload;
    });
    registerHealthRoute(app, { health: core.health, roles: [...core.roles] });
    registerV2Routes(app, { store, projects: core.projects, triggers: core.triggers, conductor: core.conductor, webUrl: core.webUrl, logs: core.logs, maxContinuationBytes: MAX_CONFIG_BODY_BYTES, pipelineViews });
    registerV1Routes(app, { store, projects: core.projects, logs: core.logs, webUrl: core.webUrl, signArtifact: (id) => output.signArtifact(id) });
    registerGraphqlRoutes(app, { orbs: core.orbs, compile: core.compile, maxBodyBytes: MAX_CONFIG_BODY_BYTES, log });
    registerRerunRoutes(app, { store, projects: core.projects, conductor: core.conductor });
    registerPipelineRoutes(app, { store, projects: core.projects, triggers: core.triggers });
    registerOpenApiRoute(app, described);
    registerOutputRoutes(app, { store, blobs: core.blobs, projects: core.projects, output, apiUrl: core.webUrl });
    registerRetentionRoutes(app, { store, projects: core.projects, defaultDays: settings.retentionDays });
    registerConfigRoutes(app, { orbs: core.orbs, compile: core.compile, maxConfigBytes: MAX_CONFIG_BODY_BYTES });
    const agentRoutes = await registerAgentRoutes(app, {
      store,
      dispatcher,
      tokens: core.tokens,
      resourceClasses: core.resourceClasses,
      leaseTtlMs: settings.leaseTtlMs,
      testTimings: (taskId) => fileTimingsOfTask(store, taskId),
      taskSecrets: core.taskSecrets,
    });
    await registerAgentOutputRoutes(app, { store, dispatcher, output: output.client });
    registerResourceClassRoutes(app, { resourceClasses: core.resourceClasses });
    registerIdentityRoutes(app, { identity: core.identity, projects: core.projects });
    registerAuditRoutes(app, { store });
    registerSignInRoutes(app, { signIn: core.signIn, publicUrl: settings.publicUrl, log });
    registerSecretsRoutes(app, { contexts: core.contexts, projects: core.projects, access: core.identity });
    registerSshKeyRoutes(app, { sshKeys: core.sshKeys, projects: core.projects });
    registerOidcRoutes(app, { issuer: core.oidc });
    registerScheduleRoutes(app, { schedules: core.schedules, projects: core.projects });
    registerNotificationRoutes(app, { webhooks: core.webhooks, projects: core.projects, access: core.identity });
    registerInsightsRoutes(app, { insights: createInsights({ store }), projects: core.projects });
    registerUiRoutes(app);
    if (core.github && settings.github) {
      // GitHub's deliveries: public, signed with the webhook secret (runtime/github/webhooks.ts).
      const webhooks = createGitHubWebhooks({ store, app: core.github, webhookSecret: settings.github.webhookSecret, projects: core.projects, triggers: core.triggers, forge: core.forge, log: log.child({ github: 'webhooks' }) });
      await registerGitHubWebhookRoute(app, { webhooks });
    }
    let http;
    try {
      http = await listen(app, settings.port, settings.host, Boolean(settings.tls));
    } catch (error) {
      await agentRoutes.close();
      await app.close();
      await credentials.close();
      await pipelineViews.close();
      throw error;
    }
    core.apiListening(http.url);
    return {
      url: http.url,
      routes: routesOf(app),
      async stop() {
        // Long polls and live log followers end first, so closing the listener does not wait on them.
        await agentRoutes.close();
        await http.close();
        await credentials.close();
        await pipelineViews.close();
      },
    };
  },
};
