import { Construct } from 'constructs';
import { Fn } from 'cdktf';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import { SecretV1 } from '@cdktf/provider-kubernetes/lib/secret-v1';
import { ServiceV1 } from '@cdktf/provider-kubernetes/lib/service-v1';
import { StatefulSetV1 } from '@cdktf/provider-kubernetes/lib/stateful-set-v1';
import { PodDisruptionBudgetV1 } from '@cdktf/provider-kubernetes/lib/pod-disruption-budget-v1';
import { ImageCatalog } from '../images';
import { RESTRICTED_CONTAINER } from './roles';
import { NOMAD_SERVER_LABELS } from './labels';
import { GYRE_NAMESPACE, NOMAD_SERVICE } from '../types';

export interface NomadServersProps {
  readonly namespace: string;
  readonly images: ImageCatalog;
  readonly caPem: string;
  readonly serverCertPem: string;
  readonly serverKeyPem: string;
  /** Base64 gossip encryption key. */
  readonly gossipKey: string;
  /** @default 3 */
  readonly replicas?: number;
  /** Storage class of the data volumes. @default - the cluster's default class */
  readonly storageClassName?: string;
  /** @default '10Gi' */
  readonly volumeSize?: string;
  /** @default 'global' */
  readonly region?: string;
}

/**
 * Nomad servers as a StatefulSet inside the cluster: Raft state on persistent volumes, gossip
 * encrypted, RPC and HTTP under mutual TLS (clients of the HTTP API must present a certificate
 * from the Nomad CA too), and ACLs on: every API call needs a token (see NomadAcl). Nomad clients
 * reach them through the load balancer's port 4647; the scheduler role and nomad-autoscaler use
 * the `nomad-server` Service.
 */
export class NomadServers extends Construct {
  /** In-cluster HTTPS address of the Nomad API. */
  readonly address: string;
  readonly statefulSet: StatefulSetV1;

  constructor(scope: Construct, id: string, props: NomadServersProps) {
    super(scope, id);
    const replicas = props.replicas ?? 3;
    if (![1, 3, 5].includes(replicas)) throw new Error(`replicas (${replicas}) must be 1, 3 or 5 (Raft needs an odd quorum)`);
    const labels = NOMAD_SERVER_LABELS;
    const ns = props.namespace;
    const region = props.region ?? 'global';
    // DNS names use the namespace's literal name (the namespace prop is its Terraform reference), so
    // they can be checked against the server certificate's names at synth time.
    this.address = `https://${NOMAD_SERVICE}.${GYRE_NAMESPACE}.svc.cluster.local:4646`;

    const peers = Array.from({ length: replicas }, (_, i) => `"nomad-server-${i}.nomad-server-headless.${GYRE_NAMESPACE}.svc.cluster.local"`);
    const config = new ConfigMapV1(this, 'Config', {
      metadata: { name: 'nomad-server', namespace: ns },
      data: {
        'server.hcl': [
          `region     = "${region}"`,
          'datacenter = "default"',
          'data_dir   = "/nomad/data"',
          'bind_addr  = "0.0.0.0"',
          'advertise {',
          '  http = "{{ GetPrivateIP }}"',
          '  rpc  = "{{ GetPrivateIP }}"',
          '  serf = "{{ GetPrivateIP }}"',
          '}',
          'server {',
          '  enabled          = true',
          `  bootstrap_expect = ${replicas}`,
          `  server_join { retry_join = [${peers.join(', ')}] }`,
          '}',
          'tls {',
          '  http                   = true',
          '  rpc                    = true',
          '  ca_file                = "/nomad/tls/ca.pem"',
          '  cert_file              = "/nomad/tls/server.pem"',
          '  key_file               = "/nomad/tls/server-key.pem"',
          '  verify_server_hostname = true',
          '  # The HTTP API, like RPC, only answers clients with a certificate from the Nomad CA;',
          '  # the probes below go through the nomad CLI with the server certificate.',
          '  verify_https_client    = true',
          '}',
          'acl {',
          '  enabled = true',
          '}',
          'telemetry {',
          '  prometheus_metrics         = true',
          '  publish_allocation_metrics = true',
          '}',
          '',
        ].join('\n'),
      },
    });

    new SecretV1(this, 'Tls', {
      metadata: { name: 'nomad-server-tls', namespace: ns },
      data: { 'ca.pem': props.caPem, 'server.pem': props.serverCertPem, 'server-key.pem': props.serverKeyPem },
    });
    new SecretV1(this, 'Gossip', {
      metadata: { name: 'nomad-gossip', namespace: ns },
      data: { key: props.gossipKey },
    });

    new ServiceV1(this, 'Headless', {
      metadata: { name: 'nomad-server-headless', namespace: ns, labels },
      spec: {
        clusterIp: 'None',
        publishNotReadyAddresses: true,
        selector: labels,
        port: [{ name: 'http', port: 4646 }, { name: 'rpc', port: 4647 }, { name: 'serf', port: 4648 }],
      },
    });
    new ServiceV1(this, 'Service', {
      metadata: { name: NOMAD_SERVICE, namespace: ns, labels },
      spec: { selector: labels, port: [{ name: 'http', port: 4646 }, { name: 'rpc', port: 4647 }] },
    });

    this.statefulSet = new StatefulSetV1(this, 'StatefulSet', {
      metadata: { name: 'nomad-server', namespace: ns, labels },
      spec: {
        serviceName: 'nomad-server-headless',
        replicas: String(replicas),
        podManagementPolicy: 'Parallel',
        selector: { matchLabels: labels },
        template: {
          metadata: {
            labels,
            annotations: {
              'prometheus.io/scrape': 'true',
              'prometheus.io/port': '4646',
              'prometheus.io/scheme': 'https',
              'prometheus.io/path': '/v1/metrics?format=prometheus',
              'gyre.dev/config-hash': Fn.sha256(Fn.jsonencode(config.data)),
              // A renewed certificate rolls the servers, one at a time, onto it.
              'gyre.dev/tls-hash': Fn.sha256(props.serverCertPem),
            },
          },
          spec: {
            automountServiceAccountToken: false,
            securityContext: { runAsNonRoot: true, runAsUser: '1000', runAsGroup: '1000', fsGroup: '1000', seccompProfile: { type: 'RuntimeDefault' } },
            affinity: {
              podAntiAffinity: {
                preferredDuringSchedulingIgnoredDuringExecution: [{
                  weight: 100,
                  podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: [{ matchLabels: labels }] },
                }],
              },
            },
            container: [{
              name: 'nomad',
              image: props.images.ref('nomad'),
              command: ['nomad'],
              // Kubernetes expands $(NOMAD_GOSSIP_KEY) from the env below.
              args: ['agent', '-config=/nomad/config/server.hcl', '-encrypt=$(NOMAD_GOSSIP_KEY)'],
              env: [
                { name: 'NOMAD_GOSSIP_KEY', valueFrom: { secretKeyRef: { name: 'nomad-gossip', key: 'key' } } },
                // For the nomad CLI the probes run: the local agent, with the server's own certificate.
                { name: 'NOMAD_ADDR', value: 'https://127.0.0.1:4646' },
                { name: 'NOMAD_CACERT', value: '/nomad/tls/ca.pem' },
                { name: 'NOMAD_CLIENT_CERT', value: '/nomad/tls/server.pem' },
                { name: 'NOMAD_CLIENT_KEY', value: '/nomad/tls/server-key.pem' },
              ],
              port: [
                { name: 'http', containerPort: 4646 },
                { name: 'rpc', containerPort: 4647 },
                { name: 'serf-tcp', containerPort: 4648, protocol: 'TCP' },
                { name: 'serf-udp', containerPort: 4648, protocol: 'UDP' },
              ],
              resources: { requests: { cpu: '500m', memory: '1Gi' }, limits: { memory: '2Gi' } },
              // The kubelet cannot present a client certificate, so HTTPS probes would fail the TLS
              // handshake: readiness asks the agent's health endpoint through the CLI (which exits
              // 0 whatever the status, hence the grep), liveness only needs the port.
              readinessProbe: {
                exec: { command: ['/bin/sh', '-c', `nomad operator api '/v1/agent/health?type=server' | grep -q '"ok":true'`] },
                periodSeconds: 10,
                timeoutSeconds: 5,
              },
              livenessProbe: { tcpSocket: [{ port: '4646' }], periodSeconds: 30, initialDelaySeconds: 60 },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [
                { name: 'data', mountPath: '/nomad/data' },
                { name: 'config', mountPath: '/nomad/config', readOnly: true },
                { name: 'tls', mountPath: '/nomad/tls', readOnly: true },
              ],
            }],
            volume: [
              { name: 'config', configMap: { name: 'nomad-server' } },
              // Group-readable: files are owned by root with the pod's fsGroup, and nomad runs as 1000.
              { name: 'tls', secret: { secretName: 'nomad-server-tls', defaultMode: '0440' } },
            ],
          },
        },
        volumeClaimTemplate: [{
          metadata: { name: 'data' },
          spec: {
            accessModes: ['ReadWriteOnce'],
            storageClassName: props.storageClassName,
            resources: { requests: { storage: props.volumeSize ?? '10Gi' } },
          },
        }],
      },
    });

    new PodDisruptionBudgetV1(this, 'Disruption', {
      metadata: { name: 'nomad-server', namespace: ns },
      spec: { maxUnavailable: '1', selector: { matchLabels: labels } },
    });
  }
}
