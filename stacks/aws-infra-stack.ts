import { Construct } from 'constructs';
import { TerraformOutput, TerraformStack } from 'cdktf';
import { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { TlsProvider } from '@cdktf/provider-tls/lib/provider';
import { RandomProvider } from '@cdktf/provider-random/lib/provider';
import { AwsNetwork } from '../constructs/aws/network';
import { EksCluster } from '../constructs/aws/eks-cluster';
import { S3ObjectStore } from '../constructs/aws/s3-object-store';
import { AwsSecretsKey } from '../constructs/aws/secrets-key';
import { RdsDatabase } from '../constructs/aws/rds-database';
import { AwsNomadClients } from '../constructs/aws/nomad-clients';
import { AwsBastion } from '../constructs/aws/bastion';
import { AwsMachineExecutor } from '../constructs/aws/machine-executor';
import { NomadTls } from '../constructs/nomad-tls';
import { AUTOSCALER_SERVICE_ACCOUNT, GYRE_NAMESPACE, RUNTIME_SERVICE_ACCOUNT, nomadServiceDnsNames } from '../constructs/types';
import { CLUSTER_AUTOSCALER_SERVICE_ACCOUNT } from '../constructs/kubernetes/cluster-autoscaler';
import { RDS_CA_BUNDLE_IMAGE_PATH } from '../constructs/aws/rds-ca';
import { EnvironmentDefinition } from './environment';
import { InfraOutputs } from './infra';
import { clientRegistryAuth } from './registry-auth';

export interface AwsInfraStackProps {
  readonly env: EnvironmentDefinition;
}

/** `<env>-infra` on AWS: network, EKS, S3, RDS, Nomad clients, bastion and the cloud identities. */
export class AwsInfraStack extends TerraformStack {
  readonly outputs: InfraOutputs;

  constructor(scope: Construct, id: string, props: AwsInfraStackProps) {
    super(scope, id);
    const env = props.env;
    if (env.cloud !== 'aws') throw new Error(`${env.file}: cloud (${env.cloud}) must be aws for AwsInfraStack`);
    const name = `gyre-${env.name}`;

    new AwsProvider(this, 'Aws', { region: env.region, defaultTags: [{ tags: { 'gyre:environment': env.name, 'managed-by': 'cdktf' } }] });
    new TlsProvider(this, 'Tls');
    new RandomProvider(this, 'Random');

    const network = new AwsNetwork(this, 'Network', { name, zones: env.zones, cidr: env.network.cidr });
    const cluster = new EksCluster(this, 'Cluster', {
      clusterName: name,
      version: env.kubernetes.version,
      subnetIds: network.privateSubnetIds,
      apiAllowedCidrs: env.kubernetes.apiAllowedCidrs,
      nodeInstanceType: env.kubernetes.nodeInstanceType,
      minNodes: env.kubernetes.minNodes,
      desiredNodes: env.kubernetes.desiredNodes,
      maxNodes: env.kubernetes.maxNodes,
    });
    const store = new S3ObjectStore(this, 'ObjectStore', {
      bucketPrefix: `${name}-`,
      region: env.region,
      expireAfterDays: env.objectStore.expireAfterDays,
      corsOrigins: [`https://${env.domain}`],
    });
    const runtimeRole = cluster.serviceAccountRole('RuntimeRole', GYRE_NAMESPACE, RUNTIME_SERVICE_ACCOUNT, `${name}-runtime`);
    store.grantReadWrite(runtimeRole.name);
    // One key for every pod: a value one pod seals opens in all (unless the environment uses Vault).
    const secrets = env.secrets;
    const secretsKey = secrets.keyWrapper === 'aws-kms'
      ? new AwsSecretsKey(this, 'SecretsWrappingKey', secrets.existingKey
        ? { keyArn: secrets.existingKey }
        : { alias: `alias/${name}-secrets`, rotationDays: secrets.rotationDays, deletionWindowDays: secrets.deletionWindowDays, description: `Gyre ${env.name}: wraps the data keys of secrets` })
      : undefined;
    secretsKey?.grantEncryptDecrypt(runtimeRole.name);

    const database = env.database.mode === 'managed'
      ? new RdsDatabase(this, 'Database', {
        name,
        region: env.region,
        vpcId: network.vpcId,
        subnetIds: network.privateSubnetIds,
        allowedCidrs: [network.cidr],
        instanceClass: env.database.instanceClass,
        storageGb: env.database.storageGb,
        version: env.database.version,
      })
      : undefined;

    const nomadTls = new NomadTls(this, 'NomadTls', { serverDnsNames: [env.domain, ...nomadServiceDnsNames(GYRE_NAMESPACE)] });
    const clients = new AwsNomadClients(this, 'NomadClients', {
      name: `${name}-nomad`,
      vpcId: network.vpcId,
      vpcCidr: network.cidr,
      subnetIds: network.privateSubnetIds,
      tls: nomadTls,
      serverAddress: `${env.domain}:4647`,
      packageMirror: env.nomad.packageMirror,
      nomadVersion: env.nomad.nomadVersion,
      instanceType: env.nomad.instanceType,
      minClients: env.nomad.minClients,
      maxClients: env.nomad.maxClients,
      sshRerunCidrs: env.access.sshRerunCidrs,
      blockedCidrs: env.nomad.blockedCidrs,
      registryAuth: clientRegistryAuth(this, env),
      registryMirrors: env.nomad.registryMirrors,
    });
    // After joining through the load balancer, clients dial the servers' advertised pod addresses.
    cluster.allowPodPortFrom('NomadRpcFromClients', clients.securityGroupId, 4647, 'Nomad RPC from the Nomad clients to the server pods');
    const autoscalerRole = cluster.serviceAccountRole('AutoscalerRole', GYRE_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT, `${name}-nomad-autoscaler`);
    clients.grantAutoscaling(autoscalerRole.name);

    const bastion = new AwsBastion(this, 'Bastion', {
      name,
      vpcId: network.vpcId,
      subnetId: env.access.bastionCidrs.length > 0 ? network.publicSubnetIds[0] : network.privateSubnetIds[0],
      sshAllowedCidrs: env.access.bastionCidrs,
    });
    // The operator's path to a private API endpoint: the bastion reaches it and may administer.
    cluster.allowApiAccessFrom('BastionApiAccess', bastion.securityGroupId);
    cluster.grantClusterAdmin('BastionAccess', bastion.roleArn);
    // `machine:` jobs on a VM each (the machines role), when the environment maps images.
    const machines = env.machines
      ? new AwsMachineExecutor(this, 'Machines', {
        name: `${name}-machines`,
        installationId: name,
        region: env.region,
        vpcId: network.vpcId,
        subnetIds: network.privateSubnetIds,
        images: env.machines.images,
        instanceTypes: env.machines.instanceTypes,
        spot: env.machines.spot,
        controlPlaneCidrs: env.machines.controlPlaneCidrs ?? [network.cidr],
        egressCidrs: env.machines.egressCidrs,
        diskGb: env.machines.diskGb,
      })
      : undefined;
    machines?.grantLaunch(runtimeRole.name);
    const clusterAutoscalerRole = cluster.clusterAutoscalerRole('ClusterAutoscalerRole', CLUSTER_AUTOSCALER_SERVICE_ACCOUNT, `${name}-cluster-autoscaler`);

    new TerraformOutput(this, 'cluster_name', { value: cluster.clusterName, description: 'EKS cluster; `aws eks update-kubeconfig --name <this>` for kubectl' });
    new TerraformOutput(this, 'bucket_name', { value: store.bucketName, description: 'S3 bucket holding logs, artifacts, caches, workspaces and test results' });
    new TerraformOutput(this, 'nomad_client_group', { value: clients.autoScalingGroupName, description: 'Auto Scaling group of Nomad clients (scaled by nomad-autoscaler)' });
    new TerraformOutput(this, 'bastion_instance_id', { value: bastion.instanceId, description: '`aws ssm start-session --target <this>` to reach the VPC' });
    if (database) new TerraformOutput(this, 'database_host', { value: database.host, description: 'RDS PostgreSQL address (private)' });
    if (secretsKey) new TerraformOutput(this, 'secrets_key', { value: secretsKey.keyArn, description: 'KMS key that wraps the data keys of secrets (contexts, project variables, OIDC signing keys)' });

    this.outputs = {
      cloud: 'aws',
      cluster,
      objectStore: store,
      secretsKey,
      databaseUrl: database?.url,
      databaseCa: database ? { source: 'image', path: RDS_CA_BUNDLE_IMAGE_PATH } : undefined,
      databaseCidrs: database ? [network.cidr] : undefined,
      clusterAutoscalerIdentity: clusterAutoscalerRole.arn,
      nomadTls,
      runtimeIdentity: runtimeRole.arn,
      autoscalerIdentity: autoscalerRole.arn,
      autoscalerTarget: { driver: 'aws-asg', region: env.region, autoScalingGroupName: clients.autoScalingGroupName },
      internalCidrs: [network.cidr],
      ...(machines ? { machines: { provider: 'aws' as const, installationId: name, config: machines.config } } : {}),
    };
  }
}
