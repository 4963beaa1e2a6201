import { randomUUID } from 'node:crypto';
import type { Store } from '../store/store';
import type { MachineProvider } from './machine-provider';
import type { MachineSettings } from './machine-settings';

/**
 * The provider GYRE_MACHINE_PROVIDER names. Each cloud's SDK is imported here, lazily, so a
 * process that runs no machines never loads either.
 */
export async function openMachineProvider(settings: MachineSettings, local?: () => Promise<MachineProvider>): Promise<MachineProvider> {
  switch (settings.provider) {
    case 'aws': {
      const { createEc2Provider } = await import('./ec2-provider');
      return createEc2Provider({ region: settings.aws!.region, subnetIds: settings.aws!.subnetIds, endpoint: settings.aws!.endpoint });
    }
    case 'gcp': {
      const { createGceProvider } = await import('./gce-provider');
      return createGceProvider({ project: settings.gcp!.project, zone: settings.gcp!.zone, apiEndpoint: settings.gcp!.apiEndpoint });
    }
    case 'local':
      if (!local) throw new Error('the local machine provider is not available in this process');
      return local();
  }
}

/**
 * The id this installation's machines are tagged with: GYRE_INSTALLATION_ID, else one generated
 * once and kept in the database, so every replica (and the next release) sweeps the same machines
 * and never another installation's in the same account.
 */
export async function loadInstallationId(store: Store, configured?: string): Promise<string> {
  if (configured) return configured;
  await store.query(`INSERT INTO execution_secrets (name, value) VALUES ('installation_id', $1) ON CONFLICT (name) DO NOTHING`, [randomUUID()]);
  const [row] = await store.query<{ value: string }>(`SELECT value FROM execution_secrets WHERE name = 'installation_id'`);
  return row.value;
}
