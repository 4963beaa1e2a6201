import { Construct } from 'constructs';
import { Fn, TerraformOutput, TerraformStack, TerraformVariable } from 'cdktf';
import { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { DataAwsEksClusterAuth } from '@cdktf/provider-aws/lib/data-aws-eks-cluster-auth';
import { GoogleProvider } from '@cdktf/provider-google/lib/provider';
import { DataGoogleClientConfig } from '@cdktf/provider-google/lib/data-google-client-config';
import { KubernetesProvider } from '@cdktf/provider-kubernetes/lib/provider';
import { StorageClassV1 } from '@cdktf/provider-kubernetes/lib/storage-class-v1';
import { HelmProvider } from '@cdktf/provider-helm/lib/provider';
import { RandomProvider } from '@cdktf/provider-random/lib/provider';
import { TlsProvider } from '@cdktf/provider-tls/lib/provider';
import { ImageCatalog } from '../constructs/images';
import { ControlPlane, EdgeTls } from '../constructs/kubernetes/control-plane';
import { NomadServers } from '../constructs/kubernetes/nomad-servers';
import { NomadAutoscaler } from '../constructs/kubernetes/nomad-autoscaler';
import { MetricsServer } from '../constructs/kubernetes/metrics-server';
import { EnvironmentDefinition } from './environment';
import { InfraOutputs } from './infra';

export interface ServerStackProps {
  readonly env: EnvironmentDefinition;
  readonly images: ImageCatalog;
  /** The matching `<env>-infra` stack's outputs. */
  readonly infra: InfraOutputs;
}

/**
 * `<env>-server`: the control plane, Nomad servers, nomad-autoscaler and third-party charts on the
 * cluster the infra stack made. Deploy it after `<env>-infra`; re-deploy it to upgrade Gyre.
 */
export class ServerStack extends TerraformStack {
  constructor(scope: Construct, id: string, props: ServerStackProps) {
    super(scope, id);
    const { env, infra, images } = props;
    const cluster = infra.cluster;

    let token: string;
    if (infra.cloud === 'aws') {
      new AwsProvider(this, 'Aws', { region: env.region });
      token = new DataAwsEksClusterAuth(this, 'ClusterAuth', { name: cluster.clusterName }).token;
    } else {
      new GoogleProvider(this, 'Google', { project: env.project, region: env.region });
      token = new DataGoogleClientConfig(this, 'ClientConfig').accessToken;
    }
    const connection = { host: cluster.endpoint, clusterCaCertificate: Fn.base64decode(cluster.caCertificate), token };
    new KubernetesProvider(this, 'Kubernetes', connection);
    new HelmProvider(this, 'Helm', { kubernetes: connection });
    new RandomProvider(this, 'Random');
    new TlsProvider(this, 'Tls');

    let databaseUrl = infra.databaseUrl;
    if (databaseUrl === undefined) {
      databaseUrl = new TerraformVariable(this, 'database_url', {
        type: 'string',
        sensitive: true,
        description: 'postgres:// URL of the operator-supplied database (set TF_VAR_database_url)',
      }).stringValue;
    }

    let storageClassName = 'standard-rwo';
    if (infra.cloud === 'aws') {
      new StorageClassV1(this, 'EncryptedGp3', {
        metadata: { name: 'gyre-gp3' },
        storageProvisioner: 'ebs.csi.aws.com',
        parameters: { type: 'gp3', encrypted: 'true' },
        reclaimPolicy: 'Retain',
        volumeBindingMode: 'WaitForFirstConsumer',
        allowVolumeExpansion: true,
      });
      storageClassName = 'gyre-gp3';
      new MetricsServer(this, 'MetricsServer', { images });
    }

    const tls: EdgeTls = env.tls.mode === 'acm'
      ? { mode: 'acm', certificateArn: env.tls.certificateArn! }
      : env.tls.mode === 'provided'
        ? { mode: 'provided', certificateFile: env.tls.certificateFile!, keyFile: env.tls.keyFile! }
        : { mode: 'self-signed' };

    const controlPlane = new ControlPlane(this, 'ControlPlane', {
      images,
      domain: env.domain,
      cloud: infra.cloud,
      databaseUrl,
      blobEnvironment: infra.objectStore.runtimeEnvironment,
      serviceAccountAnnotations: cluster.identityAnnotation(infra.runtimeIdentity),
      tls,
      nomad: { caPem: infra.nomadTls.caPem, clientCertPem: infra.nomadTls.client.certPem, clientKeyPem: infra.nomadTls.client.keyPem },
      loadBalancerSourceRanges: [...env.access.uiCidrs, ...infra.internalCidrs],
      replicas: env.replicas,
    });

    const nomad = new NomadServers(this, 'NomadServers', {
      namespace: controlPlane.namespace,
      images,
      caPem: infra.nomadTls.caPem,
      serverCertPem: infra.nomadTls.server.certPem,
      serverKeyPem: infra.nomadTls.server.keyPem,
      gossipKey: infra.nomadTls.gossipKey,
      storageClassName,
      region: infra.nomadTls.region,
    });

    new NomadAutoscaler(this, 'NomadAutoscaler', {
      namespace: controlPlane.namespace,
      images,
      nomadAddress: nomad.address,
      nomadTlsSecretName: 'gyre-nomad-client-tls',
      target: infra.autoscalerTarget,
      minClients: env.nomad.minClients,
      maxClients: env.nomad.maxClients,
      serviceAccountAnnotations: cluster.identityAnnotation(infra.autoscalerIdentity),
    });

    const ingress = controlPlane.loadBalancer.status.get(0).loadBalancer.get(0).ingress;
    new TerraformOutput(this, 'load_balancer_address', {
      value: Fn.coalesce([ingress.get(0).hostname, ingress.get(0).ip]),
      description: `Point DNS for ${env.domain} at this address (UI/API on 80/443; Nomad clients use 4647, agents 8585)`,
    });
    new TerraformOutput(this, 'admin_token', { value: controlPlane.adminToken, sensitive: true, description: 'GYRE_ADMIN_TOKEN for the first login' });
    new TerraformOutput(this, 'url', { value: `https://${env.domain}`, description: 'Where users reach Gyre' });
  }
}
