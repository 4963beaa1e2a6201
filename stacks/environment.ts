import { createPrivateKey, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { readSignInSettings } from '../runtime/identity/sign-in/settings';
import { defaultGitHubApiUrl } from '../runtime/identity/sign-in/github-urls';
import { ROLE_NAMES } from '../runtime/roles/names';
import { KEY_ARN } from '../constructs/aws/secrets-key';
import { CRYPTO_KEY_NAME } from '../constructs/gcp/secrets-key';
import { readNotificationSettings } from '../runtime/notifications/settings';

/**
 * One environment definition, read from `environments/<name>.yaml`.
 *
 * Every field below is documented in docs/deploying.md; optional fields carry their default here.
 */
export interface EnvironmentDefinition {
  /** Environment name; stacks are `<name>-infra` and `<name>-server`. @default - the file name */
  readonly name: string;
  /** The file this definition was read from (for messages). */
  readonly file: string;
  readonly cloud: 'aws' | 'gcp';
  readonly region: string;
  /** Availability zones (AWS) or zones (GCP) to spread subnets, nodes and Nomad clients over. */
  readonly zones: string[];
  /** GCP project id; required when cloud is gcp. */
  readonly project?: string;
  /** Host name users reach Gyre at, e.g. `gyre.example.com`. */
  readonly domain: string;
  readonly tls: TlsDefinition;
  readonly network: { readonly cidr: string };
  readonly kubernetes: KubernetesDefinition;
  readonly nomad: NomadDefinition;
  readonly objectStore: { readonly expireAfterDays: number };
  readonly database: DatabaseDefinition;
  /** Private registry every image is pulled from (air-gapped installs). @default - public registries */
  readonly registry?: string;
  /** Tag of the Gyre runtime and agent images. */
  readonly imageTag: string;
  /** Helm chart repository override for air-gapped installs. @default - each chart's public repository */
  readonly helmRepository?: string;
  readonly access: AccessDefinition;
  /** Replicas per runtime role; roles not listed use the role's default. */
  readonly replicas: Record<string, number>;
  /**
   * Sign-in settings (GYRE_SESSION_*, GYRE_SIGN_IN_*, GYRE_GITHUB_*, GYRE_OIDC_*, GYRE_LDAP_*) for
   * the control plane, checked at synth as the runtime checks them. A value `{ fromEnv: NAME }` is
   * read from the operator's environment at synth, so client secrets need not be in the file.
   */
  readonly signIn: Record<string, string>;
  /** Where secrets' data keys are wrapped: one key every pod shares. @default - a KMS key the infra stack makes */
  readonly secrets: SecretsDefinition;
  /** The GitHub App Gyre acts as (GitHub.com or GitHub Enterprise Server). @default - no GitHub App */
  readonly github?: GitHubDefinition;
  /** The SMTP server the notifier role sends notification emails through. @default - no email is sent */
  readonly smtp?: SmtpDefinition;
  /** The machine executor (`machine:` jobs on a VM each; the `machines` role). @default - machine jobs are not given VMs */
  readonly machines?: MachinesDefinition;
  /** Where Terraform keeps this environment's state (it holds every secret of the install). */
  readonly state: StateDefinition;
}

/**
 * Remote state, encrypted: S3 with DynamoDB locking, or GCS (which locks by itself). `local` keeps
 * `terraform.<stack>.tfstate` files in the checkout and is only for trials.
 */
export type StateDefinition =
  | {
    readonly backend: 's3';
    readonly bucket: string;
    readonly region: string;
    /** DynamoDB table (partition key `LockID`, a string) that locks the state. */
    readonly dynamodbTable: string;
    /** KMS key the state objects are encrypted with. @default - the bucket's default encryption (SSE-S3) */
    readonly kmsKeyId?: string;
    /** Prefix of each stack's state key: `<keyPrefix><stack>.tfstate`. @default 'gyre/' */
    readonly keyPrefix: string;
  }
  | {
    readonly backend: 'gcs';
    readonly bucket: string;
    /** Prefix of each stack's state: `<prefix><stack>/default.tfstate`. @default 'gyre/' */
    readonly prefix: string;
    /** Cloud KMS key the state is encrypted with. @default - Google-managed encryption */
    readonly kmsEncryptionKey?: string;
  }
  | { readonly backend: 'local' };

/**
 * The key that wraps the data keys of secrets (GYRE_SECRETS_KEY_WRAPPER): the cloud's KMS, with a
 * key the infra stack makes (or the operator's), or a transit key in the operator's Vault.
 */
export type SecretsDefinition =
  | {
    readonly keyWrapper: 'aws-kms' | 'gcp-kms';
    /** The operator's key: a KMS key ARN (AWS) or a CryptoKey name (GCP). @default - the infra stack makes one */
    readonly existingKey?: string;
    /** Days between automatic rotations of the key made. @default 365 */
    readonly rotationDays: number;
    /** Days a deleted key can still be restored (AWS: the deletion window; GCP: destroy scheduled duration). @default 30 */
    readonly deletionWindowDays: number;
  }
  | { readonly keyWrapper: 'vault-transit'; readonly vault: VaultDefinition };

export interface VaultDefinition {
  /** VAULT_ADDR: `https://host[:port]`. */
  readonly address: string;
  /** GYRE_SECRETS_VAULT_TRANSIT_KEY: the transit key's name. */
  readonly key: string;
  /** GYRE_SECRETS_VAULT_TRANSIT_MOUNT. @default 'transit' */
  readonly mount: string;
  /** VAULT_NAMESPACE (Vault Enterprise, HCP). @default - none */
  readonly namespace?: string;
  /** VAULT_TOKEN, read from the environment cdktf runs in (sensitive; it goes into the runtime Secret). */
  readonly token: string;
}

/**
 * The GitHub App (runtime/github/settings.ts reads the same settings): its id and addresses go in
 * the environment of the roles that act as the app; its private key and webhook secret are files
 * that Terraform reads at plan time into a write-only value of a Kubernetes Secret, so neither is
 * in the synthesized JSON or in Terraform state.
 */
export interface GitHubDefinition {
  /** GYRE_GITHUB_APP_ID: the app's numeric App ID (its settings page, "About"; not its client id). */
  readonly appId: string;
  /** GYRE_GITHUB_URL: where people and git reach GitHub (no trailing slash). @default 'https://github.com' */
  readonly webUrl: string;
  /** GYRE_GITHUB_API_URL: GitHub's REST API. @default - from webUrl: https://api.github.com, https://api.<name>.ghe.com, or <webUrl>/api/v3 (GitHub Enterprise Server) */
  readonly apiUrl: string;
  /** The app's private key (PEM, as GitHub hands it out), absolute path. */
  readonly privateKeyFile: string;
  /** A file holding the app's webhook secret (16 characters or more), absolute path. */
  readonly webhookSecretFile: string;
  /** CA certificate(s) (PEM) that GitHub Enterprise Server's HTTPS certificate chains to, absolute path. @default - Node's built-in CA list */
  readonly caFile?: string;
  /** GYRE_GITHUB_TIMEOUT_MS: how long one call to GitHub may take. @default - the runtime's (15000) */
  readonly timeoutMs?: number;
}

/**
 * The SMTP server (GYRE_SMTP_URL, GYRE_SMTP_FROM; runtime/notifications/settings.ts): its address,
 * TLS mode, user and sender go in the notifier's environment; the password is a file that Terraform
 * reads at plan time into a write-only value of a Kubernetes Secret (as the GitHub App's key), so it
 * is neither in the synthesized JSON nor in Terraform state.
 */
export interface SmtpDefinition {
  /** The server's DNS name or IPv4 address. */
  readonly host: string;
  /** @default - 465 with tls: tls, 587 otherwise */
  readonly port: number;
  /** `starttls` (required upgrade), `tls` (TLS from the start, smtps://) or `opportunistic` (upgrade when offered; no password). @default 'starttls' */
  readonly tls: 'starttls' | 'tls' | 'opportunistic';
  /** The user to authenticate as. @default - no authentication */
  readonly user?: string;
  /** A file holding the user's password (trailing newlines are dropped), absolute path. Required with user. */
  readonly passwordFile?: string;
  /** GYRE_SMTP_FROM: the sender, `Name <address>` or an address. @default 'Gyre <gyre@<domain>>' */
  readonly from: string;
}

/** How Nomad clients authenticate to `registry` to pull the agent image. */
export type RegistryCredentials =
  /** ECR (AWS) or Artifact Registry / GCR (GCP) through the machine's own identity. */
  | { readonly source: 'cloud' }
  /** A Docker config.json (absolute path, resolved from the environment file's directory). */
  | { readonly source: 'file'; readonly file: string }
  /** Anonymous pulls. */
  | { readonly source: 'none' };

export interface TlsDefinition {
  /** `acm`: the AWS load balancer terminates TLS; `provided`: cert/key files; `self-signed`: generated. */
  readonly mode: 'acm' | 'provided' | 'self-signed';
  readonly certificateArn?: string;
  /** Absolute path (a relative one in the file is resolved from the environment file's directory). */
  readonly certificateFile?: string;
  /** Absolute path, resolved like certificateFile. */
  readonly keyFile?: string;
}

export interface KubernetesDefinition {
  readonly version: string;
  readonly nodeInstanceType: string;
  readonly minNodes: number;
  readonly desiredNodes: number;
  readonly maxNodes: number;
  /** CIDRs allowed to reach the Kubernetes API endpoint. */
  readonly apiAllowedCidrs: string[];
}

export interface NomadDefinition {
  readonly instanceType: string;
  readonly minClients: number;
  readonly maxClients: number;
  /** Base URL of the operator's package mirror holding the Nomad and Docker packages. */
  readonly packageMirror: string;
  readonly nomadVersion: string;
  /** CIDRs that build containers must never reach (beyond the metadata address). */
  readonly blockedCidrs: string[];
  /** How clients authenticate to `registry` for the agent image. */
  readonly registryCredentials: RegistryCredentials;
  /** Pull-through caches of Docker Hub (https:// URLs) the clients' engines pull job images through. */
  readonly registryMirrors: string[];
}

export type DatabaseDefinition =
  | { readonly mode: 'managed'; readonly instanceClass: string; readonly storageGb: number; readonly version: string }
  | {
    readonly mode: 'external';
    /** CA bundle (absolute path) the runtime verifies the server with. @default - Node's built-in CA list */
    readonly caFile?: string;
    /** Where the database is: the only addresses runtime pods may reach on its port. @default ['0.0.0.0/0'] */
    readonly allowedCidrs: string[];
    /** @default 5432 */
    readonly port: number;
  };

/**
 * `machines:`: the images `machine: image:` may name, each an AMI (aws) or a source image (gcp)
 * the distribution makes a launch template / instance template from, and how machines are sized
 * and may connect.
 */
export interface MachinesDefinition {
  /** `machine: image:` (e.g. `ubuntu-2204:current`; `default` for `machine: true`) → AMI id or GCE source image. */
  readonly images: Record<string, string>;
  /** Resource class → instance (machine) type. @default {} */
  readonly instanceTypes: Record<string, string>;
  readonly spot: boolean;
  /** Where machines reach the control plane over HTTPS. @default - the network's CIDR (an internal load balancer) */
  readonly controlPlaneCidrs?: string[];
  /** Further destinations jobs may reach on any port. @default [] (none: the control plane only) */
  readonly egressCidrs: string[];
  readonly diskGb: number;
}

export interface AccessDefinition {
  /** CIDRs allowed to reach the UI and API (ports 80 and 443). */
  readonly uiCidrs: string[];
  /** CIDRs allowed to SSH into a rerun job (ports 64535–65535 on Nomad clients). */
  readonly sshRerunCidrs: string[];
  /** CIDRs allowed to reach the bastion (SSH on AWS; IAP is always required on GCP). */
  readonly bastionCidrs: string[];
}

/** Thrown when an environment file is invalid; the message names the file and the field. */
export class EnvironmentError extends Error {
  constructor(readonly file: string, readonly field: string, detail: string) {
    super(`${file}: ${field} ${detail}`);
    this.name = 'EnvironmentError';
  }
}

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const NAME = /^[a-z][a-z0-9-]{1,20}$/;
const HOST = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;
const KNOWN_TOP_LEVEL = [
  'name', 'cloud', 'region', 'zones', 'project', 'domain', 'tls', 'network', 'kubernetes', 'nomad',
  'objectStore', 'database', 'registry', 'images', 'helm', 'access', 'replicas', 'state', 'signIn', 'secrets', 'github', 'smtp', 'machines',
];
/** The settings `signIn` may hold: sign-in's own, nothing that would change another part of Gyre. */
const SIGN_IN_SETTING = /^GYRE_(SESSION|SIGN_IN|GITHUB|OIDC|LDAP)_[A-Z0-9_]+$/;
/** GitHub App settings: they belong in `github:`, which mounts the key and secret as files on the roles that use them. */
const GITHUB_APP_SETTING = /^GYRE_GITHUB_(APP_[A-Z0-9_]+|WEBHOOK_SECRET(_FILE)?|TIMEOUT_MS)$/;
/** The fields of `github:`. */
const GITHUB_FIELDS = ['appId', 'webUrl', 'apiUrl', 'privateKeyFile', 'webhookSecretFile', 'caFile', 'timeoutMs'];
/** The fields of `smtp:`. */
const SMTP_FIELDS = ['host', 'port', 'tls', 'user', 'passwordFile', 'from'];
/** A DNS name or an IPv4 address. */
const SMTP_HOST = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Reads and validates every `*.yaml` file in a directory, sorted by name. */
export function loadEnvironments(dir: string): EnvironmentDefinition[] {
  return fs.readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => loadEnvironment(path.join(dir, f)));
}

/** Reads and validates one environment file. */
export function loadEnvironment(file: string): EnvironmentDefinition {
  const text = fs.readFileSync(file, 'utf8');
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new EnvironmentError(file, '(file)', `is not valid YAML: ${(e as Error).message}`);
  }
  const base = path.basename(file).replace(/\.ya?ml$/, '');
  return parseEnvironment(raw, file, base, path.dirname(path.resolve(file)));
}

/**
 * Validates a parsed definition; `file` is used in messages, and relative paths in it are resolved
 * from `baseDir` (the environment file's directory) here, at synth time, never by Terraform from the
 * stack's output directory.
 */
export function parseEnvironment(raw: unknown, file: string, defaultName = 'env', baseDir = process.cwd()): EnvironmentDefinition {
  const r = new Reader(file, baseDir);
  const root = r.object(raw, '(root)');
  for (const key of Object.keys(root)) {
    if (!KNOWN_TOP_LEVEL.includes(key)) {
      throw new EnvironmentError(file, key, `is not a known field; allowed: ${KNOWN_TOP_LEVEL.join(', ')}`);
    }
  }
  const name = r.optString(root, 'name', 'name') ?? defaultName;
  if (!NAME.test(name)) {
    throw new EnvironmentError(file, 'name', `(${JSON.stringify(name)}) must be lowercase letters, digits and dashes, 2-21 characters, starting with a letter`);
  }
  const cloud = r.oneOf(root, 'cloud', 'cloud', ['aws', 'gcp'] as const);
  const region = r.string(root, 'region', 'region');
  const zones = r.stringList(root, 'zones', 'zones');
  if (zones.length < 2 || zones.length > 3) {
    throw new EnvironmentError(file, 'zones', `(${zones.length} zones) must list 2 or 3 zones in ${region}`);
  }
  zones.forEach((z, i) => {
    if (!z.startsWith(region)) throw new EnvironmentError(file, `zones[${i}]`, `(${JSON.stringify(z)}) must be a zone of region ${region}`);
  });
  const project = r.optString(root, 'project', 'project');
  if (cloud === 'gcp' && !project) throw new EnvironmentError(file, 'project', 'is required when cloud is gcp');
  const domain = r.string(root, 'domain', 'domain');
  if (!HOST.test(domain)) throw new EnvironmentError(file, 'domain', `(${JSON.stringify(domain)}) must be a DNS name such as gyre.example.com`);

  const tlsRaw = r.object(root.tls ?? { mode: 'self-signed' }, 'tls');
  const tlsMode = r.oneOf(tlsRaw, 'mode', 'tls.mode', ['acm', 'provided', 'self-signed'] as const);
  if (tlsMode === 'acm' && cloud !== 'aws') throw new EnvironmentError(file, 'tls.mode', `(acm) is only allowed when cloud is aws; use provided or self-signed`);
  const tls: TlsDefinition = {
    mode: tlsMode,
    certificateArn: tlsMode === 'acm' ? r.string(tlsRaw, 'certificateArn', 'tls.certificateArn') : undefined,
    certificateFile: tlsMode === 'provided' ? r.existingFile(tlsRaw, 'certificateFile', 'tls.certificateFile') : undefined,
    keyFile: tlsMode === 'provided' ? r.existingFile(tlsRaw, 'keyFile', 'tls.keyFile') : undefined,
  };

  const netRaw = r.object(root.network ?? {}, 'network');
  const network = { cidr: r.cidr(netRaw, 'cidr', 'network.cidr', '10.0.0.0/16') };
  if (Number(network.cidr.split('/')[1]) > 18) {
    throw new EnvironmentError(file, 'network.cidr', `(${network.cidr}) must be /18 or larger to hold the subnets`);
  }

  const k8sRaw = r.object(root.kubernetes ?? {}, 'kubernetes');
  const nodesRaw = r.object(k8sRaw.nodes ?? {}, 'kubernetes.nodes');
  const minNodes = r.int(nodesRaw, 'min', 'kubernetes.nodes.min', 3, 1, 100);
  const maxNodes = r.int(nodesRaw, 'max', 'kubernetes.nodes.max', Math.max(6, minNodes), 1, 100);
  const desiredNodes = r.int(nodesRaw, 'desired', 'kubernetes.nodes.desired', minNodes, 1, 100);
  if (desiredNodes < minNodes || desiredNodes > maxNodes) {
    throw new EnvironmentError(file, 'kubernetes.nodes.desired', `(${desiredNodes}) must be between kubernetes.nodes.min (${minNodes}) and kubernetes.nodes.max (${maxNodes})`);
  }
  const kubernetes: KubernetesDefinition = {
    version: r.matching(k8sRaw, 'version', 'kubernetes.version', /^1\.(2[89]|3\d)$/, 'a Kubernetes minor version from 1.28 to 1.39, quoted, e.g. "1.31"', '1.31'),
    nodeInstanceType: r.optString(k8sRaw, 'nodeInstanceType', 'kubernetes.nodeInstanceType') ?? (cloud === 'aws' ? 'm6i.xlarge' : 'n2-standard-4'),
    minNodes, desiredNodes, maxNodes,
    apiAllowedCidrs: r.cidrList(k8sRaw, 'apiAllowedCidrs', 'kubernetes.apiAllowedCidrs'),
  };

  const registry = r.optString(root, 'registry', 'registry');
  if (registry !== undefined && !/^[a-z0-9.-]+(:\d+)?(\/[a-z0-9._-]+)*$/.test(registry)) {
    throw new EnvironmentError(file, 'registry', `(${JSON.stringify(registry)}) must be a registry host with an optional path, e.g. registry.example.com/gyre`);
  }

  const nomadRaw = r.object(root.nomad ?? {}, 'nomad');
  const clientsRaw = r.object(nomadRaw.clients ?? {}, 'nomad.clients');
  const minClients = r.int(clientsRaw, 'min', 'nomad.clients.min', 1, 0, 1000);
  const maxClients = r.int(clientsRaw, 'max', 'nomad.clients.max', Math.max(10, minClients), 1, 1000);
  if (maxClients < minClients) {
    throw new EnvironmentError(file, 'nomad.clients.max', `(${maxClients}) must be at least nomad.clients.min (${minClients})`);
  }
  const nomad: NomadDefinition = {
    instanceType: r.optString(nomadRaw, 'instanceType', 'nomad.instanceType') ?? (cloud === 'aws' ? 'm6i.2xlarge' : 'n2-standard-8'),
    minClients, maxClients,
    packageMirror: r.matching(nomadRaw, 'packageMirror', 'nomad.packageMirror', /^https?:\/\/\S+$/, 'an http(s) URL'),
    nomadVersion: r.matching(nomadRaw, 'version', 'nomad.version', /^\d+\.\d+\.\d+$/, 'a version such as 1.9.7', NOMAD_VERSION),
    blockedCidrs: r.cidrList(nomadRaw, 'blockedCidrs', 'nomad.blockedCidrs', []),
    registryCredentials: registryCredentials(r, nomadRaw, cloud, registry),
    registryMirrors: r.stringList(nomadRaw, 'registryMirrors', 'nomad.registryMirrors', []).map((mirror, i) => {
      if (!/^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/?$/.test(mirror)) throw new EnvironmentError(file, `nomad.registryMirrors[${i}]`, `(${JSON.stringify(mirror)}) must be an https:// URL of a host with no path, e.g. https://hub-cache.example.com`);
      return mirror;
    }),
  };

  const osRaw = r.object(root.objectStore ?? {}, 'objectStore');
  const objectStore = { expireAfterDays: r.int(osRaw, 'expireAfterDays', 'objectStore.expireAfterDays', 30, 1, 3650) };

  const dbRaw = r.object(root.database ?? { mode: 'managed' }, 'database');
  const dbMode = r.oneOf(dbRaw, 'mode', 'database.mode', ['managed', 'external'] as const);
  const database: DatabaseDefinition = dbMode === 'external'
    ? {
      mode: 'external',
      caFile: dbRaw.caFile === undefined ? undefined : r.existingFile(dbRaw, 'caFile', 'database.caFile'),
      allowedCidrs: r.cidrList(dbRaw, 'allowedCidrs', 'database.allowedCidrs', ['0.0.0.0/0']),
      port: r.int(dbRaw, 'port', 'database.port', 5432, 1, 65535),
    }
    : {
      mode: 'managed',
      instanceClass: r.optString(dbRaw, 'instanceClass', 'database.instanceClass') ?? (cloud === 'aws' ? 'db.m6g.large' : 'db-custom-2-7680'),
      storageGb: r.int(dbRaw, 'storageGb', 'database.storageGb', 100, 20, 65536),
      version: r.matching(dbRaw, 'version', 'database.version', /^1[4-7]$/, 'a PostgreSQL major version from 14 to 17, quoted', '16'),
    };

  const imagesRaw = r.object(root.images ?? {}, 'images');
  const imageTag = r.matching(imagesRaw, 'tag', 'images.tag', /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, 'a container image tag', DEFAULT_IMAGE_TAG);
  const helmRaw = r.object(root.helm ?? {}, 'helm');
  const helmRepository = r.optString(helmRaw, 'repository', 'helm.repository');

  const accessRaw = r.object(root.access ?? {}, 'access');
  const access: AccessDefinition = {
    uiCidrs: r.cidrList(accessRaw, 'uiCidrs', 'access.uiCidrs'),
    sshRerunCidrs: r.cidrList(accessRaw, 'sshRerunCidrs', 'access.sshRerunCidrs', []),
    bastionCidrs: r.cidrList(accessRaw, 'bastionCidrs', 'access.bastionCidrs', []),
  };

  const replicasRaw = r.object(root.replicas ?? {}, 'replicas');
  const replicas: Record<string, number> = {};
  for (const role of Object.keys(replicasRaw)) {
    if (!(ROLE_NAMES as readonly string[]).includes(role)) {
      throw new EnvironmentError(file, `replicas.${role}`, `is not a runtime role; allowed: ${ROLE_NAMES.join(', ')}`);
    }
    replicas[role] = r.int(replicasRaw, role, `replicas.${role}`, 1, 0, 50);
  }

  const state = stateDefinition(r, root.state, cloud, region);
  const github = root.github === undefined ? undefined : githubDefinition(r, root.github);
  const signIn = signInDefinition(r, root.signIn, domain, github);
  const secrets = secretsDefinition(r, root.secrets, cloud);
  const smtp = root.smtp === undefined ? undefined : smtpDefinition(r, root.smtp, domain);
  const machines = root.machines === undefined ? undefined : machinesDefinition(r, root.machines, cloud);

  return {
    name, file, cloud, region, zones, project, domain, tls, network, kubernetes, nomad, objectStore,
    database, registry, imageTag, helmRepository, access, replicas, state, signIn, secrets,
    ...(github ? { github } : {}),
    ...(smtp ? { smtp } : {}),
    ...(machines ? { machines } : {}),
  };
}

const MACHINES_FIELDS = ['images', 'instanceTypes', 'spot', 'controlPlaneCidrs', 'egressCidrs', 'diskGb'];

function machinesDefinition(r: Reader, raw: unknown, cloud: 'aws' | 'gcp'): MachinesDefinition {
  const o = r.object(raw, 'machines');
  for (const key of Object.keys(o)) if (!MACHINES_FIELDS.includes(key)) r.fail(`machines.${key}`, `is not a machines setting; allowed: ${MACHINES_FIELDS.join(', ')}`);
  const stringMap = (key: string, check?: (v: string, field: string) => void) => {
    const m = r.object(o[key] ?? {}, `machines.${key}`);
    const out: Record<string, string> = {};
    for (const k of Object.keys(m)) {
      const v = m[k];
      if (typeof v !== 'string' || !v) r.fail(`machines.${key}.${k}`, `(${JSON.stringify(v)}) must be a non-empty string`);
      check?.(v, `machines.${key}.${k}`);
      out[k] = v;
    }
    return out;
  };
  const images = stringMap('images', (v, field) => {
    if (cloud === 'aws' && !/^ami-[0-9a-f]{8,17}$/.test(v)) r.fail(field, `(${JSON.stringify(v)}) must be an AMI id, e.g. ami-0123456789abcdef0`);
    if (cloud === 'gcp' && !/^(projects\/[^/]+\/global\/images\/|https:\/\/)/.test(v)) r.fail(field, `(${JSON.stringify(v)}) must be a source image, e.g. projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts`);
  });
  if (Object.keys(images).length === 0) r.fail('machines.images', 'maps no machine image; e.g. { "ubuntu-2204:current": ' + (cloud === 'aws' ? '"ami-0123456789abcdef0" }' : '"projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts" }'));
  if (o.spot !== undefined && typeof o.spot !== 'boolean') r.fail('machines.spot', `(${JSON.stringify(o.spot)}) must be true or false`);
  return {
    images,
    instanceTypes: stringMap('instanceTypes'),
    spot: o.spot === true,
    ...(o.controlPlaneCidrs === undefined ? {} : { controlPlaneCidrs: r.cidrList(o, 'controlPlaneCidrs', 'machines.controlPlaneCidrs') }),
    egressCidrs: r.cidrList(o, 'egressCidrs', 'machines.egressCidrs', []),
    diskGb: r.int(o, 'diskGb', 'machines.diskGb', 100, 10, 16_384),
  };
}

function smtpDefinition(r: Reader, raw: unknown, domain: string): SmtpDefinition {
  const o = r.object(raw, 'smtp');
  for (const key of Object.keys(o)) {
    if (SMTP_FIELDS.includes(key)) continue;
    if (key === 'password' || key === 'url') {
      r.fail(`smtp.${key}`, 'is not a field: secrets are never written in the environment file; put the password in a file and name that in smtp.passwordFile');
    }
    r.fail(`smtp.${key}`, `is not an SMTP setting; allowed: ${SMTP_FIELDS.join(', ')}`);
  }
  const host = r.matching(o, 'host', 'smtp.host', SMTP_HOST, 'a DNS name or an IPv4 address, e.g. smtp.example.com');
  const tls = o.tls === undefined ? 'starttls' : r.oneOf(o, 'tls', 'smtp.tls', ['starttls', 'tls', 'opportunistic'] as const);
  const port = r.int(o, 'port', 'smtp.port', tls === 'tls' ? 465 : 587, 1, 65535);
  const user = r.optString(o, 'user', 'smtp.user');
  if (user !== undefined && /[\r\n]/.test(user)) r.fail('smtp.user', 'must be on one line');
  let passwordFile: string | undefined;
  if (o.passwordFile !== undefined) {
    if (user === undefined) r.fail('smtp.passwordFile', 'needs smtp.user: the server is authenticated to as a user');
    if (tls === 'opportunistic') r.fail('smtp.passwordFile', 'cannot go with smtp.tls opportunistic: the password could be sent in the clear to a server that offers no STARTTLS; use starttls or tls');
    const password = textFile(r, o, 'passwordFile', 'smtp.passwordFile');
    if (password.text.replace(/\r?\n$/, '') === '') r.fail('smtp.passwordFile', `(${JSON.stringify(o.passwordFile)}) is empty`);
    if (/[\r\n]/.test(password.text.replace(/\r?\n$/, ''))) r.fail('smtp.passwordFile', `(${JSON.stringify(o.passwordFile)}) must hold the password on one line`);
    passwordFile = password.path;
  } else if (user !== undefined) {
    r.fail('smtp.passwordFile', 'is required with smtp.user: a file holding the user\'s password');
  }
  const from = o.from === undefined ? `Gyre <gyre@${domain}>` : r.string(o, 'from', 'smtp.from');
  if (/[$%]\{/.test(from)) r.fail('smtp.from', `(${JSON.stringify(from.slice(0, 100))}) must not hold \${ or %{ (Terraform would read it as an expression)`);
  // Checked now, as the runtime will check it at start (the password stands in as x).
  try {
    readNotificationSettings({ GYRE_SMTP_URL: `${tls === 'tls' ? 'smtps' : 'smtp'}://${user === undefined ? '' : `${encodeURIComponent(user)}:x@`}${host}:${port}`, GYRE_SMTP_FROM: from });
  } catch (error) {
    const setting = (error as { setting?: string }).setting;
    r.fail(setting === 'GYRE_SMTP_FROM' ? 'smtp.from' : 'smtp', (error as Error).message.replace(/^[A-Z0-9_]+: /, ''));
  }
  return { host, port, tls, from, ...(user !== undefined ? { user } : {}), ...(passwordFile ? { passwordFile } : {}) };
}

/** Vault names as the runtime checks them (runtime/secrets/settings.ts), kept here so synth does not load the KMS clients. */
const TRANSIT_KEY = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;
const TRANSIT_MOUNT = /^(?!\.{1,2}(\/|$))[A-Za-z0-9._-]+(\/(?!\.{1,2}(\/|$))[A-Za-z0-9._-]+)*$/;
const VAULT_ADDRESS = /^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/?$/;

function secretsDefinition(r: Reader, raw: unknown, cloud: 'aws' | 'gcp'): SecretsDefinition {
  const kms = cloud === 'aws' ? 'aws-kms' : 'gcp-kms';
  const o = r.object(raw ?? {}, 'secrets');
  if (o.keyWrapper === 'local') {
    r.fail('secrets.keyWrapper', `(local) is not for a cluster install: each pod's key file is its own, so a secret one pod seals would not open in another; use ${kms} or vault-transit`);
  }
  const keyWrapper = o.keyWrapper === undefined ? kms : r.oneOf(o, 'keyWrapper', 'secrets.keyWrapper', [kms, 'vault-transit'] as const);
  const allowed = keyWrapper === 'vault-transit'
    ? ['keyWrapper', 'vault']
    : ['keyWrapper', 'existingKey', 'rotationDays', 'deletionWindowDays'];
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) r.fail(`secrets.${key}`, `is not a setting of keyWrapper ${keyWrapper}; allowed: ${allowed.join(', ')}`);
  }
  if (keyWrapper !== 'vault-transit') {
    const existingKey = cloud === 'aws'
      ? o.existingKey === undefined ? undefined : r.matching(o, 'existingKey', 'secrets.existingKey', KEY_ARN, 'a KMS key ARN, arn:aws:kms:<region>:<account>:key/<key id> (not an alias: permissions are granted on the key)')
      : o.existingKey === undefined ? undefined : r.matching(o, 'existingKey', 'secrets.existingKey', CRYPTO_KEY_NAME, 'a CryptoKey name, projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>');
    if (existingKey !== undefined) {
      for (const made of ['rotationDays', 'deletionWindowDays']) {
        if (o[made] !== undefined) r.fail(`secrets.${made}`, `applies only to the key the infra stack makes; with secrets.existingKey, rotate and protect your key where it lives`);
      }
    }
    return {
      keyWrapper,
      existingKey,
      rotationDays: r.int(o, 'rotationDays', 'secrets.rotationDays', 365, 90, 2560),
      deletionWindowDays: r.int(o, 'deletionWindowDays', 'secrets.deletionWindowDays', 30, 7, 30),
    };
  }
  if (o.vault === undefined) r.fail('secrets.vault', 'is required when secrets.keyWrapper is vault-transit: { address, key, token: { fromEnv: NAME } }');
  const v = r.object(o.vault, 'secrets.vault');
  const vaultFields = ['address', 'key', 'mount', 'namespace', 'token'];
  for (const key of Object.keys(v)) {
    if (!vaultFields.includes(key)) r.fail(`secrets.vault.${key}`, `is not a Vault setting; allowed: ${vaultFields.join(', ')}`);
  }
  const token = v.token as { fromEnv?: unknown } | undefined;
  if (!token || typeof token !== 'object' || Object.keys(token).join() !== 'fromEnv' || typeof token.fromEnv !== 'string' || token.fromEnv === '') {
    r.fail('secrets.vault.token', 'must be { fromEnv: NAME }: the token is read from the environment cdktf runs in, never written in the file');
  }
  const tokenValue = process.env[token.fromEnv as string];
  if (!tokenValue) r.fail('secrets.vault.token', `reads the environment variable ${token.fromEnv as string}, which is not set where cdktf runs`);
  return {
    keyWrapper,
    vault: {
      address: r.matching(v, 'address', 'secrets.vault.address', VAULT_ADDRESS, 'an https:// address of Vault, https://host[:port]'),
      key: r.matching(v, 'key', 'secrets.vault.key', TRANSIT_KEY, 'a transit key name (letters, digits, \'.\', \'_\', \'-\')'),
      mount: r.matching(v, 'mount', 'secrets.vault.mount', TRANSIT_MOUNT, 'a mount path (segments of letters, digits, \'.\', \'_\', \'-\', joined by \'/\')', 'transit'),
      namespace: v.namespace === undefined ? undefined : r.matching(v, 'namespace', 'secrets.vault.namespace', TRANSIT_MOUNT, 'a Vault namespace path (segments joined by \'/\')'),
      token: tokenValue,
    },
  };
}

/** A GitHub address for a cluster: https only (a pod's loopback is not GitHub), no credentials, query or fragment. */
function githubUrl(r: Reader, o: Obj, key: string, example: string, dflt?: string): string {
  const field = `github.${key}`;
  const given = o[key] === undefined && dflt !== undefined ? dflt : r.string(o, key, field);
  let url: URL;
  try {
    url = new URL(given);
  } catch {
    r.fail(field, `(${JSON.stringify(given.slice(0, 200))}) is not a URL; allowed: an https:// address such as ${example}`);
  }
  if (url.protocol !== 'https:') r.fail(field, `(${JSON.stringify(given.slice(0, 200))}) must be an https:// address such as ${example}`);
  if (url.username || url.password) r.fail(field, 'must not carry a user name or password: the app authenticates with its private key');
  if (url.search || url.hash) r.fail(field, `(${JSON.stringify(given.slice(0, 200))}) must not have a query or fragment; allowed: an https:// address such as ${example}`);
  return url.toString().replace(/\/+$/, '');
}

/** An address as githubUrl returns it, for comparing; the value itself when it is no URL. */
function normalUrl(value: string): string {
  try {
    return new URL(value).toString().replace(/\/+$/, '');
  } catch {
    return value;
  }
}

/** A file Terraform can read with file(): valid UTF-8 text. The value is never put in a message. */
function textFile(r: Reader, o: Obj, key: string, field: string): { path: string; text: string } {
  const file = r.existingFile(o, key, field);
  const bytes = fs.readFileSync(file);
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) r.fail(field, `(${JSON.stringify(o[key])}) must be UTF-8 text: Terraform reads it with file()`);
  return { path: file, text };
}

function githubDefinition(r: Reader, raw: unknown): GitHubDefinition {
  const o = r.object(raw, 'github');
  for (const key of Object.keys(o)) {
    if (GITHUB_FIELDS.includes(key)) continue;
    if (key === 'privateKey' || key === 'webhookSecret') {
      r.fail(`github.${key}`, `is not a field: secrets are never written in the environment file; put it in a file and name that in github.${key}File`);
    }
    r.fail(`github.${key}`, `is not a GitHub App setting; allowed: ${GITHUB_FIELDS.join(', ')}`);
  }
  const example = 'https://github.com or https://ghe.example.com';
  if (o.appId === undefined || o.appId === null) r.fail('github.appId', 'is required with github: the numeric App ID from the app\'s settings page, e.g. 123456');
  const appId = String(o.appId);
  if ((typeof o.appId !== 'number' && typeof o.appId !== 'string') || !/^[1-9]\d{0,15}$/.test(appId) || !Number.isSafeInteger(Number(appId))) {
    r.fail('github.appId', `(${JSON.stringify(o.appId)}) must be the app's numeric App ID from its settings page, e.g. 123456 (not its client id)`);
  }
  const webUrl = githubUrl(r, o, 'webUrl', example, 'https://github.com');
  const apiUrl = o.apiUrl === undefined ? defaultGitHubApiUrl(webUrl) : githubUrl(r, o, 'apiUrl', 'https://api.github.com or https://ghe.example.com/api/v3');

  if (o.privateKeyFile === undefined) r.fail('github.privateKeyFile', 'is required with github: the app\'s private key (.pem) as downloaded from its settings page');
  const key = textFile(r, o, 'privateKeyFile', 'github.privateKeyFile');
  let keyType: string | undefined;
  try {
    keyType = createPrivateKey(key.text).asymmetricKeyType;
  } catch {
    keyType = undefined;
  }
  if (keyType !== 'rsa') {
    r.fail('github.privateKeyFile', `(${JSON.stringify(o.privateKeyFile)}) is not an RSA private key in PEM form${keyType ? ` (it is an ${keyType} key)` : ''}; allowed: the .pem generated on the app's settings page`);
  }

  if (o.webhookSecretFile === undefined) r.fail('github.webhookSecretFile', 'is required with github: a file holding the app\'s webhook secret (Gyre refuses unsigned deliveries)');
  const secret = textFile(r, o, 'webhookSecretFile', 'github.webhookSecretFile');
  // The runtime drops one trailing newline from the file, as this does.
  if (secret.text.replace(/\r?\n$/, '').length < 16) {
    r.fail('github.webhookSecretFile', `(${JSON.stringify(o.webhookSecretFile)}) must hold a webhook secret of at least 16 characters (a random value, e.g. \`openssl rand -hex 32\`)`);
  }

  let caFile: string | undefined;
  if (o.caFile !== undefined) {
    const ca = textFile(r, o, 'caFile', 'github.caFile');
    const pems = ca.text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    try {
      if (pems.length === 0) throw new Error('no certificate');
      pems.forEach((pem) => new X509Certificate(pem));
    } catch {
      r.fail('github.caFile', `(${JSON.stringify(o.caFile)}) must hold PEM certificates (-----BEGIN CERTIFICATE-----): the CA GitHub Enterprise Server's certificate chains to`);
    }
    caFile = ca.path;
  }
  const timeoutMs = o.timeoutMs === undefined ? undefined : r.int(o, 'timeoutMs', 'github.timeoutMs', 15_000, 100, 300_000);
  return {
    appId, webUrl, apiUrl, privateKeyFile: key.path, webhookSecretFile: secret.path,
    ...(caFile ? { caFile } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  };
}

function signInDefinition(r: Reader, raw: unknown, domain: string, github?: GitHubDefinition): Record<string, string> {
  const o = r.object(raw ?? {}, 'signIn');
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(o)) {
    if (!SIGN_IN_SETTING.test(key)) r.fail(`signIn.${key}`, 'is not a sign-in setting (GYRE_SESSION_*, GYRE_SIGN_IN_*, GYRE_GITHUB_*, GYRE_OIDC_*, GYRE_LDAP_*; README: Sign-in)');
    if (GITHUB_APP_SETTING.test(key)) r.fail(`signIn.${key}`, 'is a GitHub App setting, not a sign-in one: set the app in the github: section (appId, privateKeyFile, webhookSecretFile, timeoutMs), which mounts its key and secret on the roles that use them');
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      out[key] = String(value);
    } else if (value && typeof value === 'object' && Object.keys(value).join() === 'fromEnv' && typeof (value as { fromEnv: unknown }).fromEnv === 'string') {
      const name = (value as { fromEnv: string }).fromEnv;
      const found = process.env[name];
      if (!found) r.fail(`signIn.${key}`, `reads the environment variable ${name}, which is not set where cdktf runs`);
      out[key] = found;
    } else {
      r.fail(`signIn.${key}`, 'must be a string, or { fromEnv: NAME } to read it from the environment at synth');
    }
  }
  // One Gyre talks to one GitHub: sign-in with GitHub and the app use the same addresses.
  if (github) {
    for (const [setting, field, value] of [['GYRE_GITHUB_URL', 'webUrl', github.webUrl], ['GYRE_GITHUB_API_URL', 'apiUrl', github.apiUrl]] as const) {
      if (out[setting] !== undefined && normalUrl(out[setting]) !== value) {
        r.fail(`signIn.${setting}`, `(${out[setting]}) differs from github.${field} (${value}); one Gyre talks to one GitHub: leave it out and sign-in uses github.${field}`);
      }
    }
    // Every role reads sign-in's settings (the runtime Secret), so sign-in with GitHub and the
    // identity role's repository-role refresh reach the app's GitHub, not github.com.
    if (Object.keys(out).some((k) => k.startsWith('GYRE_GITHUB_'))) {
      out.GYRE_GITHUB_URL = github.webUrl;
      out.GYRE_GITHUB_API_URL = github.apiUrl;
    }
  }
  // Checked now, as the runtime will check it at start: a bad setting fails the synth, not the pods.
  try {
    readSignInSettings({ ...out, GYRE_PUBLIC_URL: `https://${domain}` });
  } catch (error) {
    const setting = (error as { setting?: string }).setting;
    r.fail(setting ? `signIn.${setting}` : 'signIn', (error as Error).message.replace(/^[A-Z0-9_]+: /, ''));
  }
  return out;
}

function stateDefinition(r: Reader, raw: unknown, cloud: 'aws' | 'gcp', region: string): StateDefinition {
  if (raw === undefined || raw === null) {
    r.fail('state', `is required: name the remote state, e.g. { backend: ${cloud === 'aws' ? 's3, bucket: …, dynamodbTable: …' : 'gcs, bucket: …'} } (backend: local only for trials)`);
  }
  const o = r.object(raw, 'state');
  const backend = r.oneOf(o, 'backend', 'state.backend', ['s3', 'gcs', 'local'] as const);
  const allowed: Record<typeof backend, string[]> = {
    s3: ['backend', 'bucket', 'region', 'dynamodbTable', 'kmsKeyId', 'keyPrefix'],
    gcs: ['backend', 'bucket', 'prefix', 'kmsEncryptionKey'],
    local: ['backend'],
  };
  for (const key of Object.keys(o)) {
    if (!allowed[backend].includes(key)) r.fail(`state.${key}`, `is not a setting of the ${backend} backend; allowed: ${allowed[backend].join(', ')}`);
  }
  const prefix = (key: string) => {
    const v = r.matching(o, key, `state.${key}`, /^[A-Za-z0-9._\/-]*$/, 'letters, digits, dots, dashes and slashes', 'gyre/');
    return v;
  };
  switch (backend) {
    case 's3':
      return {
        backend,
        bucket: r.matching(o, 'bucket', 'state.bucket', BUCKET, 'an S3 bucket name'),
        region: r.optString(o, 'region', 'state.region') ?? region,
        dynamodbTable: r.matching(o, 'dynamodbTable', 'state.dynamodbTable', /^[A-Za-z0-9_.-]{3,255}$/, 'a DynamoDB table name (it locks the state)'),
        kmsKeyId: r.optString(o, 'kmsKeyId', 'state.kmsKeyId'),
        keyPrefix: prefix('keyPrefix'),
      };
    case 'gcs':
      return {
        backend,
        bucket: r.matching(o, 'bucket', 'state.bucket', BUCKET, 'a GCS bucket name'),
        prefix: prefix('prefix'),
        kmsEncryptionKey: r.optString(o, 'kmsEncryptionKey', 'state.kmsEncryptionKey'),
      };
    case 'local':
      return { backend };
  }
}

/** ECR on AWS; Artifact Registry or Container Registry on GCP. */
const CLOUD_REGISTRY: Record<'aws' | 'gcp', RegExp> = {
  aws: /^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com$/,
  gcp: /^([a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io)$/,
};

function registryCredentials(r: Reader, nomadRaw: Obj, cloud: 'aws' | 'gcp', registry: string | undefined): RegistryCredentials {
  const host = registry?.split('/')[0];
  const cloudHost = host !== undefined && CLOUD_REGISTRY[cloud].test(host);
  if (nomadRaw.registryCredentials === undefined) {
    if (registry === undefined) return { source: 'none' };
    if (cloudHost) return { source: 'cloud' };
    r.fail('nomad.registryCredentials.source', `is required when registry (${registry}) is not ${cloud === 'aws' ? 'ECR' : 'Artifact Registry or GCR'}: use file (a Docker config.json Nomad clients pull the agent image with) or none (the registry allows anonymous pulls)`);
  }
  const o = r.object(nomadRaw.registryCredentials, 'nomad.registryCredentials');
  const source = r.oneOf(o, 'source', 'nomad.registryCredentials.source', ['cloud', 'file', 'none'] as const);
  if (source === 'cloud' && !cloudHost) {
    r.fail('nomad.registryCredentials.source', `(cloud) needs registry to be ${cloud === 'aws' ? 'an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com/…)' : 'Artifact Registry (<region>-docker.pkg.dev/…) or GCR'}; registry is ${registry ?? 'not set'}`);
  }
  if (source === 'file') return { source, file: r.existingFile(o, 'file', 'nomad.registryCredentials.file') };
  return { source };
}

const BUCKET = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/;

/** Nomad version installed on clients and run as servers unless the environment says otherwise. */
export const NOMAD_VERSION = '1.9.7';
/** Runtime image tag used unless the environment pins one. */
export const DEFAULT_IMAGE_TAG = '0.1.0';

type Obj = Record<string, unknown>;

/** Small typed accessors that name the file and the dotted field in every failure. */
class Reader {
  constructor(private readonly file: string, private readonly baseDir: string) {}

  fail(field: string, detail: string): never {
    throw new EnvironmentError(this.file, field, detail);
  }

  object(v: unknown, field: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, `(${JSON.stringify(v)}) must be a mapping`);
    return v as Obj;
  }

  string(o: Obj, key: string, field: string): string {
    const v = o[key];
    if (v === undefined || v === null) this.fail(field, 'is required');
    if (typeof v !== 'string' || v.trim() === '') this.fail(field, `(${JSON.stringify(v)}) must be a non-empty string`);
    return v;
  }

  optString(o: Obj, key: string, field: string): string | undefined {
    return o[key] === undefined || o[key] === null ? undefined : this.string(o, key, field);
  }

  matching(o: Obj, key: string, field: string, re: RegExp, allowed: string, dflt?: string): string {
    const v = o[key] === undefined && dflt !== undefined ? dflt : this.string(o, key, field);
    if (!re.test(v)) this.fail(field, `(${JSON.stringify(v)}) must be ${allowed}`);
    return v;
  }

  oneOf<T extends string>(o: Obj, key: string, field: string, allowed: readonly T[]): T {
    const v = o[key];
    if (!allowed.includes(v as T)) this.fail(field, `(${JSON.stringify(v ?? null)}) must be one of: ${allowed.join(', ')}`);
    return v as T;
  }

  int(o: Obj, key: string, field: string, dflt: number, min: number, max: number): number {
    const v = o[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(field, `(${JSON.stringify(v)}) must be a whole number from ${min} to ${max}`);
    }
    return v;
  }

  stringList(o: Obj, key: string, field: string, dflt?: string[]): string[] {
    const v = o[key] ?? dflt;
    if (v === undefined) this.fail(field, 'is required');
    if (!Array.isArray(v)) this.fail(field, `(${JSON.stringify(v)}) must be a list`);
    return v.map((item, i) => {
      if (typeof item !== 'string' || item === '') this.fail(`${field}[${i}]`, `(${JSON.stringify(item)}) must be a non-empty string`);
      return item;
    });
  }

  /** A path to an existing file, relative to the environment file's directory; returned absolute. */
  existingFile(o: Obj, key: string, field: string): string {
    const given = this.string(o, key, field);
    const resolved = path.resolve(this.baseDir, given);
    if (!fs.existsSync(resolved) || !fs.statSync(resolved).isFile()) {
      this.fail(field, `(${JSON.stringify(given)}) is not a file (looked for ${resolved}; relative paths are read from the environment file's directory)`);
    }
    return resolved;
  }

  cidr(o: Obj, key: string, field: string, dflt: string): string {
    const v = o[key] === undefined ? dflt : this.string(o, key, field);
    this.checkCidr(v, field);
    return v;
  }

  cidrList(o: Obj, key: string, field: string, dflt?: string[]): string[] {
    const list = this.stringList(o, key, field, dflt);
    list.forEach((c, i) => this.checkCidr(c, `${field}[${i}]`));
    return list;
  }

  private checkCidr(v: string, field: string): void {
    const m = CIDR.exec(v);
    const ok = m !== null && m.slice(1, 5).every((p) => Number(p) <= 255) && Number(m[5]) <= 32;
    if (!ok) this.fail(field, `(${JSON.stringify(v)}) must be an IPv4 CIDR such as 10.0.0.0/16`);
  }
}
