import { join } from 'node:path';
import { startHttpServer, type RunningHttpServer } from '../api/http-server';
import { Router } from '../api/router';
import { registerV2Routes } from '../api/v2-routes';
import { openBlobStore } from '../blob/open-blob-store';
import { createStepHandlers } from '../agent/steps';
import { createOutputStepHandlers } from '../agent/steps/output-steps';
import { registerOutputRoutes } from '../output/api-routes';
import { createLogStore } from '../output/logs';
import { createOutputService } from '../output/output-service';
import { createConductor, type CompileFn } from '../conductor/conductor';
import { CHANNELS, createDispatcher } from '../dispatcher/dispatcher';
import { createGitForge } from '../forge/git-forge';
import { createIdentity } from '../identity/identity';
import type { Logger } from '../logger';
import { createProjects } from '../projects/projects';
import { createBuiltinDriver } from '../scheduler/builtin-driver';
import type { Driver } from '../scheduler/driver';
import type { Settings } from '../settings';
import { openStore } from '../store/open-store';
import type { Store } from '../store/store';
import { createTriggers, PIPELINE_CREATED } from '../triggers/triggers';
import { registerUiRoutes } from '../ui/routes';
import { createExampleProject } from './example';
import { registerConfigRoutes } from '../config/api-routes';
import { compileConfig, createOrbDocumentCache } from '../config/compiler';
import { createOrbRegistry } from '../config/orb-registry';
import { registerAgentRoutes, registerResourceClassRoutes } from '../api/agent-routes';
import { registerAgentOutputRoutes } from '../api/agent-output-routes';
import { createMetrics } from '../metrics/metrics';
import { registerExecutionMetrics } from '../metrics/execution-metrics';
import { createResourceClasses } from '../scheduler/resource-classes';
import { createTaskTokens, loadTaskTokenSecret } from '../scheduler/task-token';
import { createNomadClient } from '../scheduler/nomad-client';
import { createNomadDriver } from '../scheduler/nomad-driver';

export interface Gyre {
  /** Where the API and UI listen, e.g. http://127.0.0.1:8080 (undefined without the api role). */
  readonly url?: string;
  readonly store: Store;
  /** The first admin's token, when this start created the admin. */
  readonly createdAdminToken?: string;
  /** The example pipeline started on first start, if any. */
  readonly example?: { slug: string; pipelineNumber: number; url: string };
  stop(): Promise<void>;
}

/**
 * The composition root of `gyre server`: opens the store, builds each role from its dependencies
 * and starts the roles the settings ask for. Everything else receives what it needs from here.
 */
export async function startGyre(settings: Settings, log: Logger): Promise<Gyre> {
  const store = await openStore({ databaseUrl: settings.databaseUrl, dataDir: settings.databaseUrl ? undefined : settings.dataDir });
  const stops: (() => Promise<void>)[] = [];
  const timers: NodeJS.Timeout[] = [];
  try {
    const forge = createGitForge({ cacheDir: join(settings.dataDir, 'git-mirrors') });
    const identity = createIdentity({ store });
    const projects = createProjects({ store, forge });
    const triggers = createTriggers({ store, forge, projects });
    const metrics = createMetrics();
    const blobs = openBlobStore(settings.blobs, settings.dataDir);
    const outputLog = log.child({ role: 'output' });
    const logs = createLogStore({ store, blobs, log: outputLog, limitBytes: settings.jobOutputLimitBytes });
    stops.push(() => logs.close());
    const output = createOutputService({ store, blobs, log: outputLog });
    const dispatcher = createDispatcher({
      output: logs,
      store,
      config: { leaseTtlMs: settings.leaseTtlMs, maxAttempts: settings.maxAttempts },
      log: log.child({ role: 'dispatcher' }),
      queueWait: registerExecutionMetrics(metrics, store),
    });
    const resourceClasses = createResourceClasses({ store });
    const tokens = createTaskTokens(await loadTaskTokenSecret(store, settings.agentSecret));
    const orbs = createOrbRegistry({ store });
    // Parsed orbs are kept between compilations: a published orb version never changes.
    const orbCache = createOrbDocumentCache();
    const compile: CompileFn = (source, trigger) => compileConfig(source, { trigger, orbs, orbCache });
    const conductor = createConductor({
      store,
      forge,
      compile,
      dispatcher,
      log: log.child({ role: 'conductor' }),
      continuationTtlMs: settings.continuationTtlMs,
    });
    const admin = await identity.ensureAdmin(settings.adminToken);
    const roles = settings.roles;

    if (roles.has('dispatcher')) {
      // The embedded store has one owner, this process: a lease its built-in runner held belongs to
      // a previous run that died (and its steps with it), so end those attempts now instead of
      // waiting for their expiry. Remote runners' leases run their course.
      if (store.kind === 'pglite') await dispatcher.reapExpiredLeases({ heldBy: 'builtin' });
      timers.push(
        setInterval(() => {
          dispatcher.reapExpiredLeases().catch((error) => log.error('lease reaper failed', { error: (error as Error).message }));
        }, Math.max(250, Math.min(5000, settings.leaseTtlMs / 4))),
      );
    }

    if (roles.has('conductor')) {
      const onError = (what: string) => (error: unknown) => log.error(what, { error: (error as Error).message });
      stops.push(await store.listen(PIPELINE_CREATED, (id) => void conductor.startPipeline(id).catch(onError('pipeline start failed'))));
      stops.push(await store.listen(CHANNELS.jobFinished, (id) => void conductor.jobFinished(id).catch(onError('workflow advance failed'))));
      await conductor.sweep().catch(onError('sweep failed'));
      timers.push(setInterval(() => void conductor.sweep().catch(onError('sweep failed')), 5000));
    }

    if (roles.has('output')) {
      // Expired caches are never restored; the sweep frees their rows and blobs, and forgets the
      // request keys of old writes (also at start, so a process that restarts more often than the
      // interval still sweeps).
      const sweepOutput = () =>
        Promise.all([
          output.sweepExpiredCaches().catch((error) => log.error('cache sweep failed', { error: (error as Error).message })),
          output.forgetOldRequests().catch((error) => log.error('forgetting old output request keys failed', { error: (error as Error).message })),
        ]);
      await sweepOutput();
      timers.push(setInterval(() => void sweepOutput(), 10 * 60_000));
    }

    let http: RunningHttpServer | undefined;
    let url: string | undefined;
    const webUrl = () => settings.publicUrl ?? url ?? `http://localhost:${settings.port}`;
    if (roles.has('api')) {
      const router = new Router();
      router.get('/healthz', async () => ({ json: { status: 'ok' } }), { public: true });
      registerV2Routes(router, { store, projects, triggers, conductor, webUrl, logs });
      registerOutputRoutes(router, { store, blobs, projects, output, apiUrl: webUrl });
      registerConfigRoutes(router, { orbs });
      const tokens = createTaskTokens(await loadTaskTokenSecret(store, settings.agentSecret));
      const agentRoutes = await registerAgentRoutes(router, { store, dispatcher, tokens, resourceClasses, leaseTtlMs: settings.leaseTtlMs });
      stops.push(() => agentRoutes.close());
      registerAgentOutputRoutes(router, { store, dispatcher, tokens, output: output.client });
      registerResourceClassRoutes(router, { resourceClasses });
      router.get('/metrics', async () => ({ text: await metrics.render(), contentType: 'text/plain; version=0.0.4; charset=utf-8' }), { public: true });
      registerUiRoutes(router);
      http = await startHttpServer({ router, authenticate: (t) => identity.authenticate(t), log: log.child({ role: 'api' }) }, settings.port, settings.host);
      url = `http://${settings.host === '0.0.0.0' || settings.host === '::' ? 'localhost' : settings.host}:${http.port}`;
      stops.push(() => http!.close());
    }

    let driver: Driver | undefined;
    if (roles.has('scheduler') && settings.runnerSlots > 0) {
      driver = createBuiltinDriver({
        store,
        dispatcher,
        log: log.child({ role: 'scheduler' }),
        slots: settings.runnerSlots,
        workRoot: settings.workDir,
        executor: settings.executor,
        leaseTtlMs: settings.leaseTtlMs,
        resourceClasses: ['*'],
        heartbeatMs: Math.max(100, Math.floor(settings.leaseTtlMs / 3)),
        webUrl: webUrl(),
        handlers: createStepHandlers(createOutputStepHandlers(output.client)),
      });
      await driver.start();
    }

    let nomadDriver: Driver | undefined;
    if (roles.has('scheduler') && settings.nomad) {
      nomadDriver = createNomadDriver({
        store,
        dispatcher,
        resourceClasses,
        tokens,
        nomad: createNomadClient(settings.nomad),
        log: log.child({ role: 'scheduler', driver: 'nomad' }),
        gyreUrl: settings.agentCallbackUrl ?? webUrl(),
        agentImage: settings.agentImage,
        jobTemplate: settings.nomadJobTemplate,
      });
      await nomadDriver.start();
    }

    let example: Gyre['example'];
    if (settings.example && roles.has('api') && roles.has('triggers')) {
      example = await createExampleProject({ store, projects, triggers, dataDir: settings.dataDir, webUrl: webUrl(), log });
    }

    return {
      url,
      store,
      createdAdminToken: admin.created ? admin.token : undefined,
      example,
      async stop() {
        for (const timer of timers) clearInterval(timer);
        await driver?.stop();
        await nomadDriver?.stop();
        for (const stop of stops.reverse()) await stop().catch(() => undefined);
        await store.close();
      },
    };
  } catch (error) {
    for (const timer of timers) clearInterval(timer);
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw error;
  }
}
