import { Construct } from 'constructs';
import { Fn } from 'cdktf';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import { DeploymentV1 } from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { ServiceAccountV1 } from '@cdktf/provider-kubernetes/lib/service-account-v1';
import { ImageCatalog } from '../images';
import { AUTOSCALER_SERVICE_ACCOUNT } from '../types';
import { RESTRICTED_CONTAINER } from './roles';
import { AUTOSCALER_LABELS, CAN_REACH_HTTPS, CAN_REACH_NOMAD_API } from './labels';

/** The nomad-autoscaler target plugin that resizes the client group, and its settings. */
export type AutoscalerTarget =
  | { readonly driver: 'aws-asg'; readonly region: string; readonly autoScalingGroupName: string }
  | { readonly driver: 'gce-mig'; readonly project: string; readonly region: string; readonly instanceGroupManagerName: string };

export interface NomadAutoscalerProps {
  readonly namespace: string;
  readonly images: ImageCatalog;
  /** HTTPS address of the Nomad API. */
  readonly nomadAddress: string;
  /** Secret holding ca.pem, client.pem and client-key.pem. */
  readonly nomadTlsSecretName: string;
  /** Secret (key `token`) holding the autoscaler's Nomad ACL token. */
  readonly nomadTokenSecretName: string;
  readonly target: AutoscalerTarget;
  readonly minClients: number;
  readonly maxClients: number;
  /** Annotations binding the service account to the cloud identity allowed to scale the group. */
  readonly serviceAccountAnnotations: Record<string, string>;
  /** Nomad node class of the client group. @default 'linux-docker' */
  readonly nodeClass?: string;
  /** Changes when the client certificate is renewed, so the agent restarts onto it. @default - none */
  readonly clientCertificateHash?: string;
  /** Allocated CPU and memory, in percent, the group is scaled to stay at. @default 70 */
  readonly targetUtilization?: number;
}

/** Port of nomad-autoscaler's HTTP server (health and metrics). */
export const AUTOSCALER_HTTP_PORT = 8080;

/**
 * HashiCorp's nomad-autoscaler, scaling the Nomad client group on allocated CPU and memory.
 *
 * The agent decodes its configuration with hclsimple into fixed structures, so only the keys its
 * source declares are accepted: plugin settings are the `config = { … }` attribute (a map of
 * strings), not a block; test/constructs/nomad-autoscaler-config.test.ts checks every key against
 * the agent's own list.
 */
export class NomadAutoscaler extends Construct {
  readonly deployment: DeploymentV1;

  constructor(scope: Construct, id: string, props: NomadAutoscalerProps) {
    super(scope, id);
    if (props.maxClients < props.minClients) {
      throw new Error(`maxClients (${props.maxClients}) must be at least minClients (${props.minClients})`);
    }
    const utilization = props.targetUtilization ?? 70;
    if (utilization < 10 || utilization > 95) throw new Error(`targetUtilization (${utilization}) must be between 10 and 95`);
    const labels = AUTOSCALER_LABELS;
    const ns = props.namespace;
    const t = props.target;
    const nodeClass = props.nodeClass ?? 'linux-docker';
    if (!/^[a-z0-9-]+$/.test(nodeClass)) throw new Error(`nodeClass (${nodeClass}) must be lowercase letters, digits and dashes`);
    // The gce-mig plugin reads project and region from the policy's target (older releases only
    // there), so the policy names them too.
    const targetConfig = t.driver === 'aws-asg'
      ? { plugin: [`aws_region = "${t.region}"`], policy: [`aws_asg_name = "${t.autoScalingGroupName}"`] }
      : {
        plugin: [`project = "${t.project}"`, `region  = "${t.region}"`],
        policy: [`mig_name = "${t.instanceGroupManagerName}"`, `project  = "${t.project}"`, `region   = "${t.region}"`],
      };
    // nomad-apm node queries: node_percentage-allocated_<cpu|memory>/<node class>/class.
    const query = (metric: 'cpu' | 'memory') => `node_percentage-allocated_${metric}/${nodeClass}/class`;

    const config = new ConfigMapV1(this, 'Config', {
      metadata: { name: 'nomad-autoscaler', namespace: ns },
      data: {
        // The ACL token comes from NOMAD_TOKEN in the environment (the agent's Nomad client reads it).
        'agent.hcl': `http {
  bind_address = "0.0.0.0"
  bind_port    = ${AUTOSCALER_HTTP_PORT}
}
nomad {
  address     = "${props.nomadAddress}"
  ca_cert     = "/etc/nomad-autoscaler/tls/ca.pem"
  client_cert = "/etc/nomad-autoscaler/tls/client.pem"
  client_key  = "/etc/nomad-autoscaler/tls/client-key.pem"
}
policy {
  dir = "/etc/nomad-autoscaler/policies"
}
apm "nomad-apm" {
  driver = "nomad-apm"
}
target "${t.driver}" {
  driver = "${t.driver}"
  config = {
${targetConfig.plugin.map((l) => `    ${l}`).join('\n')}
  }
}
telemetry {
  prometheus_metrics = true
}
`,
        'clients.hcl': `scaling "nomad-clients" {
  enabled = true
  min     = ${props.minClients}
  max     = ${props.maxClients}
  policy {
    cooldown            = "3m"
    evaluation_interval = "1m"
    check "allocated_cpu" {
      source = "nomad-apm"
      query  = "${query('cpu')}"
      strategy "target-value" {
        target = "${utilization}"
      }
    }
    check "allocated_memory" {
      source = "nomad-apm"
      query  = "${query('memory')}"
      strategy "target-value" {
        target = "${utilization}"
      }
    }
    target "${t.driver}" {
${targetConfig.policy.map((l) => `      ${l}`).join('\n')}
      node_class          = "${nodeClass}"
      node_drain_deadline = "15m"
      node_purge          = "true"
    }
  }
}
`,
      },
    });

    new ServiceAccountV1(this, 'ServiceAccount', {
      metadata: { name: AUTOSCALER_SERVICE_ACCOUNT, namespace: ns, annotations: props.serviceAccountAnnotations },
      automountServiceAccountToken: false,
    });

    this.deployment = new DeploymentV1(this, 'Deployment', {
      metadata: { name: 'nomad-autoscaler', namespace: ns, labels },
      spec: {
        // Exactly one: two autoscalers would fight over the group's size.
        replicas: '1',
        strategy: { type: 'Recreate' },
        selector: { matchLabels: labels },
        template: {
          metadata: {
            labels: { ...labels, ...CAN_REACH_NOMAD_API, ...CAN_REACH_HTTPS },
            annotations: {
              'gyre.dev/config-hash': Fn.sha256(Fn.jsonencode(config.data)),
              ...(props.clientCertificateHash ? { 'gyre.dev/tls-hash': props.clientCertificateHash } : {}),
            },
          },
          spec: {
            serviceAccountName: AUTOSCALER_SERVICE_ACCOUNT,
            // The projected token is how IRSA / Workload Identity authenticate.
            automountServiceAccountToken: true,
            securityContext: { runAsNonRoot: true, runAsUser: '65532', runAsGroup: '65532', fsGroup: '65532', seccompProfile: { type: 'RuntimeDefault' } },
            container: [{
              name: 'nomad-autoscaler',
              image: props.images.ref('nomad-autoscaler'),
              command: ['nomad-autoscaler'],
              args: ['agent', '-config=/etc/nomad-autoscaler/config/agent.hcl'],
              port: [{ name: 'http', containerPort: AUTOSCALER_HTTP_PORT }],
              env: [{ name: 'NOMAD_TOKEN', valueFrom: { secretKeyRef: { name: props.nomadTokenSecretName, key: 'token' } } }],
              resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
              readinessProbe: { httpGet: { path: '/v1/health', port: 'http' }, periodSeconds: 10 },
              livenessProbe: { httpGet: { path: '/v1/health', port: 'http' }, periodSeconds: 30 },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [
                { name: 'config', mountPath: '/etc/nomad-autoscaler/config', readOnly: true },
                { name: 'policies', mountPath: '/etc/nomad-autoscaler/policies', readOnly: true },
                { name: 'tls', mountPath: '/etc/nomad-autoscaler/tls', readOnly: true },
              ],
            }],
            volume: [
              { name: 'config', configMap: { name: 'nomad-autoscaler', items: [{ key: 'agent.hcl', path: 'agent.hcl' }] } },
              { name: 'policies', configMap: { name: 'nomad-autoscaler', items: [{ key: 'clients.hcl', path: 'clients.hcl' }] } },
              { name: 'tls', secret: { secretName: props.nomadTlsSecretName, defaultMode: '0440' } },
            ],
          },
        },
      },
    });
  }
}
