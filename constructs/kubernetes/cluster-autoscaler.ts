import { Construct } from 'constructs';
import { Release } from '@cdktf/provider-helm/lib/release';
import { stringify } from 'yaml';
import { ImageCatalog } from '../images';

/** Service account cluster-autoscaler runs as in kube-system (its IAM role trusts exactly this). */
export const CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = 'cluster-autoscaler';

export interface ClusterAutoscalerProps {
  readonly images: ImageCatalog;
  readonly clusterName: string;
  readonly region: string;
  /** IAM role (IRSA) allowed to resize the cluster's node groups. */
  readonly roleArn: string;
}

/**
 * Kubernetes cluster-autoscaler for EKS, from its Helm chart: adds nodes when pods cannot be
 * scheduled (the api and output HPAs, a new release's surge) and removes idle ones, within the node
 * group's min and max. It finds the managed node group by the tags EKS puts on its Auto Scaling
 * group. Chart and image come from the catalog, so air-gapped installs pull both from the mirror.
 * GKE needs none: its node pool autoscales.
 */
export class ClusterAutoscaler extends Construct {
  constructor(scope: Construct, id: string, props: ClusterAutoscalerProps) {
    super(scope, id);
    const chart = props.images.chart('cluster-autoscaler');
    new Release(this, 'Release', {
      name: 'cluster-autoscaler',
      namespace: 'kube-system',
      repository: chart.repository,
      chart: 'cluster-autoscaler',
      version: chart.version,
      atomic: true,
      values: [stringify({
        cloudProvider: 'aws',
        awsRegion: props.region,
        autoDiscovery: { clusterName: props.clusterName },
        image: { repository: props.images.repository('cluster-autoscaler'), tag: props.images.tag('cluster-autoscaler') },
        rbac: {
          serviceAccount: {
            create: true,
            name: CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
            annotations: { 'eks.amazonaws.com/role-arn': props.roleArn },
          },
        },
        extraArgs: { 'balance-similar-node-groups': true, 'skip-nodes-with-system-pods': false, expander: 'least-waste' },
        replicaCount: 1,
      })],
    });
  }
}
