import { Construct } from 'constructs';
import { Release } from '@cdktf/provider-helm/lib/release';
import { stringify } from 'yaml';
import { ImageCatalog } from '../images';

export interface MetricsServerProps {
  readonly images: ImageCatalog;
}

/**
 * metrics-server from its Helm chart: the resource metrics the api and output HPAs scale on. EKS
 * does not ship it; GKE does, so only the AWS server stack adds it. The chart repository and image
 * come from the catalog, so air-gapped installs pull both from the mirror.
 */
export class MetricsServer extends Construct {
  constructor(scope: Construct, id: string, props: MetricsServerProps) {
    super(scope, id);
    const chart = props.images.chart('metrics-server');
    new Release(this, 'Release', {
      name: 'metrics-server',
      namespace: 'kube-system',
      repository: chart.repository,
      chart: 'metrics-server',
      version: chart.version,
      atomic: true,
      values: [stringify({
        image: { repository: props.images.repository('metrics-server'), tag: props.images.tag('metrics-server') },
        replicas: 2,
        podDisruptionBudget: { enabled: true, maxUnavailable: 1 },
      })],
    });
  }
}
