import { createStepHandlers } from '../agent/steps';
import { createOutputStepHandlers } from '../agent/steps/output-steps';
import { createBuiltinDriver } from '../scheduler/builtin-driver';
import type { Driver } from '../scheduler/driver';
import { createNomadDriver } from '../scheduler/nomad-driver';
import { leasedClient } from '../output/output-client';
import { NO_MACHINE_TASKS } from '../machines/machine-tasks';
import type { Role } from './role';

/**
 * `scheduler`: the drivers that start task agents: the built-in runner (GYRE_RUNNER_SLOTS task
 * slots in this process; 0 in a cluster, where builds never run beside the control plane) and the
 * Nomad driver (when NOMAD_ADDR is set).
 */
export const schedulerRole: Role = {
  name: 'scheduler',
  async start(core) {
    const { settings, store, dispatcher } = core;
    const log = core.log.child({ role: 'scheduler' });
    const drivers: Driver[] = [];
    try {
      if (settings.runnerSlots > 0) {
        const builtin = createBuiltinDriver({
          store,
          dispatcher,
          log,
          slots: settings.runnerSlots,
          workRoot: settings.workDir,
          executor: settings.executor,
          leaseTtlMs: settings.leaseTtlMs,
          // Where this process's machine driver runs `machine:` jobs, the built-in slots leave them to it.
          resourceClasses: settings.machines && core.roles.has('machines') ? ['*', NO_MACHINE_TASKS] : ['*'],
          heartbeatMs: Math.max(100, Math.floor(settings.leaseTtlMs / 3)),
          webUrl: core.webUrl(),
          // Each task's file steps write through a client bound to its lease: fenced, and stamped with its attempt.
          handlers: (lease) => createStepHandlers(createOutputStepHandlers(leasedClient(core.output.client, lease))),
          taskSecrets: core.taskSecrets,
        });
        await builtin.start();
        drivers.push(builtin);
      }
      if (core.nomad) {
        const nomad = createNomadDriver({
          store,
          dispatcher,
          resourceClasses: core.resourceClasses,
          tokens: core.tokens,
          nomad: core.nomad,
          log: log.child({ driver: 'nomad' }),
          gyreUrl: settings.agentCallbackUrl ?? core.webUrl(),
          agentImage: settings.agentImage,
          jobTemplate: settings.nomadJobTemplate,
          engineSocket: settings.nomadEngineSocket,
        });
        await nomad.start();
        drivers.push(nomad);
      }
    } catch (error) {
      for (const d of drivers.reverse()) await d.stop().catch(() => undefined);
      throw error;
    }
    return {
      async stop() {
        for (const d of drivers) await d.stop();
      },
    };
  },
};
