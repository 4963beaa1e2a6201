import { Construct } from 'constructs';
import { Fn, Token } from 'cdktf';
import { NamespaceV1 } from '@cdktf/provider-kubernetes/lib/namespace-v1';
import { ServiceAccountV1 } from '@cdktf/provider-kubernetes/lib/service-account-v1';
import { SecretV1 } from '@cdktf/provider-kubernetes/lib/secret-v1';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import { DeploymentV1 } from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { JobV1 } from '@cdktf/provider-kubernetes/lib/job-v1';
import { ServiceV1 } from '@cdktf/provider-kubernetes/lib/service-v1';
import { PodDisruptionBudgetV1 } from '@cdktf/provider-kubernetes/lib/pod-disruption-budget-v1';
import { HorizontalPodAutoscalerV2 } from '@cdktf/provider-kubernetes/lib/horizontal-pod-autoscaler-v2';
import { Password } from '@cdktf/provider-random/lib/password';
import { PrivateKey } from '@cdktf/provider-tls/lib/private-key';
import { SelfSignedCert } from '@cdktf/provider-tls/lib/self-signed-cert';
import { ImageCatalog } from '../images';
import type { MachineExecutorConfig } from '../machine-images';
import { GYRE_NAMESPACE, RUNTIME_SERVICE_ACCOUNT } from '../types';
import { OPS_PORT, RESTRICTED_CONTAINER, RUNTIME_PORT, RUNTIME_ROLES, RUNTIME_ROLE_NAMES, RoleSpec } from './roles';
import { renderEdgeConfig, EDGE_PORTS } from './edge-config';
import {
  CAN_REACH_DATABASE, CAN_REACH_GIT_SSH, CAN_REACH_HTTPS, CAN_REACH_NOMAD_API, CAN_REACH_SMTP, EDGE_LABELS, MIGRATE_LABELS, SERVES_OPS, roleLabels,
} from './labels';

/** How TLS for the UI and API (port 443) is terminated. */
export type EdgeTls =
  | { readonly mode: 'acm'; readonly certificateArn: string }
  /** Paths as Terraform reads them (relative to the stack's directory; see stacks/paths.ts). */
  | { readonly mode: 'provided'; readonly certificateFile: string; readonly keyFile: string }
  | { readonly mode: 'self-signed' };

/**
 * The CA the runtime verifies the database server with (`sslmode=verify-full&sslrootcert=…` in
 * DATABASE_URL). `image`: a bundle shipped in the runtime image (images/ca/); `pem`: a certificate
 * (or chain) mounted from a ConfigMap at DATABASE_CA_MOUNT; `none`: Node's built-in CA list.
 */
export type DatabaseCa =
  | { readonly source: 'image'; readonly path: string }
  | { readonly source: 'pem'; readonly pem: string }
  | { readonly source: 'none' };

/** Directory the database CA ConfigMap is mounted at; the certificate is `ca.pem` in it. */
export const DATABASE_CA_MOUNT = '/etc/gyre/database-ca';
/** Directory the runtime image keeps its CA bundles in (images/ca/ in the repository). */
export const IMAGE_CA_DIR = '/opt/gyre/ca';
/**
 * Where the runtime wraps the data keys of secrets. Every pod must use the same key: a local key
 * file (the runtime's default) is each pod's own, so a value one pod sealed would not open in another.
 */
export interface KeyWrapperSettings {
  /** GYRE_SECRETS_KEY_WRAPPER (`aws-kms`, `gcp-kms` or `vault-transit`) and the settings naming its key; in every runtime container's environment. */
  readonly environment: Record<string, string>;
  /** The wrapper's credentials (VAULT_TOKEN), kept in the runtime Secret, never in a manifest. @default {} */
  readonly credentials?: Record<string, string>;
}

/** Key wrappers a cluster install may use (all pods share the key). */
export const SHARED_KEY_WRAPPERS = ['aws-kms', 'gcp-kms', 'vault-transit'] as const;
/** Settings a key wrapper's environment may hold. */
const KEY_WRAPPER_SETTING = /^(GYRE_SECRETS_[A-Z0-9_]+|VAULT_ADDR|VAULT_NAMESPACE)$/;
/** Credentials a key wrapper may be given. */
const KEY_WRAPPER_CREDENTIALS = ['VAULT_TOKEN'];

/**
 * The GitHub App the roles marked `usesGitHub` (roles.ts) act as; the settings are the runtime's
 * (runtime/github/settings.ts, README: GitHub).
 */
export interface GitHubAppProps {
  /** GYRE_GITHUB_APP_ID: the app's numeric App ID. */
  readonly appId: string;
  /** GYRE_GITHUB_URL: where people and git reach GitHub, `https://`. */
  readonly webUrl: string;
  /** GYRE_GITHUB_API_URL: GitHub's REST API, `https://` (`https://ghe.example.com/api/v3` for GitHub Enterprise Server). */
  readonly apiUrl: string;
  /**
   * The app's private key (PEM) as Terraform reads it at plan time (`Fn.file(…)`), never a literal:
   * it is only ever written to a write-only attribute, so it is neither in the synthesized JSON nor
   * in the state.
   */
  readonly privateKeyPem: string;
  /** The webhook secret, as Terraform reads it (`Fn.file(…)`), like `privateKeyPem`. */
  readonly webhookSecret: string;
  /** CA certificates (PEM) GitHub Enterprise Server's certificate chains to, given to Node as NODE_EXTRA_CA_CERTS. @default - Node's built-in CA list */
  readonly caPem?: string;
  /** GYRE_GITHUB_TIMEOUT_MS. @default - the runtime's (15000) */
  readonly timeoutMs?: number;
}

/** Secret holding the GitHub App's private key and webhook secret (write-only in Terraform). */
export const GITHUB_APP_SECRET = 'gyre-github-app';
/** Where the roles that act as the GitHub App find its key (`private-key.pem`) and webhook secret (`webhook-secret`). */
export const GITHUB_APP_MOUNT = '/etc/gyre/github';
/** Where GitHub Enterprise Server's CA (`ca.pem`) is mounted when one is given. */
export const GITHUB_CA_MOUNT = '/etc/gyre/github-ca';

/**
 * How the notifier reaches the SMTP server: `starttls` upgrades the connection before anything is
 * sent and refuses a server that cannot (`smtp://…?requireTLS=true`); `tls` is TLS from the start
 * (`smtps://`, usually port 465); `opportunistic` upgrades only when the server offers it, so it
 * may send in the clear, and is refused with a password.
 */
export type SmtpTlsMode = 'starttls' | 'tls' | 'opportunistic';
export const SMTP_TLS_MODES: readonly SmtpTlsMode[] = ['starttls', 'tls', 'opportunistic'];

/** The SMTP server the roles marked `usesSmtp` (roles.ts: the notifier) send email through (runtime/notifications/settings.ts). */
export interface SmtpProps {
  /** The server's DNS name or IPv4 address. */
  readonly host: string;
  /** @default - 465 with tls, 587 otherwise */
  readonly port?: number;
  /** @default 'starttls' */
  readonly tls?: SmtpTlsMode;
  /** The user to authenticate as. @default - no authentication */
  readonly user?: string;
  /**
   * The user's password as Terraform reads it at plan time (`Fn.file(…)`), never a literal: it is
   * only ever written into a write-only attribute, so it is neither in the synthesized JSON nor in
   * the state. Required with `user`. Trailing newlines of the file are dropped.
   */
  readonly password?: string;
  /** GYRE_SMTP_FROM: the sender, `Name <address>` or an address. */
  readonly from: string;
}

/** Secret (key `url`: GYRE_SMTP_URL, the password in it) the notifier reads; write-only in Terraform. */
export const SMTP_SECRET = 'gyre-smtp';

/** Secret (key `token`) the ACL bootstrap Job writes the scheduler's Nomad token to. */
export const SCHEDULER_NOMAD_TOKEN_SECRET = 'gyre-nomad-scheduler-token';

/** The machine executor's settings, for the `machines` role (runtime/machines/machine-settings.ts). */
export interface MachinesProps {
  readonly provider: 'aws' | 'gcp';
  /** GYRE_INSTALLATION_ID: the tag every machine carries; the launch permissions are scoped to it. */
  readonly installationId: string;
  /** GYRE_MACHINE_CONFIG's content (may hold Terraform references, e.g. subnet ids). */
  readonly config: MachineExecutorConfig;
}

export interface ControlPlaneProps {
  readonly images: ImageCatalog;
  /** Host name users reach Gyre at. */
  readonly domain: string;
  readonly cloud: 'aws' | 'gcp';
  /** `postgres://` URL of the database (sensitive), naming its CA with `sslrootcert` when verified. */
  readonly databaseUrl: string;
  /** @default - { source: 'none' } */
  readonly databaseCa?: DatabaseCa;
  /** BlobStore settings (GYRE_BLOB_STORE and its bucket variables). */
  readonly blobEnvironment: Record<string, string>;
  /** Annotations binding the runtime service account to its cloud identity. */
  readonly serviceAccountAnnotations: Record<string, string>;
  readonly tls: EdgeTls;
  /** The Nomad HTTP API the scheduler role submits task agents to, with its mutual-TLS material. */
  readonly nomad: { readonly address: string; readonly caPem: string; readonly clientCertPem: string; readonly clientKeyPem: string };
  /** CIDRs allowed through the load balancer. */
  readonly loadBalancerSourceRanges: string[];
  /** Replicas per role, overriding the defaults in roles.ts. @default - each role's default */
  readonly replicas?: Record<string, number>;
  /** Admin token for the runtime. @default - a random 48-character token */
  readonly adminToken?: string;
  /** Sign-in settings (GYRE_OIDC_*, GYRE_LDAP_*, GYRE_GITHUB_*…), kept in the runtime Secret with the other credentials. */
  readonly signIn?: Record<string, string>;
  /** The key every pod wraps secrets' data keys with (a cloud KMS key or Vault transit). */
  readonly keyWrapper: KeyWrapperSettings;
  /** The GitHub App, given to the roles that act as it (roles.ts `usesGitHub`). @default - no GitHub App */
  readonly github?: GitHubAppProps;
  /** The SMTP server notification emails go through, given to the roles that send (roles.ts `usesSmtp`). @default - no email is sent */
  readonly smtp?: SmtpProps;
  /** The machine executor, given to the `machines` role. @default - none: the machines role runs no replicas */
  readonly machines?: MachinesProps;
}

/**
 * The Gyre control plane on Kubernetes: its namespace, service account, secrets, the migration Job
 * of this release, one Deployment (with Service and PodDisruptionBudget) per runtime role from the
 * one runtime image, HPAs for the api and output roles, and the edge proxy behind a single
 * LoadBalancer Service.
 */
export class ControlPlane extends Construct {
  readonly namespace: string;
  /** Name of the LoadBalancer Service; its status carries the address to point DNS at. */
  readonly loadBalancerServiceName = 'gyre-edge';
  readonly loadBalancer: ServiceV1;
  /** Name of the Secret holding the runtime's settings (DATABASE_URL, GYRE_ADMIN_TOKEN). */
  readonly runtimeSecretName = 'gyre-runtime';
  /** Secret holding the Nomad client certificate (ca.pem, client.pem, client-key.pem). */
  readonly nomadClientTlsSecretName = 'gyre-nomad-client-tls';
  readonly adminToken: string;
  /** Name of this release's migration Job (one per runtime image tag). */
  readonly migrationJobName: string;
  /** Each role's Deployment. */
  readonly deployments = new Map<string, DeploymentV1>();
  private readonly databaseCa: DatabaseCa;
  /** Changes when the app's key or webhook secret does, so the pods that read them at start roll. */
  private githubRevision?: string;
  /** Changes when the SMTP URL (the password in it) does, so the pods that read it at start roll. */
  private smtpRevision?: string;

  constructor(scope: Construct, id: string, props: ControlPlaneProps) {
    super(scope, id);
    for (const [role, count] of Object.entries(props.replicas ?? {})) {
      if (!RUNTIME_ROLE_NAMES.includes(role)) {
        throw new Error(`replicas.${role} names no runtime role; allowed: ${RUNTIME_ROLE_NAMES.join(', ')}`);
      }
      if (!Number.isInteger(count) || count < 0) throw new Error(`replicas.${role} (${count}) must be a whole number, 0 or more`);
    }
    this.databaseCa = props.databaseCa ?? { source: 'none' };
    checkKeyWrapper(props.keyWrapper);
    if (props.github) checkGitHubApp(props.github);
    if (props.smtp) checkSmtp(props.smtp);

    const ns = new NamespaceV1(this, 'Namespace', {
      metadata: { name: GYRE_NAMESPACE, labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } },
    });
    this.namespace = ns.metadata.name;

    new ServiceAccountV1(this, 'RuntimeServiceAccount', {
      metadata: { name: RUNTIME_SERVICE_ACCOUNT, namespace: this.namespace, annotations: props.serviceAccountAnnotations },
      automountServiceAccountToken: false,
    });

    this.adminToken = props.adminToken ?? new Password(this, 'AdminToken', { length: 48, special: false }).result;
    new SecretV1(this, 'RuntimeSecret', {
      metadata: { name: this.runtimeSecretName, namespace: this.namespace },
      data: { ...(props.signIn ?? {}), ...(props.keyWrapper.credentials ?? {}), DATABASE_URL: props.databaseUrl, GYRE_ADMIN_TOKEN: this.adminToken },
    });
    new SecretV1(this, 'NomadClientTls', {
      metadata: { name: this.nomadClientTlsSecretName, namespace: this.namespace },
      data: { 'ca.pem': props.nomad.caPem, 'client.pem': props.nomad.clientCertPem, 'client-key.pem': props.nomad.clientKeyPem },
    });
    if (this.databaseCa.source === 'pem') {
      new ConfigMapV1(this, 'DatabaseCa', {
        metadata: { name: 'gyre-database-ca', namespace: this.namespace },
        data: { 'ca.pem': this.databaseCa.pem },
      });
    }

    // The scheduler submits task agents to Nomad from this job template; the agent image is the
    // only image reference in it, so air-gapped installs rewrite it with the others.
    new ConfigMapV1(this, 'NomadJobTemplate', {
      metadata: { name: 'gyre-nomad-job-template', namespace: this.namespace },
      data: { 'task-agent.json': JSON.stringify(nomadAgentJobTemplate(props.images.ref('agent')), null, 2) },
    });

    if (props.github) this.addGitHubApp(props.github);
    if (props.smtp) this.addSmtp(props.smtp);
    if (props.machines) {
      new ConfigMapV1(this, 'MachineConfig', {
        metadata: { name: 'gyre-machine-config', namespace: this.namespace },
        data: { 'machines.json': Fn.jsonencode(props.machines.config) },
      });
    }

    this.migrationJobName = this.addMigrationJob(props);
    for (const role of RUNTIME_ROLES) {
      this.addRole(role, props);
    }

    this.loadBalancer = this.addEdge(props);
  }

  /** Environment every runtime container shares (roles, the migration Job, the wait). */
  private commonEnv(props: ControlPlaneProps): { name: string; value: string }[] {
    return [
      { name: 'GYRE_DATA_DIR', value: '/var/lib/gyre' },
      { name: 'GYRE_PUBLIC_URL', value: `https://${props.domain}` },
      { name: 'GYRE_URL', value: `https://${props.domain}` },
      // Migrations run once per release in the migration Job, never as a pod starts.
      { name: 'GYRE_MIGRATE', value: 'false' },
      { name: 'GYRE_EXAMPLE', value: 'false' },
      ...Object.entries(props.blobEnvironment).map(([k, v]) => ({ name: k, value: v })),
      ...Object.entries(props.keyWrapper.environment).map(([k, v]) => ({ name: k, value: v })),
    ];
  }

  /**
   * The app's key and webhook secret in a Secret whose data is write-only (`data_wo`, Terraform
   * 1.11 or later): Terraform reads the files at plan time and hands them to Kubernetes without
   * keeping them in the plan or the state. A write-only value is only sent again when its revision
   * changes, so the revision follows a hash of the two.
   */
  private addGitHubApp(github: GitHubAppProps): void {
    const hash = Fn.substr(Fn.sha256(Fn.join('\n', [github.privateKeyPem, github.webhookSecret])), 0, 12);
    this.githubRevision = hash;
    new SecretV1(this, 'GitHubApp', {
      metadata: { name: GITHUB_APP_SECRET, namespace: this.namespace },
      dataWo: { 'private-key.pem': github.privateKeyPem, 'webhook-secret': github.webhookSecret },
      dataWoRevision: Fn.parseint(hash, 16),
    });
    if (github.caPem !== undefined) {
      new ConfigMapV1(this, 'GitHubCa', {
        metadata: { name: 'gyre-github-ca', namespace: this.namespace },
        data: { 'ca.pem': github.caPem },
      });
    }
  }

  /**
   * GYRE_SMTP_URL, made by Terraform at plan time with the password read from its file, in a
   * Secret whose data is write-only (as the GitHub App's): the password is in neither the plan,
   * the state, nor a manifest. Its revision follows a hash of the URL.
   */
  private addSmtp(smtp: SmtpProps): void {
    const url = smtpUrl(smtp);
    const hash = Fn.substr(Fn.sha256(url), 0, 12);
    this.smtpRevision = hash;
    new SecretV1(this, 'Smtp', {
      metadata: { name: SMTP_SECRET, namespace: this.namespace },
      dataWo: { url },
      dataWoRevision: Fn.parseint(hash, 16),
    });
  }

  /** What a role that sends email adds to its pod: the URL from the SMTP Secret, the sender, and a label to reach the server. */
  private smtpPod(role: RoleSpec, smtp: SmtpProps | undefined): { env: any[]; labels: Record<string, string>; annotations: Record<string, string> } {
    if (!role.usesSmtp || !smtp) return { env: [], labels: {}, annotations: {} };
    return {
      env: [
        { name: 'GYRE_SMTP_URL', valueFrom: { secretKeyRef: { name: SMTP_SECRET, key: 'url' } } },
        { name: 'GYRE_SMTP_FROM', value: smtp.from },
      ],
      labels: CAN_REACH_SMTP,
      // The runtime reads the URL once, at start: a new password rolls these pods.
      annotations: { 'gyre.dev/smtp-revision': this.smtpRevision! },
    };
  }

  /** What a role that acts as the GitHub App adds to its pod: settings, the key and secret as files, the CA. */
  /** The `machines` role's provider, installation id and image map (mounted from the ConfigMap). */
  private machinesPod(role: RoleSpec, machines: MachinesProps | undefined): { env: any[]; volumeMount: any[]; volume: any[] } {
    if (role.name !== 'machines' || !machines) return { env: [], volumeMount: [], volume: [] };
    return {
      env: [
        { name: 'GYRE_MACHINE_PROVIDER', value: machines.provider },
        { name: 'GYRE_INSTALLATION_ID', value: machines.installationId },
        { name: 'GYRE_MACHINE_CONFIG', value: '/etc/gyre/machines/machines.json' },
      ],
      volumeMount: [{ name: 'machines', mountPath: '/etc/gyre/machines', readOnly: true }],
      volume: [{ name: 'machines', configMap: { name: 'gyre-machine-config' } }],
    };
  }

  private githubAppPod(role: RoleSpec, github: GitHubAppProps | undefined): { env: any[]; volumeMount: any[]; volume: any[]; annotations: Record<string, string> } {
    if (!role.usesGitHub || !github) return { env: [], volumeMount: [], volume: [], annotations: {} };
    const ca = github.caPem !== undefined;
    return {
      env: [
        { name: 'GYRE_GITHUB_APP_ID', value: github.appId },
        { name: 'GYRE_GITHUB_APP_PRIVATE_KEY_FILE', value: `${GITHUB_APP_MOUNT}/private-key.pem` },
        { name: 'GYRE_GITHUB_WEBHOOK_SECRET_FILE', value: `${GITHUB_APP_MOUNT}/webhook-secret` },
        { name: 'GYRE_GITHUB_URL', value: github.webUrl },
        { name: 'GYRE_GITHUB_API_URL', value: github.apiUrl },
        ...(github.timeoutMs !== undefined ? [{ name: 'GYRE_GITHUB_TIMEOUT_MS', value: String(github.timeoutMs) }] : []),
        ...(ca ? [{ name: 'NODE_EXTRA_CA_CERTS', value: `${GITHUB_CA_MOUNT}/ca.pem` }] : []),
      ],
      volumeMount: [
        { name: 'github-app', mountPath: GITHUB_APP_MOUNT, readOnly: true },
        ...(ca ? [{ name: 'github-ca', mountPath: GITHUB_CA_MOUNT, readOnly: true }] : []),
      ],
      volume: [
        { name: 'github-app', secret: { secretName: GITHUB_APP_SECRET, defaultMode: '0440' } },
        ...(ca ? [{ name: 'github-ca', configMap: { name: 'gyre-github-ca' } }] : []),
      ],
      // The runtime reads the key and secret once, at start: a new one rolls these pods.
      annotations: { 'gyre.dev/github-app-revision': this.githubRevision! },
    };
  }

  private databaseCaMount(): { volumeMount: any[]; volume: any[] } {
    if (this.databaseCa.source !== 'pem') return { volumeMount: [], volume: [] };
    return {
      volumeMount: [{ name: 'database-ca', mountPath: DATABASE_CA_MOUNT, readOnly: true }],
      volume: [{ name: 'database-ca', configMap: { name: 'gyre-database-ca' } }],
    };
  }

  /**
   * `gyre migrate` once per release: the Job is named after the runtime image tag, so an upgrade
   * (a new tag) replaces it and runs the new release's migrations once, while every Deployment's
   * pods wait in `gyre migrate --wait` until the schema is the one their code expects.
   */
  private addMigrationJob(props: ControlPlaneProps): string {
    const tag = props.images.tag('runtime').toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 40);
    const name = `gyre-migrate-${tag}`;
    const ca = this.databaseCaMount();
    const labels = { ...MIGRATE_LABELS, ...CAN_REACH_DATABASE };
    new JobV1(this, 'MigrationJob', {
      metadata: { name, namespace: this.namespace, labels: MIGRATE_LABELS },
      spec: {
        backoffLimit: 3,
        template: {
          metadata: { labels },
          spec: {
            restartPolicy: 'Never',
            automountServiceAccountToken: false,
            securityContext: { runAsNonRoot: true, runAsUser: '10001', runAsGroup: '10001', fsGroup: '10001', seccompProfile: { type: 'RuntimeDefault' } },
            container: [{
              name: 'migrate',
              image: props.images.ref('runtime'),
              command: ['tini', '--', 'gyre'],
              args: ['migrate'],
              env: this.commonEnv(props),
              envFrom: [{ secretRef: { name: this.runtimeSecretName } }],
              resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '512Mi' } },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [{ name: 'data', mountPath: '/var/lib/gyre' }, { name: 'tmp', mountPath: '/tmp' }, ...ca.volumeMount],
            }],
            volume: [{ name: 'data', emptyDir: { sizeLimit: '256Mi' } }, { name: 'tmp', emptyDir: { sizeLimit: '256Mi' } }, ...ca.volume],
          },
        },
      },
      waitForCompletion: true,
      timeouts: { create: '15m', update: '15m' },
    });
    return name;
  }

  private addRole(role: RoleSpec, props: ControlPlaneProps): void {
    const name = role.name;
    // The machines role has nothing to do without a machine executor.
    const replicas = props.replicas?.[name] ?? (name === 'machines' && !props.machines ? 0 : role.replicas);
    const labels = roleLabels(name);
    const podLabels = {
      ...labels, ...CAN_REACH_DATABASE, ...CAN_REACH_HTTPS, ...CAN_REACH_GIT_SSH, ...SERVES_OPS,
      ...(role.usesNomad ? CAN_REACH_NOMAD_API : {}),
    };
    const id = pascal(name);
    const ca = this.databaseCaMount();
    const github = this.githubAppPod(role, props.github);
    const smtp = this.smtpPod(role, props.smtp);
    const machines = this.machinesPod(role, props.machines);
    const env: any[] = [
      { name: 'GYRE_PORT', value: String(RUNTIME_PORT) },
      { name: 'GYRE_OPS_PORT', value: String(OPS_PORT) },
      // Builds never run in control-plane pods: they hold the database URL and the Nomad client key.
      { name: 'GYRE_RUNNER_SLOTS', value: '0' },
      ...this.commonEnv(props),
      ...(role.usesNomad
        ? [
          { name: 'NOMAD_ADDR', value: props.nomad.address },
          { name: 'NOMAD_CACERT', value: '/etc/gyre/nomad/ca.pem' },
          { name: 'NOMAD_CLIENT_CERT', value: '/etc/gyre/nomad/client.pem' },
          { name: 'NOMAD_CLIENT_KEY', value: '/etc/gyre/nomad/client-key.pem' },
          // Written by the Nomad ACL bootstrap Job; the pod waits for it to exist.
          { name: 'NOMAD_TOKEN', valueFrom: { secretKeyRef: { name: SCHEDULER_NOMAD_TOKEN_SECRET, key: 'token' } } },
          { name: 'GYRE_AGENT_IMAGE', value: props.images.ref('agent') },
          { name: 'GYRE_NOMAD_JOB_TEMPLATE', value: '/etc/gyre/jobs/task-agent.json' },
        ]
        : []),
      ...github.env,
      ...smtp.env,
      ...machines.env,
    ];
    const ports = [
      ...(role.servesApi ? [{ name: 'http', containerPort: RUNTIME_PORT }] : []),
      { name: 'ops', containerPort: OPS_PORT },
    ];

    const deployment = new DeploymentV1(this, `${id}Deployment`, {
      metadata: { name: `gyre-${name}`, namespace: this.namespace, labels },
      // HPAs own the replica count of the api and output roles once deployed.
      lifecycle: role.maxReplicas ? { ignoreChanges: ['spec[0].replicas'] } : undefined,
      spec: {
        replicas: String(replicas),
        selector: { matchLabels: labels },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '0', maxSurge: '1' } },
        template: {
          metadata: {
            labels: { ...podLabels, ...smtp.labels },
            annotations: {
              'prometheus.io/scrape': 'true', 'prometheus.io/port': String(OPS_PORT), 'prometheus.io/path': '/metrics',
              // A renewed Nomad client certificate rolls the scheduler onto it.
              ...(role.usesNomad ? { 'gyre.dev/tls-hash': Fn.sha256(props.nomad.clientCertPem) } : {}),
              ...github.annotations,
              ...smtp.annotations,
            },
          },
          spec: {
            serviceAccountName: RUNTIME_SERVICE_ACCOUNT,
            // The projected token is how IRSA / Workload Identity authenticate to the bucket.
            automountServiceAccountToken: true,
            securityContext: { runAsNonRoot: true, runAsUser: '10001', runAsGroup: '10001', fsGroup: '10001', seccompProfile: { type: 'RuntimeDefault' } },
            topologySpreadConstraint: [{
              maxSkew: 1,
              topologyKey: 'topology.kubernetes.io/zone',
              whenUnsatisfiable: 'ScheduleAnyway',
              labelSelector: [{ matchLabels: labels }],
            }],
            // Old pods keep serving while this waits: the rolling update only proceeds once the
            // release's migration Job has brought the schema to what this code expects.
            initContainer: [{
              name: 'wait-for-migrations',
              image: props.images.ref('runtime'),
              command: ['tini', '--', 'gyre'],
              args: ['migrate', '--wait'],
              env: this.commonEnv(props),
              envFrom: [{ secretRef: { name: this.runtimeSecretName } }],
              resources: { requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '256Mi' } },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [{ name: 'data', mountPath: '/var/lib/gyre' }, { name: 'tmp', mountPath: '/tmp' }, ...ca.volumeMount],
            }],
            container: [{
              name: 'gyre',
              image: props.images.ref('runtime'),
              command: ['tini', '--', 'gyre'],
              args: ['server', `--roles=${name}`],
              port: ports,
              env,
              envFrom: [{ secretRef: { name: this.runtimeSecretName } }],
              resources: {
                requests: { cpu: role.cpuRequest, memory: role.memoryRequest },
                limits: { memory: role.memoryLimit },
              },
              startupProbe: { httpGet: { path: '/healthz', port: 'ops' }, periodSeconds: 5, failureThreshold: 60 },
              readinessProbe: { httpGet: { path: '/healthz', port: 'ops' }, periodSeconds: 10, failureThreshold: 3 },
              livenessProbe: { httpGet: { path: '/healthz', port: 'ops' }, periodSeconds: 20, failureThreshold: 3, timeoutSeconds: 5 },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [
                { name: 'data', mountPath: '/var/lib/gyre' },
                { name: 'tmp', mountPath: '/tmp' },
                ...ca.volumeMount,
                ...(role.usesNomad
                  ? [{ name: 'nomad-tls', mountPath: '/etc/gyre/nomad', readOnly: true }, { name: 'jobs', mountPath: '/etc/gyre/jobs', readOnly: true }]
                  : []),
                ...github.volumeMount,
                ...machines.volumeMount,
              ],
            }],
            volume: [
              { name: 'data', emptyDir: { sizeLimit: '1Gi' } },
              { name: 'tmp', emptyDir: { sizeLimit: '256Mi' } },
              ...ca.volume,
              ...(role.usesNomad
                ? [
                  { name: 'nomad-tls', secret: { secretName: this.nomadClientTlsSecretName, defaultMode: '0440' } },
                  { name: 'jobs', configMap: { name: 'gyre-nomad-job-template' } },
                ]
                : []),
              ...github.volume,
              ...machines.volume,
            ],
          },
        },
      },
    });

    this.deployments.set(name, deployment);

    new ServiceV1(this, `${id}Service`, {
      metadata: { name: `gyre-${name}`, namespace: this.namespace, labels },
      spec: {
        selector: labels,
        port: [
          ...(role.servesApi ? [{ name: 'http', port: RUNTIME_PORT, targetPort: 'http' }] : []),
          { name: 'ops', port: OPS_PORT, targetPort: 'ops' },
        ],
      },
    });

    new PodDisruptionBudgetV1(this, `${id}Disruption`, {
      metadata: { name: `gyre-${name}`, namespace: this.namespace },
      spec: { maxUnavailable: '1', selector: { matchLabels: labels } },
    });

    if (role.maxReplicas) {
      new HorizontalPodAutoscalerV2(this, `${id}Autoscaler`, {
        metadata: { name: `gyre-${name}`, namespace: this.namespace },
        spec: {
          minReplicas: Math.max(replicas, 1),
          maxReplicas: Math.max(role.maxReplicas, replicas),
          scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: `gyre-${name}` },
          metric: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } }],
        },
      });
    }
  }

  private addEdge(props: ControlPlaneProps): ServiceV1 {
    const labels = EDGE_LABELS;
    const terminateTls = props.tls.mode !== 'acm';

    const config = new ConfigMapV1(this, 'EdgeConfig', {
      metadata: { name: 'gyre-edge', namespace: this.namespace },
      data: { 'nginx.conf': renderEdgeConfig({ namespace: GYRE_NAMESPACE, domain: props.domain, terminateTls, apiPort: RUNTIME_PORT }) },
    });

    if (props.tls.mode === 'provided' || props.tls.mode === 'self-signed') {
      let cert: string;
      let key: string;
      if (props.tls.mode === 'provided') {
        // Read by Terraform at plan time, so the key never lands in cdktf.out.
        cert = Fn.file(props.tls.certificateFile);
        key = Fn.file(props.tls.keyFile);
      } else {
        const privateKey = new PrivateKey(this, 'EdgeKey', { algorithm: 'ECDSA', ecdsaCurve: 'P256' });
        cert = new SelfSignedCert(this, 'EdgeCert', {
          privateKeyPem: privateKey.privateKeyPem,
          dnsNames: [props.domain],
          validityPeriodHours: 8760,
          earlyRenewalHours: 720,
          allowedUses: ['digital_signature', 'key_encipherment', 'server_auth'],
          subject: [{ commonName: props.domain, organization: 'Gyre' }],
        }).certPem;
        key = privateKey.privateKeyPem;
      }
      new SecretV1(this, 'EdgeTls', {
        metadata: { name: 'gyre-edge-tls', namespace: this.namespace },
        type: 'kubernetes.io/tls',
        data: { 'tls.crt': cert, 'tls.key': key },
      });
    }

    new DeploymentV1(this, 'EdgeDeployment', {
      metadata: { name: 'gyre-edge', namespace: this.namespace, labels },
      spec: {
        replicas: '2',
        selector: { matchLabels: labels },
        template: {
          metadata: { labels, annotations: { 'gyre.dev/config-hash': Fn.sha256(Fn.jsonencode(config.data)) } },
          spec: {
            automountServiceAccountToken: false,
            securityContext: { runAsNonRoot: true, runAsUser: '101', runAsGroup: '101', seccompProfile: { type: 'RuntimeDefault' } },
            container: [{
              name: 'nginx',
              image: props.images.ref('edge'),
              port: Object.entries(EDGE_PORTS).map(([portName, containerPort]) => ({ name: portName, containerPort })),
              resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { memory: '256Mi' } },
              readinessProbe: { httpGet: { path: '/edge-healthz', port: 'http' }, periodSeconds: 5 },
              livenessProbe: { httpGet: { path: '/edge-healthz', port: 'http' }, periodSeconds: 20 },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [
                { name: 'config', mountPath: '/etc/nginx/nginx.conf', subPath: 'nginx.conf', readOnly: true },
                { name: 'tmp', mountPath: '/tmp' },
                ...(terminateTls ? [{ name: 'tls', mountPath: '/etc/nginx/tls', readOnly: true }] : []),
              ],
            }],
            volume: [
              { name: 'config', configMap: { name: 'gyre-edge' } },
              { name: 'tmp', emptyDir: {} },
              ...(terminateTls ? [{ name: 'tls', secret: { secretName: 'gyre-edge-tls' } }] : []),
            ],
          },
        },
      },
    });
    new PodDisruptionBudgetV1(this, 'EdgeDisruption', {
      metadata: { name: 'gyre-edge', namespace: this.namespace },
      spec: { maxUnavailable: '1', selector: { matchLabels: labels } },
    });

    const annotations: Record<string, string> = props.cloud === 'aws'
      ? {
        'service.beta.kubernetes.io/aws-load-balancer-type': 'nlb',
        'service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled': 'true',
        ...(props.tls.mode === 'acm'
          ? {
            'service.beta.kubernetes.io/aws-load-balancer-ssl-cert': props.tls.certificateArn,
            'service.beta.kubernetes.io/aws-load-balancer-ssl-ports': '443',
            'service.beta.kubernetes.io/aws-load-balancer-backend-protocol': 'tcp',
          }
          : {}),
      }
      : {};
    return new ServiceV1(this, 'LoadBalancer', {
      metadata: { name: this.loadBalancerServiceName, namespace: this.namespace, labels, annotations },
      spec: {
        type: 'LoadBalancer',
        selector: labels,
        externalTrafficPolicy: 'Local',
        loadBalancerSourceRanges: props.loadBalancerSourceRanges,
        port: [
          { name: 'http', port: 80, targetPort: 'http' },
          // With ACM the load balancer decrypts 443 and hands the edge plain HTTP.
          { name: 'https', port: 443, targetPort: terminateTls ? 'https' : 'https-offload' },
          { name: 'nomad-rpc', port: 4647, targetPort: 'nomad-rpc' },
        ],
      },
    });
  }
}

/** Nomad job the scheduler submits for each task: one docker task running the agent image. */
export function nomadAgentJobTemplate(agentImage: string): Record<string, unknown> {
  return {
    Job: {
      Type: 'batch',
      Datacenters: ['default'],
      // `$$` keeps Terraform from reading Nomad's own interpolation.
      Constraints: [{ LTarget: '$${node.class}', Operand: '=', RTarget: 'linux-docker' }],
      TaskGroups: [{
        Name: 'task',
        Count: 1,
        RestartPolicy: { Attempts: 0, Mode: 'fail' },
        ReschedulePolicy: { Attempts: 0, Unlimited: false },
        Tasks: [{
          Name: 'agent',
          Driver: 'docker',
          Config: { image: agentImage, force_pull: false },
          Resources: { CPU: 1000, MemoryMB: 2048 },
        }],
      }],
    },
  };
}

/** Refuses a key wrapper the pods would not share, and a credential headed for a manifest. */
function checkKeyWrapper(keyWrapper: KeyWrapperSettings): void {
  const wrapper = keyWrapper.environment.GYRE_SECRETS_KEY_WRAPPER;
  if (!(SHARED_KEY_WRAPPERS as readonly string[]).includes(wrapper)) {
    throw new Error(`keyWrapper.environment.GYRE_SECRETS_KEY_WRAPPER (${wrapper ?? 'unset'}) must be one of: ${SHARED_KEY_WRAPPERS.join(', ')}; a local key file is each pod's own, so a secret one pod seals would not open in another`);
  }
  for (const name of Object.keys(keyWrapper.environment)) {
    if (KEY_WRAPPER_CREDENTIALS.includes(name)) throw new Error(`keyWrapper.environment.${name} is a credential: pass it in keyWrapper.credentials, which the runtime Secret holds`);
    if (!KEY_WRAPPER_SETTING.test(name)) throw new Error(`keyWrapper.environment.${name} is not a key wrapper setting; allowed: GYRE_SECRETS_*, VAULT_ADDR, VAULT_NAMESPACE`);
  }
  for (const name of Object.keys(keyWrapper.credentials ?? {})) {
    if (!KEY_WRAPPER_CREDENTIALS.includes(name)) throw new Error(`keyWrapper.credentials.${name} is not a key wrapper credential; allowed: ${KEY_WRAPPER_CREDENTIALS.join(', ')}`);
  }
}

/** Refuses a GitHub App the runtime would refuse at start, and a key or secret headed for cdktf.out. */
/** A DNS name or an IPv4 address (a cluster's SMTP relay may have either). */
const SMTP_HOST = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The port an SMTP server listens on when none is given: 465 for TLS from the start, 587 (submission) otherwise. */
export function defaultSmtpPort(tls: SmtpTlsMode): number {
  return tls === 'tls' ? 465 : 587;
}

/**
 * GYRE_SMTP_URL as the runtime reads it: `smtps://` or `smtp://`, the user and password
 * percent-encoded, `?requireTLS=true` for starttls. The password is a Terraform expression, so
 * Terraform encodes it (urlencode writes a space as `+`, which in a URL's user info is a plus).
 */
export function smtpUrl(smtp: SmtpProps): string {
  const tls = smtp.tls ?? 'starttls';
  const port = smtp.port ?? defaultSmtpPort(tls);
  const scheme = tls === 'tls' ? 'smtps' : 'smtp';
  const query = tls === 'starttls' ? '?requireTLS=true' : '';
  if (smtp.user === undefined) return `${scheme}://${smtp.host}:${port}${query}`;
  const user = encodeURIComponent(smtp.user);
  if (smtp.password === undefined) return `${scheme}://${user}@${smtp.host}:${port}${query}`;
  // One expression (not a token inside a literal): Terraform reads the file, drops its trailing
  // newline and percent-encodes it at plan time.
  const password = Fn.replace(Fn.urlencode(Fn.chomp(smtp.password)), '+', '%20');
  return Fn.join('', [`${scheme}://${user}:`, password, `@${smtp.host}:${port}${query}`]);
}

function checkSmtp(smtp: SmtpProps): void {
  const tls = smtp.tls ?? 'starttls';
  if (!SMTP_TLS_MODES.includes(tls)) throw new Error(`smtp.tls (${tls}) must be one of: ${SMTP_TLS_MODES.join(', ')}`);
  if (!SMTP_HOST.test(smtp.host)) throw new Error(`smtp.host (${smtp.host}) must be a DNS name or an IPv4 address, e.g. smtp.example.com`);
  if (smtp.port !== undefined && (!Number.isInteger(smtp.port) || smtp.port < 1 || smtp.port > 65535)) throw new Error(`smtp.port (${smtp.port}) must be a port number from 1 to 65535`);
  if (smtp.user !== undefined && (smtp.user === '' || /[\r\n]/.test(smtp.user))) throw new Error('smtp.user must be a non-empty user name on one line');
  if (smtp.password !== undefined) {
    if (!Token.isUnresolved(smtp.password)) throw new Error('smtp.password must be read by Terraform at plan time (Fn.file(<path>)), not given as a value: a value would be written to cdktf.out');
    if (smtp.user === undefined) throw new Error('smtp.password needs smtp.user: the server is authenticated to as a user');
    if (tls === 'opportunistic') throw new Error('smtp.password with smtp.tls opportunistic could be sent in the clear to a server that offers no STARTTLS; use starttls or tls');
  }
  if (/[\r\n]/.test(smtp.from) || !smtp.from.includes('@') || smtp.from.length > 320) throw new Error(`smtp.from (${smtp.from.slice(0, 100)}) must be a sender on one line: an address, or Name <address>`);
  if (/[$%]\{/.test(smtp.from)) throw new Error(`smtp.from (${smtp.from.slice(0, 100)}) must not hold \${ or %{: Terraform would read it as an expression`);
}

function checkGitHubApp(github: GitHubAppProps): void {
  if (!/^[1-9]\d{0,15}$/.test(github.appId)) throw new Error(`github.appId (${github.appId}) must be the app's numeric App ID, e.g. 123456`);
  for (const field of ['webUrl', 'apiUrl'] as const) {
    let url: URL | undefined;
    try {
      url = new URL(github[field]);
    } catch {
      url = undefined;
    }
    if (!url || url.protocol !== 'https:' || url.username || url.password || url.search || url.hash) {
      throw new Error(`github.${field} (${github[field]}) must be an https:// address with no credentials, query or fragment, e.g. ${field === 'webUrl' ? 'https://ghe.example.com' : 'https://ghe.example.com/api/v3'}`);
    }
  }
  for (const field of ['privateKeyPem', 'webhookSecret'] as const) {
    if (!Token.isUnresolved(github[field])) throw new Error(`github.${field} must be read by Terraform at plan time (Fn.file(<path>)), not given as a value: a value would be written to cdktf.out`);
  }
  if (github.timeoutMs !== undefined && (!Number.isInteger(github.timeoutMs) || github.timeoutMs < 100 || github.timeoutMs > 300_000)) {
    throw new Error(`github.timeoutMs (${github.timeoutMs}) must be a whole number of milliseconds from 100 to 300000`);
  }
}

function pascal(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_m, _d, c: string) => c.toUpperCase());
}
