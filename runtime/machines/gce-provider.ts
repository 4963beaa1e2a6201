import type { InstancesClient } from '@google-cloud/compute';
import { machineName, type LaunchRequest, type MachineInstance, type MachineProvider } from './machine-provider';

export interface GceProviderOptions {
  readonly project: string;
  readonly zone: string;
  /**
   * Compute Engine's REST endpoint, for Private Service Connect or a stand-in. An `http://` one is
   * sent no credentials: a Google token never travels in clear text. @default https://compute.googleapis.com
   */
  readonly apiEndpoint?: string;
  /** What signs requests. @default - Application Default Credentials (Workload Identity in a cluster) */
  readonly authClient?: unknown;
}

/** Label keys (labels allow no `:`; values are lower-case, which task ids and installation ids are). */
export const GCE_LABELS = { installation: 'gyre-installation', task: 'gyre-task', attempt: 'gyre-attempt' } as const;

/** Signs nothing: for a plain-http endpoint (a stand-in), so no Google sign-in happens. */
const unsignedClient = {
  async getRequestHeaders() {
    return new Headers();
  },
  fetch(url: string, init: { method?: string; headers?: Headers; body?: string | Buffer; signal?: AbortSignal }) {
    return fetch(url, { method: init.method, headers: init.headers, body: init.body, signal: init.signal });
  },
};

/**
 * Machines on Google Compute Engine through the official client (`@google-cloud/compute`, REST
 * transport, loaded only when this provider is configured). Each image is an instance template;
 * the insert adds the machine type of the class, the labels the sweep finds it by, Spot VM
 * scheduling when asked, and the startup script that starts the agent. The metadata server
 * answers only requests with `Metadata-Flavor: Google`, GCE's counterpart of IMDSv2.
 */
export async function createGceProvider(options: GceProviderOptions): Promise<MachineProvider> {
  const compute = await import('@google-cloud/compute');
  const endpoint = options.apiEndpoint ? new URL(options.apiEndpoint) : undefined;
  const plain = endpoint?.protocol === 'http:';
  const client: InstancesClient = new compute.InstancesClient({
    fallback: true,
    ...(endpoint ? { apiEndpoint: endpoint.hostname, port: Number(endpoint.port) || (plain ? 80 : 443), protocol: plain ? 'http' : 'https' } : {}),
    ...(options.authClient ? { authClient: options.authClient } : plain ? { authClient: unsignedClient } : {}),
  } as ConstructorParameters<typeof compute.InstancesClient>[0]);
  const { project, zone } = options;
  const template = (t: string) => (/^(https:|projects\/|global\/|regions\/)/.test(t) ? t : `global/instanceTemplates/${t}`);

  return {
    name: 'gcp',
    async launch(request: LaunchRequest) {
      // The name is the attempt's: a retried insert is refused as a duplicate, never a second machine.
      const name = machineName(request.taskId, request.attempt);
      await client.insert({
        project,
        zone,
        sourceInstanceTemplate: template(request.template),
        instanceResource: {
          name,
          ...(request.instanceType ? { machineType: `zones/${zone}/machineTypes/${request.instanceType}` } : {}),
          labels: { [GCE_LABELS.installation]: request.installationId, [GCE_LABELS.task]: request.taskId.toLowerCase(), [GCE_LABELS.attempt]: String(request.attempt) },
          metadata: {
            items: [
              { key: 'startup-script', value: request.startupScript },
              { key: 'block-project-ssh-keys', value: 'true' },
            ],
          },
          ...(request.spot ? { scheduling: { provisioningModel: 'SPOT', instanceTerminationAction: 'DELETE', automaticRestart: false, onHostMaintenance: 'TERMINATE' } } : {}),
        },
      });
      return { id: name, taskId: request.taskId, attempt: request.attempt };
    },
    async destroy(instance) {
      try {
        await client.delete({ project, zone, instance: instance.id });
      } catch (error) {
        if ((error as { code?: number }).code === 404 || /not found/i.test((error as Error).message)) return;
        throw error;
      }
    },
    async list(installationId) {
      const found: MachineInstance[] = [];
      const instances = client.listAsync({ project, zone, filter: `labels.${GCE_LABELS.installation} = "${installationId}"` });
      for await (const i of instances) {
        // TERMINATED (stopped) instances still hold their disks: destroyed too.
        const labels = i.labels ?? {};
        found.push({ id: i.name ?? '', taskId: labels[GCE_LABELS.task] ?? '', attempt: Number(labels[GCE_LABELS.attempt]) || 0 });
      }
      return found;
    },
  };
}
