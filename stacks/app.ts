import { App, LocalBackend, TerraformStack } from 'cdktf';
import { ImageCatalog } from '../constructs/images';
import { EnvironmentDefinition } from './environment';
import { AwsInfraStack } from './aws-infra-stack';
import { GcpInfraStack } from './gcp-infra-stack';
import { ServerStack } from './server-stack';
import { InfraOutputs } from './infra';

/** The two stacks of one environment. */
export interface EnvironmentStacks {
  readonly infra: AwsInfraStack | GcpInfraStack;
  readonly server: ServerStack;
}

/**
 * Adds `<env>-infra` and `<env>-server` for each environment. Stack names are part of the contract
 * (each is its own Terraform state): renaming one orphans real infrastructure.
 */
export function addEnvironments(app: App, envs: EnvironmentDefinition[]): EnvironmentStacks[] {
  const seen = new Map<string, string>();
  return envs.map((env) => {
    const other = seen.get(env.name);
    if (other) throw new Error(`${env.file}: name (${env.name}) is already used by ${other}; environment names must be unique`);
    seen.set(env.name, env.file);
    const infra = env.cloud === 'aws'
      ? new AwsInfraStack(app, `${env.name}-infra`, { env })
      : new GcpInfraStack(app, `${env.name}-infra`, { env });
    const outputs: InfraOutputs = infra.outputs;
    const images = new ImageCatalog({ registry: env.registry, gyreTag: env.imageTag, helmRepository: env.helmRepository });
    const server = new ServerStack(app, `${env.name}-server`, { env, images, infra: outputs });
    server.addDependency(infra);
    useProjectStateFile(infra);
    useProjectStateFile(server);
    return { infra, server };
  });
}

/**
 * State in `terraform.<stack>.tfstate` at the project root, spelled relative to the stack's
 * directory (cdktf.out/stacks/<stack>) so synthesized output does not depend on where it ran.
 * Production installs replace this with an S3 or GCS backend (docs/deploying.md).
 */
function useProjectStateFile(stack: TerraformStack): void {
  new LocalBackend(stack, { path: `../../../terraform.${stack.node.id}.tfstate` });
}
