import { NomadTls } from '../constructs/nomad-tls';
import { AutoscalerTarget } from '../constructs/kubernetes/nomad-autoscaler';
import { IKubernetesCluster, IObjectStore, ISecretsKey } from '../constructs/types';
import { DatabaseCa, MachinesProps } from '../constructs/kubernetes/control-plane';

/** What an `<env>-infra` stack hands its `<env>-server` stack (wired as Terraform outputs). */
export interface InfraOutputs {
  readonly cloud: 'aws' | 'gcp';
  readonly cluster: IKubernetesCluster;
  readonly objectStore: IObjectStore;
  /** The KMS key secrets' data keys are wrapped with. @default - none: the environment uses Vault transit */
  readonly secretsKey?: ISecretsKey;
  /** URL of the managed database. @default - the operator supplies DATABASE_URL at deploy time */
  readonly databaseUrl?: string;
  /** The CA the managed database's certificate chains to. @default - the environment's database.caFile, if any */
  readonly databaseCa?: DatabaseCa;
  /** Where the managed database is (the only addresses runtime pods may reach on its port). */
  readonly databaseCidrs?: string[];
  readonly nomadTls: NomadTls;
  /** Cloud identity (IAM role ARN / service account email) of the runtime's pods. */
  readonly runtimeIdentity: string;
  /** Cloud identity nomad-autoscaler acts as. */
  readonly autoscalerIdentity: string;
  readonly autoscalerTarget: AutoscalerTarget;
  /** Address ranges inside the network (Nomad clients; allowed through the load balancer for 4647). */
  readonly internalCidrs: string[];
  /** EKS: the IAM role cluster-autoscaler acts as (GKE scales its node pool itself). */
  readonly clusterAutoscalerIdentity?: string;
  /** The machine executor's settings for the `machines` role. @default - the environment has no `machines:` */
  readonly machines?: MachinesProps;
}
