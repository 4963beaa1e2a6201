/**
 * Cloud-neutral interfaces the stacks compose. Each cloud's constructs implement them, so the server
 * stack deploys the control plane the same way on EKS and GKE.
 */

/** A Kubernetes cluster the control plane runs in. */
export interface IKubernetesCluster {
  readonly clusterName: string;
  /** HTTPS endpoint of the API server. */
  readonly endpoint: string;
  /** Base64-encoded PEM of the cluster CA. */
  readonly caCertificate: string;
  /** Annotation a Kubernetes service account carries to act as a cloud identity (IRSA / Workload Identity). */
  identityAnnotation(identity: string): Record<string, string>;
}

/** Object storage for logs, artifacts, caches, workspaces and test results. */
export interface IObjectStore {
  readonly bucketName: string;
  /** Environment variables that point the runtime's BlobStore at this store. */
  readonly runtimeEnvironment: Record<string, string>;
  /** Lets a cloud identity (an IAM role name on AWS, an IAM member on GCP) read and write objects. */
  grantReadWrite(principal: string): void;
}

/**
 * The key that wraps the data keys of secrets (contexts' and projects' variables): one key every
 * runtime pod uses, so a value one pod seals opens in any other.
 */
export interface ISecretsKey {
  /** Settings that point the runtime's KeyWrapper at this key (GYRE_SECRETS_KEY_WRAPPER and the key's name). */
  readonly runtimeEnvironment: Record<string, string>;
  /** Lets a cloud identity (an IAM role name on AWS, an IAM member on GCP) wrap and unwrap data keys with this key, and no other. */
  grantEncryptDecrypt(principal: string): void;
}

/** The PostgreSQL database the runtime stores state in. */
export interface IDatabase {
  /** Host name or private address. */
  readonly host: string;
  readonly port: number;
  /** `postgres://` URL including credentials (sensitive). */
  readonly url: string;
}

/** Namespace and service-account names the cloud identities trust; fixed so both stacks agree. */
export const GYRE_NAMESPACE = 'gyre';
export const RUNTIME_SERVICE_ACCOUNT = 'gyre-runtime';
export const AUTOSCALER_SERVICE_ACCOUNT = 'nomad-autoscaler';

/** Name of the Service in front of the Nomad servers' HTTP API and RPC. */
export const NOMAD_SERVICE = 'nomad-server';

/**
 * Every name the Nomad servers are reached by inside the cluster: the short Service name and its
 * namespace-qualified forms. The server certificate carries all of them, so the scheduler and
 * nomad-autoscaler verify it whichever spelling they use.
 */
export function nomadServiceDnsNames(namespace: string = GYRE_NAMESPACE): string[] {
  return [NOMAD_SERVICE, `${NOMAD_SERVICE}.${namespace}`, `${NOMAD_SERVICE}.${namespace}.svc`, `${NOMAD_SERVICE}.${namespace}.svc.cluster.local`];
}
