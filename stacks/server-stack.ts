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
import { ControlPlane, DatabaseCa, EdgeTls, GitHubAppProps, KeyWrapperSettings, SCHEDULER_NOMAD_TOKEN_SECRET, SmtpProps } from '../constructs/kubernetes/control-plane';
import { NomadServers } from '../constructs/kubernetes/nomad-servers';
import { NomadAutoscaler } from '../constructs/kubernetes/nomad-autoscaler';
import { NomadAcl, AUTOSCALER_POLICY_RULES, SCHEDULER_POLICY_RULES } from '../constructs/kubernetes/nomad-acl';
import { ControlPlaneNetworkPolicies } from '../constructs/kubernetes/network-policies';
import { MetricsServer } from '../constructs/kubernetes/metrics-server';
import { ClusterAutoscaler } from '../constructs/kubernetes/cluster-autoscaler';
import { EnvironmentDefinition } from './environment';
import { InfraOutputs } from './infra';
import { pathFromStackDirectory } from './paths';
import { GYRE_NAMESPACE, NOMAD_SERVICE } from '../constructs/types';

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
        description: 'postgres:// URL of the operator-supplied database (set TF_VAR_database_url); with database.caFile, end it with ?sslmode=verify-full&sslrootcert=/etc/gyre/database-ca/ca.pem',
      }).stringValue;
    }
    let databaseCa: DatabaseCa = infra.databaseCa ?? { source: 'none' };
    let databaseCidrs = infra.databaseCidrs ?? ['0.0.0.0/0'];
    let databasePort = 5432;
    if (env.database.mode === 'external') {
      if (env.database.caFile) databaseCa = { source: 'pem', pem: Fn.file(pathFromStackDirectory(this, env.database.caFile)) };
      databaseCidrs = env.database.allowedCidrs;
      databasePort = env.database.port;
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
      if (infra.clusterAutoscalerIdentity) {
        new ClusterAutoscaler(this, 'ClusterAutoscaler', { images, clusterName: cluster.clusterName, region: env.region, roleArn: infra.clusterAutoscalerIdentity });
      }
    }

    // Certificate files are named relative to the environment file; Terraform reads them at plan
    // time (so the key never lands in cdktf.out) from the stack's directory.
    const tls: EdgeTls = env.tls.mode === 'acm'
      ? { mode: 'acm', certificateArn: env.tls.certificateArn! }
      : env.tls.mode === 'provided'
        ? { mode: 'provided', certificateFile: pathFromStackDirectory(this, env.tls.certificateFile!), keyFile: pathFromStackDirectory(this, env.tls.keyFile!) }
        : { mode: 'self-signed' };

    const keyWrapper = keyWrapperSettings(env, infra);
    const github = gitHubApp(this, env);
    const smtp = smtpServer(this, env);
    if (github || smtp) {
      // The app's key and webhook secret, and the SMTP URL, are write-only attributes, which Terraform has had since 1.11.
      this.addOverride('terraform.required_version', MIN_TERRAFORM_WITH_WRITE_ONLY);
    }
    const controlPlane = new ControlPlane(this, 'ControlPlane', {
      images,
      domain: env.domain,
      cloud: infra.cloud,
      databaseUrl,
      databaseCa,
      blobEnvironment: infra.objectStore.runtimeEnvironment,
      serviceAccountAnnotations: cluster.identityAnnotation(infra.runtimeIdentity),
      tls,
      nomad: {
        address: `https://${NOMAD_SERVICE}.${GYRE_NAMESPACE}.svc.cluster.local:4646`,
        caPem: infra.nomadTls.caPem,
        clientCertPem: infra.nomadTls.client.certPem,
        clientKeyPem: infra.nomadTls.client.keyPem,
      },
      loadBalancerSourceRanges: [...env.access.uiCidrs, ...infra.internalCidrs],
      replicas: env.replicas,
      signIn: env.signIn,
      keyWrapper,
      github,
      smtp,
      machines: infra.machines,
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

    const acl = new NomadAcl(this, 'NomadAcl', {
      namespace: controlPlane.namespace,
      images,
      nomadAddress: nomad.address,
      nomadTlsSecretName: controlPlane.nomadClientTlsSecretName,
      policies: [
        { name: 'gyre-scheduler', description: 'Gyre scheduler: runs task agent jobs', rules: SCHEDULER_POLICY_RULES, secret: SCHEDULER_NOMAD_TOKEN_SECRET },
        { name: 'nomad-autoscaler', description: 'nomad-autoscaler: reads allocations, drains and purges clients', rules: AUTOSCALER_POLICY_RULES, secret: 'nomad-autoscaler-token' },
      ],
      dependsOn: [nomad.statefulSet],
    });

    // The scheduler's pods start once the ACL Job has written their Nomad token.
    const aclJob = `${acl.job.terraformResourceType}.${acl.job.friendlyUniqueId}`;
    controlPlane.deployments.get('scheduler')!.dependsOn = [aclJob];

    new ControlPlaneNetworkPolicies(this, 'NetworkPolicies', {
      namespace: controlPlane.namespace,
      cloud: infra.cloud,
      databaseCidrs,
      databasePort,
      nomadClientCidrs: infra.internalCidrs,
      httpsPorts: [
        ...(env.secrets.keyWrapper === 'vault-transit' ? [portOf(env.secrets.vault.address)] : []),
        // GitHub Enterprise Server may answer on another port than 443.
        ...(env.github ? [portOf(env.github.webUrl), portOf(env.github.apiUrl)] : []),
      ],
      smtpPort: env.smtp?.port,
    });

    const autoscaler = new NomadAutoscaler(this, 'NomadAutoscaler', {
      namespace: controlPlane.namespace,
      images,
      nomadAddress: nomad.address,
      nomadTlsSecretName: controlPlane.nomadClientTlsSecretName,
      nomadTokenSecretName: 'nomad-autoscaler-token',
      clientCertificateHash: Fn.sha256(infra.nomadTls.client.certPem),
      target: infra.autoscalerTarget,
      minClients: env.nomad.minClients,
      maxClients: env.nomad.maxClients,
      serviceAccountAnnotations: cluster.identityAnnotation(infra.autoscalerIdentity),
    });

    autoscaler.deployment.dependsOn = [aclJob];

    const ingress = controlPlane.loadBalancer.status.get(0).loadBalancer.get(0).ingress;
    new TerraformOutput(this, 'load_balancer_address', {
      value: Fn.coalesce([ingress.get(0).hostname, ingress.get(0).ip]),
      description: `Point DNS for ${env.domain} at this address (UI, API and agents on 443; Nomad clients use 4647)`,
    });
    new TerraformOutput(this, 'admin_token', { value: controlPlane.adminToken, sensitive: true, description: 'GYRE_ADMIN_TOKEN for the first login' });
    new TerraformOutput(this, 'url', { value: `https://${env.domain}`, description: 'Where users reach Gyre' });
    new TerraformOutput(this, 'nomad_management_token', {
      value: acl.managementToken,
      sensitive: true,
      description: 'Nomad ACL management token (NOMAD_TOKEN) for operators: the nomad CLI from the bastion, through kubectl port-forward',
    });
  }
}

/** Terraform versions that can plan a stack with write-only attributes (the GitHub App's Secret). */
export const MIN_TERRAFORM_WITH_WRITE_ONLY = '>= 1.11.0';

/**
 * The GitHub App of the environment: its key, webhook secret and CA named by path from the stack's
 * directory, so Terraform reads them at plan time and no value lands in cdktf.out.
 */
function gitHubApp(scope: Construct, env: EnvironmentDefinition): GitHubAppProps | undefined {
  const github = env.github;
  if (!github) return undefined;
  const read = (file: string) => Fn.file(pathFromStackDirectory(scope, file));
  return {
    appId: github.appId,
    webUrl: github.webUrl,
    apiUrl: github.apiUrl,
    privateKeyPem: read(github.privateKeyFile),
    webhookSecret: read(github.webhookSecretFile),
    ...(github.caFile ? { caPem: read(github.caFile) } : {}),
    ...(github.timeoutMs !== undefined ? { timeoutMs: github.timeoutMs } : {}),
  };
}

/** The SMTP server of the environment: its password named by path from the stack's directory, read by Terraform at plan time. */
function smtpServer(scope: Construct, env: EnvironmentDefinition): SmtpProps | undefined {
  const smtp = env.smtp;
  if (!smtp) return undefined;
  return {
    host: smtp.host,
    port: smtp.port,
    tls: smtp.tls,
    from: smtp.from,
    ...(smtp.user !== undefined ? { user: smtp.user } : {}),
    ...(smtp.passwordFile ? { password: Fn.file(pathFromStackDirectory(scope, smtp.passwordFile)) } : {}),
  };
}

/**
 * The runtime's key wrapper: the infra stack's KMS key, or the environment's Vault, whose token
 * goes into the runtime Secret (and so into the state, never into a manifest).
 */
function keyWrapperSettings(env: EnvironmentDefinition, infra: InfraOutputs): KeyWrapperSettings {
  const secrets = env.secrets;
  if (secrets.keyWrapper !== 'vault-transit') {
    if (!infra.secretsKey) throw new Error(`${env.file}: secrets.keyWrapper (${secrets.keyWrapper}) needs the infra stack's secrets key, and it has none`);
    return { environment: infra.secretsKey.runtimeEnvironment };
  }
  const vault = secrets.vault;
  return {
    environment: {
      GYRE_SECRETS_KEY_WRAPPER: 'vault-transit',
      VAULT_ADDR: vault.address,
      GYRE_SECRETS_VAULT_TRANSIT_MOUNT: vault.mount,
      GYRE_SECRETS_VAULT_TRANSIT_KEY: vault.key,
      ...(vault.namespace ? { VAULT_NAMESPACE: vault.namespace } : {}),
    },
    credentials: { VAULT_TOKEN: vault.token },
  };
}

/** The port an https:// address names (443 when it names none). */
function portOf(address: string): number {
  return Number(new URL(address).port || 443);
}
