import { NomadTls } from '../constructs/nomad-tls';
import { AutoscalerTarget } from '../constructs/kubernetes/nomad-autoscaler';
import { IKubernetesCluster, IObjectStore } from '../constructs/types';

/** What an `<env>-infra` stack hands its `<env>-server` stack (wired as Terraform outputs). */
export interface InfraOutputs {
  readonly cloud: 'aws' | 'gcp';
  readonly cluster: IKubernetesCluster;
  readonly objectStore: IObjectStore;
  /** URL of the managed database. @default - the operator supplies DATABASE_URL at deploy time */
  readonly databaseUrl?: string;
  readonly nomadTls: NomadTls;
  /** Cloud identity (IAM role ARN / service account email) of the runtime's pods. */
  readonly runtimeIdentity: string;
  /** Cloud identity nomad-autoscaler acts as. */
  readonly autoscalerIdentity: string;
  readonly autoscalerTarget: AutoscalerTarget;
  /** Address ranges inside the network (allowed through the load balancer for 4647 and 8585). */
  readonly internalCidrs: string[];
}
