import { App, GcsBackend, LocalBackend, S3Backend, TerraformStack } from 'cdktf';
import { ImageCatalog } from '../constructs/images';
import { EnvironmentDefinition, StateDefinition } from './environment';
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
    useStateBackend(infra, env.state);
    useStateBackend(server, env.state);
    return { infra, server };
  });
}

/**
 * The environment's state backend. Remote state is always encrypted: S3 with `encrypt` (and the
 * KMS key when given) and DynamoDB locking; GCS encrypts at rest and locks by itself. The server
 * stack reads the infra stack's outputs from the same backend. `local` keeps
 * `terraform.<stack>.tfstate` at the project root, spelled relative to the stack's directory
 * (cdktf.out/stacks/<stack>) so synthesized output does not depend on where it ran.
 */
function useStateBackend(stack: TerraformStack, state: StateDefinition): void {
  const id = stack.node.id;
  switch (state.backend) {
    case 's3':
      new S3Backend(stack, {
        bucket: state.bucket,
        key: `${state.keyPrefix}${id}.tfstate`,
        region: state.region,
        encrypt: true,
        kmsKeyId: state.kmsKeyId,
        dynamodbTable: state.dynamodbTable,
      });
      return;
    case 'gcs':
      new GcsBackend(stack, { bucket: state.bucket, prefix: `${state.prefix}${id}`, kmsEncryptionKey: state.kmsEncryptionKey });
      return;
    case 'local':
      new LocalBackend(stack, { path: `../../../terraform.${id}.tfstate` });
  }
}
