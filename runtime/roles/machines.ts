import { createMachineDriver } from '../machines/machine-driver';
import { loadInstallationId, openMachineProvider } from '../machines/open-provider';
import type { Role } from './role';

/**
 * `machines`: the machine executor (runtime/machines, docs/execution.md#the-machine-executor).
 * With GYRE_MACHINE_PROVIDER set it runs the tasks of `machine:` jobs each on a virtual machine of
 * its own (EC2, Compute Engine, or the local development provider) and sweeps machines whose task
 * ended; without it, it does nothing and `machine:` jobs run on the built-in runner's shell.
 */
export const machinesRole: Role = {
  name: 'machines',
  async start(core) {
    const machines = core.settings.machines;
    if (!machines) return { async stop() {} };
    const log = core.log.child({ role: 'machines', provider: machines.provider });
    const provider = await openMachineProvider(machines, async () => {
      const { createLocalProvider } = await import('../machines/local-provider');
      return createLocalProvider({ log });
    });
    const driver = createMachineDriver({
      store: core.store,
      dispatcher: core.dispatcher,
      tokens: core.tokens,
      provider,
      log,
      gyreUrl: core.settings.agentCallbackUrl ?? core.webUrl(),
      installationId: await loadInstallationId(core.store, machines.installationId),
      // The local provider with no image map runs every machine job in the agent image.
      images: machines.provider === 'local' && Object.keys(machines.images).length === 0 ? { '*': core.settings.agentImage } : machines.images,
      instanceTypes: machines.instanceTypes,
      spot: machines.spot,
      sweepMs: machines.sweepMs,
      bootTimeoutMs: machines.bootTimeoutMs,
      maxMachines: machines.maxMachines,
    });
    await driver.start();
    return { stop: () => driver.stop() };
  },
};
