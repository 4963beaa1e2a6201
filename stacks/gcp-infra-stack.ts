import { Construct } from 'constructs';
import { TerraformOutput, TerraformStack } from 'cdktf';
import { GoogleProvider } from '@cdktf/provider-google/lib/provider';
import { TlsProvider } from '@cdktf/provider-tls/lib/provider';
import { RandomProvider } from '@cdktf/provider-random/lib/provider';
import { GcpNetwork } from '../constructs/gcp/network';
import { GkeCluster } from '../constructs/gcp/gke-cluster';
import { GcsObjectStore } from '../constructs/gcp/gcs-object-store';
import { GcpSecretsKey } from '../constructs/gcp/secrets-key';
import { CloudSqlDatabase } from '../constructs/gcp/cloud-sql-database';
import { GcpNomadClients } from '../constructs/gcp/nomad-clients';
import { GcpBastion } from '../constructs/gcp/bastion';
import { NomadTls } from '../constructs/nomad-tls';
import { ComputeFirewall } from '@cdktf/provider-google/lib/compute-firewall';
import { AUTOSCALER_SERVICE_ACCOUNT, GYRE_NAMESPACE, RUNTIME_SERVICE_ACCOUNT, nomadServiceDnsNames } from '../constructs/types';
import { EnvironmentDefinition } from './environment';
import { GcpMachineExecutor } from '../constructs/gcp/machine-executor';
import { InfraOutputs } from './infra';
import { clientRegistryAuth } from './registry-auth';

export interface GcpInfraStackProps {
  readonly env: EnvironmentDefinition;
}

/** `<env>-infra` on GCP: network, GKE, GCS, Cloud SQL, Nomad clients, bastion and identities. */
export class GcpInfraStack extends TerraformStack {
  readonly outputs: InfraOutputs;

  constructor(scope: Construct, id: string, props: GcpInfraStackProps) {
    super(scope, id);
    const env = props.env;
    if (env.cloud !== 'gcp' || !env.project) throw new Error(`${env.file}: cloud (${env.cloud}) must be gcp, with project set, for GcpInfraStack`);
    const project = env.project;
    const name = `gyre-${env.name}`;

    new GoogleProvider(this, 'Google', { project, region: env.region, defaultLabels: { 'gyre-environment': env.name, 'managed-by': 'cdktf' } });
    new TlsProvider(this, 'Tls');
    new RandomProvider(this, 'Random');

    const network = new GcpNetwork(this, 'Network', { name, region: env.region, cidr: env.network.cidr });
    const cluster = new GkeCluster(this, 'Cluster', {
      clusterName: name,
      project,
      region: env.region,
      zones: env.zones,
      networkId: network.networkId,
      subnetworkId: network.subnetworkId,
      podsRangeName: network.podsRangeName,
      servicesRangeName: network.servicesRangeName,
      version: env.kubernetes.version,
      apiAllowedCidrs: env.kubernetes.apiAllowedCidrs,
      machineType: env.kubernetes.nodeInstanceType,
      minNodesPerZone: Math.max(1, Math.ceil(env.kubernetes.minNodes / env.zones.length)),
      maxNodesPerZone: Math.max(1, Math.ceil(env.kubernetes.maxNodes / env.zones.length)),
    });
    const store = new GcsObjectStore(this, 'ObjectStore', {
      bucketName: `${project}-${name}`,
      project,
      location: env.region,
      expireAfterDays: env.objectStore.expireAfterDays,
      corsOrigins: [`https://${env.domain}`],
    });
    const runtimeAccount = cluster.serviceAccountIdentity('RuntimeIdentity', GYRE_NAMESPACE, RUNTIME_SERVICE_ACCOUNT, `${name}-runtime`.slice(0, 30));
    store.grantReadWrite(runtimeAccount.member);
    // One key for every pod: a value one pod seals opens in all (unless the environment uses Vault).
    const secrets = env.secrets;
    const secretsKey = secrets.keyWrapper === 'gcp-kms'
      ? new GcpSecretsKey(this, 'SecretsWrappingKey', secrets.existingKey
        ? { project, location: env.region, keyRingName: name, cryptoKeyName: secrets.existingKey }
        : { project, location: env.region, keyRingName: name, rotationDays: secrets.rotationDays, destroyScheduledDays: secrets.deletionWindowDays })
      : undefined;
    secretsKey?.grantEncryptDecrypt(runtimeAccount.member);

    const database = env.database.mode === 'managed'
      ? new CloudSqlDatabase(this, 'Database', {
        name,
        project,
        region: env.region,
        networkId: network.networkId,
        tier: env.database.instanceClass,
        storageGb: env.database.storageGb,
        version: env.database.version,
      })
      : undefined;

    const nomadTls = new NomadTls(this, 'NomadTls', { serverDnsNames: [env.domain, ...nomadServiceDnsNames(GYRE_NAMESPACE)] });
    const clients = new GcpNomadClients(this, 'NomadClients', {
      name,
      project,
      region: env.region,
      zones: env.zones,
      networkId: network.networkId,
      subnetworkId: network.subnetworkId,
      internalCidrs: [network.cidr, network.podsCidr],
      tls: nomadTls,
      serverAddress: `${env.domain}:4647`,
      packageMirror: env.nomad.packageMirror,
      nomadVersion: env.nomad.nomadVersion,
      machineType: env.nomad.instanceType,
      minClients: env.nomad.minClients,
      maxClients: env.nomad.maxClients,
      sshRerunCidrs: env.access.sshRerunCidrs,
      blockedCidrs: env.nomad.blockedCidrs,
      registryAuth: clientRegistryAuth(this, env),
      registryMirrors: env.nomad.registryMirrors,
    });
    // After joining through the load balancer, clients dial the servers' advertised pod addresses
    // (alias ranges on the nodes).
    new ComputeFirewall(this, 'NomadRpcFromClients', {
      name: `${name}-nomad-rpc-to-pods`,
      project,
      network: network.networkId,
      direction: 'INGRESS',
      sourceTags: [clients.networkTag],
      targetTags: [cluster.nodeTag],
      allow: [{ protocol: 'tcp', ports: ['4647'] }],
    });
    const autoscalerAccount = cluster.serviceAccountIdentity('AutoscalerIdentity', GYRE_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT, `${name}-autoscaler`.slice(0, 30));
    clients.grantAutoscaling(autoscalerAccount.member);

    const bastion = new GcpBastion(this, 'Bastion', {
      name,
      project,
      zone: env.zones[0],
      networkId: network.networkId,
      subnetworkId: network.subnetworkId,
    });

    new TerraformOutput(this, 'cluster_name', { value: cluster.clusterName, description: 'GKE cluster; `gcloud container clusters get-credentials <this> --region <region>`' });
    // `machine:` jobs on a VM each (the machines role), when the environment maps images.
    const machines = env.machines
      ? new GcpMachineExecutor(this, 'Machines', {
        name: `${name}-machines`,
        project,
        zone: env.zones[0],
        networkId: network.networkId,
        subnetworkId: network.subnetworkId,
        images: env.machines.images,
        instanceTypes: env.machines.instanceTypes,
        spot: env.machines.spot,
        controlPlaneCidrs: env.machines.controlPlaneCidrs ?? [network.cidr],
        egressCidrs: env.machines.egressCidrs,
        diskGb: env.machines.diskGb,
      })
      : undefined;
    machines?.grantLaunch(runtimeAccount.member);

    new TerraformOutput(this, 'bucket_name', { value: store.bucketName, description: 'GCS bucket holding logs, artifacts, caches, workspaces and test results' });
    new TerraformOutput(this, 'nomad_client_group', { value: clients.instanceGroupManagerName, description: 'Managed instance group of Nomad clients' });
    new TerraformOutput(this, 'bastion_instance', { value: bastion.instanceName, description: '`gcloud compute ssh <this> --tunnel-through-iap` to reach the VPC' });
    if (database) new TerraformOutput(this, 'database_host', { value: database.host, description: 'Cloud SQL private address' });
    if (secretsKey) new TerraformOutput(this, 'secrets_key', { value: secretsKey.cryptoKeyName, description: 'Cloud KMS key that wraps the data keys of secrets (contexts, project variables, OIDC signing keys)' });

    this.outputs = {
      cloud: 'gcp',
      cluster,
      objectStore: store,
      secretsKey,
      databaseUrl: database?.url,
      databaseCa: database ? { source: 'pem', pem: database.caPem } : undefined,
      databaseCidrs: database ? [database.cidr] : undefined,
      nomadTls,
      runtimeIdentity: runtimeAccount.email,
      autoscalerIdentity: autoscalerAccount.email,
      autoscalerTarget: { driver: 'gce-mig', project, region: env.region, instanceGroupManagerName: clients.instanceGroupManagerName },
      internalCidrs: [network.cidr, network.podsCidr],
      ...(machines ? { machines: { provider: 'gcp' as const, installationId: name, config: machines.config } } : {}),
    };
  }
}
