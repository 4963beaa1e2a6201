import { createHttpApp, listen, type RouteInfo, type RunningHttpServer } from '../api/http-app';
import type { Logger } from '../logger';
import { registerOpsRoutes } from '../ops/ops-routes';
import { buildCore } from '../roles/core';
import { ROLES, START_ORDER } from '../roles/registry';
import type { RunningRole } from '../roles/role';
import type { Settings } from '../settings';
import { openStore } from '../store/open-store';
import type { Store } from '../store/store';
import { createExampleProject } from './example';
import { secureDataDir } from '../data-dir';

export interface Gyre {
  /** Where the API and UI listen, e.g. http://127.0.0.1:8080 (undefined without the api role). */
  readonly url?: string;
  /** The API listener's routes (empty without the api role). */
  readonly routes: readonly RouteInfo[];
  /** Where /healthz and /metrics are served (every process has it). */
  readonly opsUrl: string;
  readonly store: Store;
  /** The first admin's token, when this start created the admin. */
  readonly createdAdminToken?: string;
  /** The example pipeline started on first start, if any. */
  readonly example?: { slug: string; pipelineNumber: number; url: string };
  stop(): Promise<void>;
}

/**
 * The composition root of `gyre server`: opens the store, builds the core every role shares,
 * opens the ops listener every process has, and starts the roles the settings ask for in
 * START_ORDER. The role map is runtime/roles/registry.ts.
 */
export async function startGyre(settings: Settings, log: Logger): Promise<Gyre> {
  // Before anything is written there: the data directory and what Gyre keeps in it are its user's alone.
  await secureDataDir(settings.dataDir, log);
  const store = await openStore({ databaseUrl: settings.databaseUrl, dataDir: settings.databaseUrl ? undefined : settings.dataDir, migrations: settings.migrate ? 'apply' : 'check', warn: (message) => log.warn(message) });
  const running: RunningRole[] = [];
  let ops: RunningHttpServer | undefined;
  let closers: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const role of [...running].reverse()) await role.stop().catch((error) => log.error('role stop failed', { error: (error as Error).message }));
    await ops?.close().catch(() => undefined);
    for (const close of [...closers].reverse()) await close().catch(() => undefined);
    await store.close().catch(() => undefined);
  };
  try {
    const core = await buildCore(settings, log, store);
    closers = core.closers;
    const admin = await core.identity.ensureAdmin(settings.adminToken);

    const opsApp = await createHttpApp({ log: log.child({ listener: 'ops' }), limits: settings.http });
    let started = false;
    registerOpsRoutes(opsApp, { health: core.health, metrics: core.metrics, roles: [...settings.roles], metricsToken: settings.metricsToken, started: () => started });
    ops = await listen(opsApp, settings.opsPort, settings.opsHost, false);

    let url: string | undefined;
    let routes: readonly RouteInfo[] = [];
    for (const name of START_ORDER) {
      if (!settings.roles.has(name)) continue;
      const role = await ROLES[name].start(core);
      running.push(role);
      url ??= role.url;
      routes = role.routes ?? routes;
    }
    started = true;

    let example: Gyre['example'];
    if (settings.example && settings.roles.has('api')) {
      example = await createExampleProject({ store, projects: core.projects, triggers: core.triggers, dataDir: settings.dataDir, webUrl: core.webUrl(), log });
    }

    return {
      url,
      routes,
      opsUrl: ops.url,
      store,
      createdAdminToken: admin.created ? admin.token : undefined,
      example,
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
