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
import { JobV1 } from '@cdktf/provider-kubernetes/lib/job-v1';
import { RUNTIME_ROLES } from '../../constructs/kubernetes/roles';
import { DATABASE_CA_MOUNT } from '../../constructs/kubernetes/control-plane';
import { ImageCatalog } from '../../constructs/images';
import { DEFAULT_API_PORT, DEFAULT_OPS_PORT, ROLE_NAMES } from '../../runtime/roles/names';

Testing.setupJest();

const resources = (out: string, type: string): any[] => Object.values(JSON.parse(out).resource[type] ?? {});
const images = new ImageCatalog({ gyreTag: '9.9.9' });
const base: ControlPlaneProps = {
  images, domain: 'gyre.example.com', cloud: 'aws', databaseUrl: 'postgres://u:p@db:5432/gyre',
  blobEnvironment: { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'bucket', GYRE_S3_REGION: 'us-east-1' },
  serviceAccountAnnotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/runtime' },
  tls: { mode: 'self-signed' }, nomad: { address: 'https://nomad-server.gyre.svc.cluster.local:4646', caPem: 'ca', clientCertPem: 'cert', clientKeyPem: 'key' },
  loadBalancerSourceRanges: ['0.0.0.0/0'],
  keyWrapper: { environment: { GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: 'arn:aws:kms:us-east-1:123456789012:key/0b6a3c1e-0000-4000-8000-000000000001' } },
};
const synth = (props: Partial<ControlPlaneProps> = {}) => Testing.synthScope((s) => new ControlPlane(s, 'ControlPlane', { ...base, ...props }));
const deployment = (out: string, name: string) => resources(out, DeploymentV1.tfResourceType).find((d) => d.metadata.name === name);

describe('ControlPlane', () => {
  test('exactly one Deployment per role with code behind it, each `gyre server --roles=<role>` from the one runtime image', () => {
    const out = synth();
    const runtimeDeployments = resources(out, DeploymentV1.tfResourceType).filter((d) => d.metadata.name !== 'gyre-edge');
    expect(runtimeDeployments.map((d) => d.metadata.name).sort()).toEqual(ROLE_NAMES.map((r) => `gyre-${r}`).sort());
    for (const role of ROLE_NAMES) {
      const container = deployment(out, `gyre-${role}`).spec.template.spec.container[0];
      expect(container.image).toBe('ghcr.io/gyre-ci/runtime:9.9.9');
      expect([...container.command, ...container.args]).toEqual(['tini', '--', 'gyre', 'server', `--roles=${role}`]);
    }
    expect(out).not.toMatch(/gyre-(triggers|runners)\b/);
  });

  test('every role is probed on /healthz and scraped on /metrics at the ops port; only api exposes the API port', () => {
    const out = synth();
    for (const role of ROLE_NAMES) {
      const d = deployment(out, `gyre-${role}`);
      const container = d.spec.template.spec.container[0];
      const env = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]));
      expect(env.GYRE_OPS_PORT).toBe(String(DEFAULT_OPS_PORT));
      const ops = container.port.find((p: any) => p.name === 'ops');
      expect(ops.container_port).toBe(DEFAULT_OPS_PORT);
      for (const probe of ['startup_probe', 'readiness_probe', 'liveness_probe']) {
        expect(container[probe].http_get).toEqual({ path: '/healthz', port: 'ops' });
      }
      expect(d.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/port': String(DEFAULT_OPS_PORT), 'prometheus.io/path': '/metrics' });
      expect(container.port.some((p: any) => p.container_port === DEFAULT_API_PORT)).toBe(role === 'api');
    }
  });

  test('every role has requests and a memory limit, and runs non-root read-only', () => {
    const container = deployment(synth(), 'gyre-dispatcher').spec.template.spec.container[0];
    expect(container.resources.requests).toEqual({ cpu: '250m', memory: '256Mi' });
    expect(container.resources.limits).toEqual({ memory: '512Mi' });
    expect(container.security_context).toMatchObject({ run_as_non_root: true, read_only_root_filesystem: true, allow_privilege_escalation: false });
  });

  test('sign-in settings go into the runtime Secret every role reads, and cannot replace the database URL or admin token', () => {
    const out = synth({ signIn: { GYRE_OIDC_ISSUER: 'https://example.okta.com', GYRE_OIDC_CLIENT_SECRET: 'okta-secret', DATABASE_URL: 'postgres://evil' } });
    const secret = resources(out, 'kubernetes_secret_v1').find((r) => r.metadata.name === 'gyre-runtime');
    expect(secret.data).toMatchObject({ GYRE_OIDC_ISSUER: 'https://example.okta.com', GYRE_OIDC_CLIENT_SECRET: 'okta-secret', DATABASE_URL: 'postgres://u:p@db:5432/gyre' });
    // No Deployment carries the secret in its spec: they read it from the Secret.
    expect(JSON.stringify(resources(out, DeploymentV1.tfResourceType))).not.toContain('okta-secret');
  });

  test('every runtime container (roles, their waits, the migration Job) wraps secrets with the one shared key', () => {
    const out = synth();
    const podSpecs = [...resources(out, DeploymentV1.tfResourceType).filter((d) => d.metadata.name !== 'gyre-edge'), ...resources(out, JobV1.tfResourceType)].map((r) => r.spec.template.spec);
    const containers = podSpecs.flatMap((spec) => [...spec.container, ...(spec.init_container ?? [])]);
    expect(containers).toHaveLength(ROLE_NAMES.length * 2 + 1);
    for (const c of containers) {
      const env = Object.fromEntries(c.env.map((e: any) => [e.name, e.value]));
      expect({ container: `${c.name} ${c.args.join(' ')}`, ...env }).toMatchObject({
        container: `${c.name} ${c.args.join(' ')}`,
        GYRE_SECRETS_KEY_WRAPPER: 'aws-kms',
        GYRE_SECRETS_AWS_KMS_KEY_ID: 'arn:aws:kms:us-east-1:123456789012:key/0b6a3c1e-0000-4000-8000-000000000001',
      });
    }
  });

  test('a key wrapper\'s credential (Vault\'s token) goes into the runtime Secret only, never into a manifest or ConfigMap', () => {
    const out = synth({
      keyWrapper: {
        environment: { GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'https://vault.example.com:8200', GYRE_SECRETS_VAULT_TRANSIT_KEY: 'gyre' },
        credentials: { VAULT_TOKEN: 'hvs.vault-token-value' },
      },
    });
    const secret = resources(out, 'kubernetes_secret_v1').find((r) => r.metadata.name === 'gyre-runtime');
    expect(secret.data).toMatchObject({ VAULT_TOKEN: 'hvs.vault-token-value', DATABASE_URL: 'postgres://u:p@db:5432/gyre' });
    const elsewhere = Object.entries<Record<string, any>>(JSON.parse(out).resource)
      .flatMap(([type, byName]) => Object.values(byName).map((r) => ({ type, name: r.metadata?.name, r })))
      .filter(({ type, name }) => !(type === 'kubernetes_secret_v1' && name === 'gyre-runtime'));
    expect(elsewhere.filter(({ r }) => JSON.stringify(r).includes('hvs.vault-token-value')).map(({ type, name }) => `${type} ${name}`)).toEqual([]);
    expect(elsewhere.some(({ type }) => type === ConfigMapV1.tfResourceType)).toBe(true);
    const env = Object.fromEntries(deployment(out, 'gyre-contexts').spec.template.spec.container[0].env.map((e: any) => [e.name, e.value]));
    expect(env).toMatchObject({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'https://vault.example.com:8200' });
  });

  test.each([
    ['a local key file', { environment: { GYRE_SECRETS_KEY_WRAPPER: 'local' } }, /keyWrapper.environment.GYRE_SECRETS_KEY_WRAPPER \(local\) must be one of: aws-kms, gcp-kms, vault-transit; a local key file is each pod's own/],
    ['no wrapper', { environment: {} }, /keyWrapper.environment.GYRE_SECRETS_KEY_WRAPPER \(unset\) must be one of/],
    ['a token in the manifests', { environment: { GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_TOKEN: 't' } }, /keyWrapper.environment.VAULT_TOKEN is a credential: pass it in keyWrapper.credentials/],
    ['another setting', { environment: { GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', DATABASE_URL: 'postgres://elsewhere' } }, /keyWrapper.environment.DATABASE_URL is not a key wrapper setting/],
    ['another credential', { environment: { GYRE_SECRETS_KEY_WRAPPER: 'vault-transit' }, credentials: { GYRE_ADMIN_TOKEN: 'x' } }, /keyWrapper.credentials.GYRE_ADMIN_TOKEN is not a key wrapper credential; allowed: VAULT_TOKEN/],
  ])('refuses %s as the key wrapper', (_what, keyWrapper, message) => {
    expect(() => synth({ keyWrapper })).toThrow(message);
  });

  test('the runtime is configured through the documented variables and scraped by Prometheus', () => {
    const d = deployment(synth(), 'gyre-api');
    const env = Object.fromEntries(d.spec.template.spec.container[0].env.map((e: any) => [e.name, e.value]));
    expect(env).toMatchObject({ GYRE_PORT: '8080', GYRE_DATA_DIR: '/var/lib/gyre', GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'bucket', GYRE_S3_REGION: 'us-east-1' });
    expect(d.spec.template.spec.container[0].env_from).toEqual([{ secret_ref: { name: 'gyre-runtime' } }]);
    expect(d.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
  });

  test('no control-plane pod can run builds: the built-in runner is off in every runtime container', () => {
    const out = synth();
    const containers = resources(out, DeploymentV1.tfResourceType)
      .flatMap((d) => d.spec.template.spec.container)
      .filter((c: any) => c.image.includes('/runtime:'));
    expect(containers).toHaveLength(ROLE_NAMES.length);
    for (const c of containers) {
      const slots = c.env.find((e: any) => e.name === 'GYRE_RUNNER_SLOTS');
      expect({ container: c.args.join(' '), slots: slots?.value }).toEqual({ container: c.args.join(' '), slots: '0' });
    }
    // Nor can anything in the namespace reach a container engine.
    expect(out).not.toMatch(/docker\.sock|podman\.sock|host_path/);
  });

  test('migrations run once per release in a Job, and every role waits for them', () => {
    const out = synth();
    const jobs = resources(out, JobV1.tfResourceType);
    expect(jobs.map((j) => j.metadata.name)).toEqual(['gyre-migrate-9-9-9']);
    const job = jobs[0];
    expect(job.wait_for_completion).toBe(true);
    expect([...job.spec.template.spec.container[0].command, ...job.spec.template.spec.container[0].args]).toEqual(['tini', '--', 'gyre', 'migrate']);
    for (const role of ROLE_NAMES) {
      const spec = deployment(out, `gyre-${role}`).spec.template.spec;
      const env = Object.fromEntries(spec.container[0].env.map((e: any) => [e.name, e.value]));
      expect(env.GYRE_MIGRATE).toBe('false');
      expect([...spec.init_container[0].command, ...spec.init_container[0].args]).toEqual(['tini', '--', 'gyre', 'migrate', '--wait']);
      expect(spec.init_container[0].env_from).toEqual([{ secret_ref: { name: 'gyre-runtime' } }]);
    }
    // A new release (image tag) is a new Job, so its migrations run once more.
    const next = Testing.synthScope((s) => new ControlPlane(s, 'ControlPlane', { ...base, images: new ImageCatalog({ gyreTag: '10.0.0' }) }));
    expect(resources(next, JobV1.tfResourceType).map((j) => j.metadata.name)).toEqual(['gyre-migrate-10-0-0']);
  });

  test('a database CA given as PEM is mounted where DATABASE_URL\'s sslrootcert points, in every container that connects', () => {
    const out = synth({ databaseCa: { source: 'pem', pem: '-----BEGIN CERTIFICATE-----' } });
    expect(resources(out, ConfigMapV1.tfResourceType).find((c) => c.metadata.name === 'gyre-database-ca').data).toEqual({ 'ca.pem': '-----BEGIN CERTIFICATE-----' });
    const podSpecs = [...resources(out, DeploymentV1.tfResourceType).filter((d) => d.metadata.name !== 'gyre-edge'), ...resources(out, JobV1.tfResourceType)].map((r) => r.spec.template.spec);
    for (const spec of podSpecs) {
      for (const c of [...spec.container, ...(spec.init_container ?? [])]) {
        expect(c.volume_mount).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'database-ca', mount_path: DATABASE_CA_MOUNT })]));
      }
    }
    expect(synth()).not.toContain('gyre-database-ca');
  });

  test('only the scheduler gets the Nomad client certificate, its ACL token and the agent image', () => {
    const out = synth();
    const names = (d: any) => d.spec.template.spec.container[0].env.map((e: any) => e.name);
    expect(names(deployment(out, 'gyre-scheduler'))).toEqual(expect.arrayContaining(['NOMAD_ADDR', 'NOMAD_CLIENT_CERT', 'NOMAD_TOKEN', 'GYRE_AGENT_IMAGE']));
    const token = deployment(out, 'gyre-scheduler').spec.template.spec.container[0].env.find((e: any) => e.name === 'NOMAD_TOKEN');
    expect(token.value_from.secret_key_ref).toEqual({ name: 'gyre-nomad-scheduler-token', key: 'token' });
    for (const role of ROLE_NAMES.filter((r) => r !== 'scheduler')) {
      expect(names(deployment(out, `gyre-${role}`))).not.toEqual(expect.arrayContaining(['NOMAD_CLIENT_CERT']));
      expect(names(deployment(out, `gyre-${role}`))).not.toContain('NOMAD_TOKEN');
    }
  });

  test('HPAs for api and output only, and a PodDisruptionBudget per role', () => {
    const out = synth();
    expect(resources(out, HorizontalPodAutoscalerV2.tfResourceType).map((h) => h.metadata.name).sort()).toEqual(['gyre-api', 'gyre-output']);
    expect(out).toHaveResourceWithProperties(HorizontalPodAutoscalerV2, {
      spec: expect.objectContaining({ min_replicas: 2, max_replicas: 10 }),
    });
    expect(resources(out, PodDisruptionBudgetV1.tfResourceType)).toHaveLength(RUNTIME_ROLES.length + 1);
  });

  test('one LoadBalancer exposes 80/443 and 4647 through the edge, limited to the source ranges', () => {
    const lb = resources(synth({ loadBalancerSourceRanges: ['198.51.100.0/24'] }), ServiceV1.tfResourceType).find((s) => s.spec.type === 'LoadBalancer');
    expect(lb.spec.port.map((p: any) => p.port)).toEqual([80, 443, 4647]);
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

  test('the edge routes only to listeners: HTTP(S) to the api role\'s API port, 4647 to the Nomad servers', () => {
    const out = synth();
    const conf = resources(out, ConfigMapV1.tfResourceType).find((c) => c.metadata.name === 'gyre-edge').data['nginx.conf'];
    const upstreams = [...conf.matchAll(/(?:server|proxy_pass) ([a-z0-9.-]+\.svc\.cluster\.local):(\d+)/g)].map((m: RegExpMatchArray) => `${m[1]}:${m[2]}`);
    expect(upstreams.sort()).toEqual(['gyre-api.gyre.svc.cluster.local:8080', 'nomad-server.gyre.svc.cluster.local:4647']);
    // Each upstream is a Service port whose target the selected pods listen on.
    const api = resources(out, ServiceV1.tfResourceType).find((s) => s.metadata.name === 'gyre-api');
    expect(api.spec.port).toEqual(expect.arrayContaining([{ name: 'http', port: DEFAULT_API_PORT, target_port: 'http' }]));
    expect(deployment(out, 'gyre-api').spec.template.spec.container[0].port).toEqual(expect.arrayContaining([{ name: 'http', container_port: DEFAULT_API_PORT }]));
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    expect(conf).not.toContain('${');
  });

  test('the Nomad job template runs the agent image and escapes Nomad interpolation from Terraform', () => {
    const template = resources(synth(), ConfigMapV1.tfResourceType).find((c) => c.metadata.name === 'gyre-nomad-job-template').data['task-agent.json'];
    expect(template).toContain('"image": "ghcr.io/gyre-ci/agent:9.9.9"');
    expect(template).toContain('$${node.class}');
  });

  test('rejects replicas for a role that does not exist', () => {
    expect(() => synth({ replicas: { runners: 1 } })).toThrow(`replicas.runners names no runtime role; allowed: ${ROLE_NAMES.join(', ')}`);
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
  });

  test('probes work under verify_https_client: no kubelet HTTPS probe, readiness through the CLI with the server certificate', () => {
    const c = resources(synth(), StatefulSetV1.tfResourceType)[0].spec.template.spec.container[0];
    for (const probe of ['readiness_probe', 'liveness_probe', 'startup_probe']) expect(c[probe]?.http_get).toBeUndefined();
    expect(c.readiness_probe.exec.command.join(' ')).toContain("nomad operator api '/v1/agent/health?type=server'");
    const env = Object.fromEntries(c.env.map((e: any) => [e.name, e.value]));
    expect(env).toMatchObject({ NOMAD_ADDR: 'https://127.0.0.1:4646', NOMAD_CLIENT_CERT: '/nomad/tls/server.pem', NOMAD_CLIENT_KEY: '/nomad/tls/server-key.pem' });
  });

  test('the server configuration turns on mutual TLS and joins its peers', () => {
    const hcl = resources(synth(), ConfigMapV1.tfResourceType)[0].data['server.hcl'];
    expect(hcl).toContain('rpc                    = true');
    expect(hcl).toContain('verify_server_hostname = true');
    expect(hcl).toContain('verify_https_client    = true');
    expect(hcl).toMatch(/acl \{\n  enabled = true\n\}/);
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
      nomadTokenSecretName: 'nomad-autoscaler-token',
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
