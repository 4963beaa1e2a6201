import 'cdktf/lib/testing/adapters/jest';
import { Testing } from 'cdktf';
import { DeploymentV1 } from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { ServiceV1 } from '@cdktf/provider-kubernetes/lib/service-v1';
import { HorizontalPodAutoscalerV2 } from '@cdktf/provider-kubernetes/lib/horizontal-pod-autoscaler-v2';
import { PodDisruptionBudgetV1 } from '@cdktf/provider-kubernetes/lib/pod-disruption-budget-v1';
import { StatefulSetV1 } from '@cdktf/provider-kubernetes/lib/stateful-set-v1';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import { ControlPlane, ControlPlaneProps } from '../../constructs/kubernetes/control-plane';
import { NomadServers } from '../../constructs/kubernetes/nomad-servers';
import { NomadAutoscaler } from '../../constructs/kubernetes/nomad-autoscaler';
import { RUNTIME_ROLES } from '../../constructs/kubernetes/roles';
import { ImageCatalog } from '../../constructs/images';

Testing.setupJest();

const resources = (out: string, type: string): any[] => Object.values(JSON.parse(out).resource[type] ?? {});
const images = new ImageCatalog({ gyreTag: '9.9.9' });
const base: ControlPlaneProps = {
  images, domain: 'gyre.example.com', cloud: 'aws', databaseUrl: 'postgres://u:p@db:5432/gyre',
  blobEnvironment: { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'bucket', GYRE_S3_REGION: 'us-east-1' },
  serviceAccountAnnotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/runtime' },
  tls: { mode: 'self-signed' }, nomad: { caPem: 'ca', clientCertPem: 'cert', clientKeyPem: 'key' },
  loadBalancerSourceRanges: ['0.0.0.0/0'],
};
const synth = (props: Partial<ControlPlaneProps> = {}) => Testing.synthScope((s) => new ControlPlane(s, 'ControlPlane', { ...base, ...props }));
const deployment = (out: string, name: string) => resources(out, DeploymentV1.tfResourceType).find((d) => d.metadata.name === name);

describe('ControlPlane', () => {
  test('one Deployment per runtime role, each `gyre server --roles=<role>` from the one runtime image', () => {
    const out = synth();
    for (const role of RUNTIME_ROLES) {
      const container = deployment(out, `gyre-${role.name}`).spec.template.spec.container[0];
      expect(container.image).toBe('ghcr.io/gyre-ci/runtime:9.9.9');
      expect([...container.command, ...container.args]).toEqual(['gyre', 'server', `--roles=${role.name}`]);
    }
  });

  test('machines is deployed but off by default; an environment can turn it on', () => {
    expect(deployment(synth(), 'gyre-machines').spec.replicas).toBe('0');
    expect(deployment(synth({ replicas: { machines: 2 } }), 'gyre-machines').spec.replicas).toBe('2');
  });

  test('every role has health probes on /healthz, requests and a memory limit, and runs non-root read-only', () => {
    const container = deployment(synth(), 'gyre-dispatcher').spec.template.spec.container[0];
    expect(container.readiness_probe.http_get).toEqual({ path: '/healthz', port: 'http' });
    expect(container.liveness_probe.http_get).toEqual({ path: '/healthz', port: 'http' });
    expect(container.resources.requests).toEqual({ cpu: '250m', memory: '256Mi' });
    expect(container.resources.limits).toEqual({ memory: '512Mi' });
    expect(container.security_context).toMatchObject({ run_as_non_root: true, read_only_root_filesystem: true, allow_privilege_escalation: false });
  });

  test('the runtime is configured through the documented variables and scraped by Prometheus', () => {
    const d = deployment(synth(), 'gyre-api');
    const env = Object.fromEntries(d.spec.template.spec.container[0].env.map((e: any) => [e.name, e.value]));
    expect(env).toMatchObject({ GYRE_PORT: '8080', GYRE_DATA_DIR: '/var/lib/gyre', GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'bucket', GYRE_S3_REGION: 'us-east-1' });
    expect(d.spec.template.spec.container[0].env_from).toEqual([{ secret_ref: { name: 'gyre-runtime' } }]);
    expect(d.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
  });

  test('only the scheduler gets the Nomad client certificate and the agent image', () => {
    const out = synth();
    const names = (d: any) => d.spec.template.spec.container[0].env.map((e: any) => e.name);
    expect(names(deployment(out, 'gyre-scheduler'))).toEqual(expect.arrayContaining(['NOMAD_ADDR', 'NOMAD_CLIENT_CERT', 'GYRE_AGENT_IMAGE']));
    expect(names(deployment(out, 'gyre-api'))).not.toContain('NOMAD_CLIENT_CERT');
  });

  test('HPAs for api and output only, and a PodDisruptionBudget per role', () => {
    const out = synth();
    expect(resources(out, HorizontalPodAutoscalerV2.tfResourceType).map((h) => h.metadata.name).sort()).toEqual(['gyre-api', 'gyre-output']);
    expect(out).toHaveResourceWithProperties(HorizontalPodAutoscalerV2, {
      spec: expect.objectContaining({ min_replicas: 2, max_replicas: 10 }),
    });
    expect(resources(out, PodDisruptionBudgetV1.tfResourceType)).toHaveLength(RUNTIME_ROLES.length + 1);
  });

  test('one LoadBalancer exposes 80/443, 4647, 8585 and 3000 through the edge, limited to the source ranges', () => {
    const lb = resources(synth({ loadBalancerSourceRanges: ['198.51.100.0/24'] }), ServiceV1.tfResourceType).find((s) => s.spec.type === 'LoadBalancer');
    expect(lb.spec.port.map((p: any) => p.port)).toEqual([80, 443, 4647, 8585, 3000]);
    expect(lb.spec.load_balancer_source_ranges).toEqual(['198.51.100.0/24']);
    expect(lb.spec.selector).toEqual({ 'app.kubernetes.io/name': 'gyre', 'app.kubernetes.io/component': 'edge' });
  });

  test('with ACM the AWS load balancer terminates 443 and the edge serves plain HTTP behind it', () => {
    const out = synth({ tls: { mode: 'acm', certificateArn: 'arn:aws:acm:us-east-1:1:certificate/x' } });
    const lb = resources(out, ServiceV1.tfResourceType).find((s) => s.spec.type === 'LoadBalancer');
    expect(lb.metadata.annotations['service.beta.kubernetes.io/aws-load-balancer-ssl-cert']).toBe('arn:aws:acm:us-east-1:1:certificate/x');
    expect(lb.spec.port[1]).toEqual({ name: 'https', port: 443, target_port: 'https-offload' });
    const conf = resources(out, ConfigMapV1.tfResourceType).find((c) => c.metadata.name === 'gyre-edge').data['nginx.conf'];
    expect(conf).not.toContain('ssl_certificate');
  });

  test('the edge forwards Nomad RPC to the servers and the output port to the output role', () => {
    const conf = resources(synth(), ConfigMapV1.tfResourceType).find((c) => c.metadata.name === 'gyre-edge').data['nginx.conf'];
    expect(conf).toContain('listen 4647; proxy_pass nomad-server.gyre.svc.cluster.local:4647;');
    expect(conf).toContain('listen 8585; proxy_pass gyre-output.gyre.svc.cluster.local:8080;');
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    expect(conf).not.toContain('${');
  });

  test('the Nomad job template runs the agent image and escapes Nomad interpolation from Terraform', () => {
    const template = resources(synth(), ConfigMapV1.tfResourceType).find((c) => c.metadata.name === 'gyre-nomad-job-template').data['task-agent.json'];
    expect(template).toContain('"image": "ghcr.io/gyre-ci/agent:9.9.9"');
    expect(template).toContain('$${node.class}');
  });

  test('rejects replicas for a role that does not exist', () => {
    expect(() => synth({ replicas: { webhooks: 1 } })).toThrow(/replicas.webhooks names no runtime role; allowed: api, triggers/);
  });
});

describe('NomadServers', () => {
  const synth = (replicas?: number) => Testing.synthScope((s) => new NomadServers(s, 'Nomad', {
    namespace: 'gyre', images, caPem: 'ca', serverCertPem: 'cert', serverKeyPem: 'key', gossipKey: 'k', storageClassName: 'gyre-gp3', replicas,
  }));

  test('a StatefulSet of three with persistent volumes, gossip encryption and TLS probes', () => {
    const sts = resources(synth(), StatefulSetV1.tfResourceType)[0];
    expect(sts.spec.replicas).toBe('3');
    expect(sts.spec.volume_claim_template[0].spec.storage_class_name).toBe('gyre-gp3');
    const c = sts.spec.template.spec.container[0];
    expect(c.image).toBe('docker.io/hashicorp/nomad:1.9.7');
    expect(c.args).toContain('-encrypt=$(NOMAD_GOSSIP_KEY)');
    expect(c.readiness_probe.http_get.scheme).toBe('HTTPS');
  });

  test('the server configuration turns on mutual TLS and joins its peers', () => {
    const hcl = resources(synth(), ConfigMapV1.tfResourceType)[0].data['server.hcl'];
    expect(hcl).toContain('rpc                    = true');
    expect(hcl).toContain('verify_server_hostname = true');
    expect(hcl).toContain('bootstrap_expect = 3');
    expect(hcl).toContain('"nomad-server-2.nomad-server-headless.gyre.svc.cluster.local"');
  });

  test('refuses an even number of servers', () => {
    expect(() => synth(2)).toThrow('replicas (2) must be 1, 3 or 5 (Raft needs an odd quorum)');
  });
});

describe('NomadAutoscaler', () => {
  test('one replica with its cloud identity, scaling the group between min and max', () => {
    const out = Testing.synthScope((s) => new NomadAutoscaler(s, 'Autoscaler', {
      namespace: 'gyre', images, nomadAddress: 'https://nomad-server:4646', nomadTlsSecretName: 'tls',
      target: { driver: 'aws-asg', region: 'us-east-1', autoScalingGroupName: 'asg-1' }, minClients: 1, maxClients: 7,
      serviceAccountAnnotations: { 'eks.amazonaws.com/role-arn': 'arn:role' },
    }));
    expect(out).toHaveResourceWithProperties(DeploymentV1, { spec: expect.objectContaining({ replicas: '1' }) });
    const policy = resources(out, ConfigMapV1.tfResourceType)[0].data['clients.hcl'];
    expect(policy).toContain('min     = 1');
    expect(policy).toContain('max     = 7');
    expect(policy).toContain('aws_asg_name = "asg-1"');
    expect(out).toContain('"eks.amazonaws.com/role-arn": "arn:role"');
  });
});
