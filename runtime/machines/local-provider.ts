import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from '../logger';
import { MACHINE_TAGS, machineName, machineTags, type MachineInstance, type MachineProvider } from './machine-provider';

const run = promisify(execFile);

export interface LocalProviderOptions {
  readonly log: Logger;
  /** The container engine's CLI. @default GYRE_MACHINE_LOCAL_ENGINE or `podman` */
  readonly engine?: string;
}

/**
 * FOR DEVELOPMENT ONLY, off by default (GYRE_MACHINE_PROVIDER=local). A "machine" is a privileged
 * container of the image's template (an image with `gyre` on its PATH, such as the agent image)
 * on this host's network, running the same startup script a cloud machine gets. `--privileged`
 * gives the job root over this host's kernel, which the build isolation forbids everywhere else
 * (docs/security.md): never use it where builds are not trusted. It needs a container engine the
 * server's user may run privileged containers with (rootful Podman or Docker).
 */
export function createLocalProvider(options: LocalProviderOptions): MachineProvider {
  const engine = options.engine ?? process.env.GYRE_MACHINE_LOCAL_ENGINE ?? 'podman';
  const label = (key: string) => key.replace(':', '.');
  return {
    name: 'local',
    async launch(request) {
      const name = machineName(request.taskId, request.attempt);
      const labels = Object.entries(machineTags(request)).flatMap(([k, v]) => ['--label', `${label(k)}=${v}`]);
      await run(engine, ['run', '--detach', '--privileged', '--network', 'host', '--name', name, ...labels, '--user', '0', '--entrypoint', 'sh', request.template, '-c', request.startupScript]);
      options.log.warn('a machine job runs in a privileged local container (GYRE_MACHINE_PROVIDER=local, for development only)', { container: name });
      return { id: name, taskId: request.taskId, attempt: request.attempt };
    },
    async destroy(instance) {
      // Destroyed means killed now (Docker's `rm --force` kills at once; Podman's waits 10 s unless told not to).
      const args = engine.endsWith('podman') ? ['rm', '--force', '--ignore', '--time', '0', instance.id] : ['rm', '--force', instance.id];
      await run(engine, args).catch((error) => {
        if (!/no such container/i.test(String((error as { stderr?: string }).stderr ?? ''))) throw error;
      });
    },
    async list(installationId) {
      const { stdout } = await run(engine, ['ps', '--all', '--filter', `label=${label(MACHINE_TAGS.installation)}=${installationId}`, '--format', '{{json .Labels}}\t{{.Names}}']);
      const found: MachineInstance[] = [];
      for (const line of stdout.split('\n').filter(Boolean)) {
        const [json, names] = line.split('\t');
        const labels = JSON.parse(json) as Record<string, string>;
        found.push({ id: names.split(',')[0], taskId: labels[label(MACHINE_TAGS.task)] ?? '', attempt: Number(labels[label(MACHINE_TAGS.attempt)]) || 0 });
      }
      return found;
    },
  };
}
