import * as fs from 'node:fs';
import * as path from 'node:path';
import { Testing } from 'cdktf';
import { loadEnvironments } from '../../stacks/environment';
import { addEnvironments } from '../../stacks/app';
import { parseHcl as parse } from '../constructs/hcl';
import { parse as parseYaml } from 'yaml';
import { KubernetesObject, kubernetesObjects, schemaErrors, unknownFields } from './kubernetes-manifests';
import { mayConnect, podsOf } from './network-policy';
import { DEFAULT_API_PORT, DEFAULT_OPS_PORT, ROLE_NAMES } from '../../runtime/roles/names';

/** Every Kubernetes object the example environments' stacks create, checked against the API schema. */
const synthesized = (() => {
  const app = Testing.app();
  addEnvironments(app, loadEnvironments(path.join(__dirname, '..', '..', 'environments')));
  app.synth();
  const dir = path.join(app.outdir, 'stacks');
  return Object.fromEntries(fs.readdirSync(dir).map((id) => [id, JSON.parse(fs.readFileSync(path.join(dir, id, 'cdk.tf.json'), 'utf8'))]));
})();
const objects: KubernetesObject[] = Object.values(synthesized).flatMap((stack) => kubernetesObjects(stack));

describe('Kubernetes objects of the server stacks', () => {
  test('there are objects of every kind the control plane needs', () => {
    const kinds = new Set(objects.map((o) => o.object.kind));
    for (const kind of ['Namespace', 'Deployment', 'StatefulSet', 'Job', 'Service', 'NetworkPolicy', 'Role', 'RoleBinding', 'Secret', 'ConfigMap']) {
      expect(kinds).toContain(kind);
    }
  });

  test('each validates against the Kubernetes OpenAPI schema (kubernetes-models)', () => {
    expect(objects.flatMap(schemaErrors)).toEqual([]);
  });

  test('each has only fields the schema defines', () => {
    expect(objects.flatMap(unknownFields)).toEqual([]);
  });

  test('the checks can fail: a wrong type and a misplaced field are reported', () => {
    const deployment = objects.find((o) => o.object.kind === 'Deployment')!;
    const broken: KubernetesObject = { ...deployment, object: JSON.parse(JSON.stringify(deployment.object)) };
    broken.object.spec.template.spec.containers[0].ports = [{ containerPort: 'eighty' }];
    broken.object.spec.template.spec.containers[0].volumeMount = [];
    expect(schemaErrors(broken).join('\n')).toMatch(/containerPort must be integer/);
    expect(unknownFields(broken)).toEqual([expect.stringContaining('.spec.template.spec.containers[0].volumeMount is not a field of Container')]);
  });
});

describe('NetworkPolicies of the server stacks', () => {
  const stackObjects = (id: string) => kubernetesObjects(synthesized[id]);
  const setup = (id: string) => {
    const objs = stackObjects(id);
    const policies = objs.filter((o) => o.object.kind === 'NetworkPolicy').map((o) => o.object);
    const pods = podsOf(objs);
    const pod = (name: string) => {
      const found = pods.find((p) => p.name === name);
      if (!found) throw new Error(`no workload ${name}; have ${pods.map((p) => p.name).join(', ')}`);
      return { pod: found };
    };
    return { policies, pods, pod };
  };

  test.each(['aws-example-server', 'gcp-example-server'])('%s: only the scheduler, nomad-autoscaler and the ACL bootstrap Job reach the Nomad HTTP API', (id) => {
    const { policies, pods, pod } = setup(id);
    const nomad = pod('nomad-server');
    const reaching = pods.filter((p) => p.name !== 'nomad-server' && mayConnect(policies, { pod: p }, nomad, 4646)).map((p) => p.name).sort();
    expect(reaching).toEqual(['gyre-scheduler', 'nomad-acl-bootstrap', 'nomad-autoscaler']);
    // Nomad clients (outside the cluster, in the VPC) and the edge reach RPC; the internet does not.
    expect(mayConnect(policies, pod('gyre-edge'), nomad, 4647)).toBe(true);
    expect(mayConnect(policies, { ip: '203.0.113.9' }, nomad, 4647)).toBe(false);
    expect(mayConnect(policies, { ip: '203.0.113.9' }, nomad, 4646)).toBe(false);
  });

  test('only the runtime roles and the migration Job reach the database', () => {
    const { policies, pods } = setup('aws-example-server');
    const database = { ip: '10.20.130.17' }; // inside the VPC (RDS), aws-example's network.cidr
    const reaching = pods.filter((p) => mayConnect(policies, { pod: p }, database, 5432)).map((p) => p.name).sort();
    expect(reaching).toEqual([...ROLE_NAMES.map((r) => `gyre-${r}`), 'gyre-migrate-0-1-0'].sort());
    // GCP: the Cloud SQL peering range, as Terraform will resolve it.
    const gcp = setup('gcp-example-server');
    const cidr = gcp.policies.find((p) => p.metadata.name === 'database')!.spec.egress[0].to[0].ipBlock.cidr;
    expect(cidr).toContain('cross-stack-output-google_compute_global_address');
    const gcpReaching = gcp.pods.filter((p) => mayConnect(gcp.policies, { pod: p }, { ip: cidr }, 5432)).map((p) => p.name).sort();
    expect(gcpReaching).toEqual([...ROLE_NAMES.map((r) => `gyre-${r}`), 'gyre-migrate-0-1-0'].sort());
  });

  test('the api role accepts connections only from the edge, and the edge from the load balancer', () => {
    const { policies, pods, pod } = setup('aws-example-server');
    const api = pod('gyre-api');
    expect(pods.filter((p) => mayConnect(policies, { pod: p }, api, DEFAULT_API_PORT)).map((p) => p.name)).toEqual(['gyre-edge']);
    expect(mayConnect(policies, { ip: '198.51.100.7' }, api, DEFAULT_API_PORT)).toBe(false);
    expect(mayConnect(policies, { ip: '198.51.100.7' }, pod('gyre-edge'), 8443)).toBe(true);
    expect(mayConnect(policies, { ip: '198.51.100.7' }, pod('gyre-edge'), 22)).toBe(false);
  });

  test('every pod resolves names, runtime pods reach HTTPS (bucket, forges) and /healthz is scrapeable only from inside the cluster', () => {
    const { policies, pods, pod } = setup('gcp-example-server');
    for (const p of pods) expect({ pod: p.name, dns: mayConnect(policies, { pod: p }, { ip: '10.68.0.10' }, 53, 'UDP') }).toEqual({ pod: p.name, dns: true });
    expect(mayConnect(policies, pod('gyre-output'), { ip: '142.250.1.1' }, 443)).toBe(true);
    // Workload Identity tokens come from the GKE metadata server.
    expect(mayConnect(policies, pod('gyre-output'), { ip: '169.254.169.254' }, 80)).toBe(true);
    expect(mayConnect(policies, pod('gyre-edge'), { ip: '142.250.1.1' }, 443)).toBe(false);
    const prometheus = { pod: { name: 'prometheus', labels: { app: 'prometheus' }, elsewhere: true } };
    for (const role of ROLE_NAMES) expect(mayConnect(policies, prometheus, pod(`gyre-${role}`), DEFAULT_OPS_PORT)).toBe(true);
    expect(mayConnect(policies, prometheus, pod('gyre-api'), DEFAULT_API_PORT)).toBe(false);
    expect(mayConnect(policies, { ip: '10.0.3.4' }, pod('gyre-output'), DEFAULT_OPS_PORT)).toBe(false);
    // Roles talk through the database, never to each other.
    expect(mayConnect(policies, pod('gyre-conductor'), pod('gyre-output'), DEFAULT_OPS_PORT)).toBe(false);
    expect(mayConnect(policies, pod('gyre-conductor'), pod('gyre-output'), 5432)).toBe(false);
  });
});

describe('across the infra and server stacks', () => {
  const infraOutput = (infra: any, ref: string) => {
    const name = /outputs\.(cross-stack-output-[^}.]+)/.exec(ref)?.[1];
    if (!name) throw new Error(`not a cross-stack reference: ${ref}`);
    return infra.output[name].value as string;
  };

  test.each(['aws-example', 'gcp-example'])('%s: the Nomad server certificate names every host the scheduler, nomad-autoscaler and the ACL Job dial', async (env) => {
    const infra = synthesized[`${env}-infra`];
    const request = Object.entries<any>(infra.resource.tls_cert_request).find(([k]) => k.includes('ServerRequest'))![1];
    const sans: string[] = request.dns_names;
    const objs = kubernetesObjects(synthesized[`${env}-server`]);
    const envValue = (name: string, variable: string) => {
      const o = objs.find((x) => x.object.metadata.name === name && ['Deployment', 'Job'].includes(x.object.kind))!;
      return o.object.spec.template.spec.containers[0].env.find((e: any) => e.name === variable).value as string;
    };
    const agentHcl = objs.find((o) => o.object.kind === 'ConfigMap' && o.object.metadata.name === 'nomad-autoscaler')!.object.data['agent.hcl'];
    const autoscalerAddress = (await parse('agent.hcl', agentHcl)).nomad[0].address;
    const hosts = [envValue('gyre-scheduler', 'NOMAD_ADDR'), envValue('nomad-acl-bootstrap', 'NOMAD_ADDR'), autoscalerAddress].map((u) => new URL(u).hostname);
    expect(hosts.length).toBe(3);
    for (const host of hosts) expect({ host, inCertificate: sans.includes(host) }).toEqual({ host, inCertificate: true });
    expect(sans).toEqual(expect.arrayContaining(['server.global.nomad', 'nomad-server', 'nomad-server.gyre.svc.cluster.local']));
  });

  test('GCS through Workload Identity: the runtime\'s service account is bound to its Google account, which alone may use the bucket; no static keys', () => {
    const infra = synthesized['gcp-example-infra'];
    const objs = kubernetesObjects(synthesized['gcp-example-server']);
    const ksa = objs.find((o) => o.object.kind === 'ServiceAccount' && o.object.metadata.name === 'gyre-runtime')!.object;
    const gsaEmail = infraOutput(infra, ksa.metadata.annotations['iam.gke.io/gcp-service-account']);
    const gsa = /^\$\{google_service_account\.([^.]+)\.email\}$/.exec(gsaEmail)![1];
    const binding = Object.values<any>(infra.resource.google_service_account_iam_member).find((b) => b.service_account_id.includes(`google_service_account.${gsa}.`));
    expect(binding).toMatchObject({ role: 'roles/iam.workloadIdentityUser', member: 'serviceAccount:example-project.svc.id.goog[gyre/gyre-runtime]' });
    const bucketGrants = Object.values<any>(infra.resource.google_storage_bucket_iam_member);
    expect(bucketGrants.map((g) => g.member)).toEqual([`\${google_service_account.${gsa}.member}`]);
    // The same account, alone, may use the Cloud KMS key that wraps secrets.
    expect(Object.values<any>(infra.resource.google_kms_crypto_key_iam_member).map((g) => g.member)).toEqual([`\${google_service_account.${gsa}.member}`]);
    for (const role of ROLE_NAMES) {
      const d = objs.find((o) => o.object.kind === 'Deployment' && o.object.metadata.name === `gyre-${role}`)!.object;
      expect(d.spec.template.spec.serviceAccountName).toBe('gyre-runtime');
      const env = d.spec.template.spec.containers[0].env;
      const names = env.map((e: any) => e.name);
      expect(env.find((e: any) => e.name === 'GYRE_BLOB_STORE').value).toBe('gcs');
      expect(names).toContain('GYRE_GCS_BUCKET');
      // (GYRE_SECRETS_* name the KMS key, reached as the same identity.)
      expect(names.filter((n: string) => /HMAC|ACCESS_KEY|_SECRET($|_)|GYRE_S3_|GOOGLE_APPLICATION_CREDENTIALS/.test(n))).toEqual([]);
    }
    for (const stack of Object.values(synthesized)) expect(Object.keys(stack.resource ?? {})).not.toContain('google_storage_hmac_key');
  });

  test('EKS gets a node autoscaler acting as a role only its service account can assume', () => {
    const infra = synthesized['aws-example-infra'];
    const server = synthesized['aws-example-server'];
    const release = Object.values<any>(server.resource.helm_release).find((r) => r.chart === 'cluster-autoscaler');
    const values = parseYaml(release.values[0]);
    expect(values.autoDiscovery.clusterName).toContain('cross-stack-output-aws_eks_cluster');
    const roleArn = infraOutput(infra, values.rbac.serviceAccount.annotations['eks.amazonaws.com/role-arn']);
    const role = /^\$\{aws_iam_role\.([^.]+)\.arn\}$/.exec(roleArn)![1];
    const trust = JSON.parse(infra.resource.aws_iam_role[role].assume_role_policy.replace(/\$\{[^}]*\}/g, 'ISSUER'));
    expect(trust.Statement[0].Condition.StringEquals['ISSUER:sub']).toBe(`system:serviceaccount:kube-system:${values.rbac.serviceAccount.name}`);
    expect(Object.values<any>(synthesized['gcp-example-server'].resource.helm_release ?? {}).some((r) => r.chart === 'cluster-autoscaler')).toBe(false);
  });
});

describe('pods can read what is mounted for them', () => {
  test('secret volumes of non-root pods are group-readable and the pod runs with that group', () => {
    const workloads = objects.filter((o) => ['Deployment', 'StatefulSet', 'Job'].includes(o.object.kind));
    const problems: string[] = [];
    for (const w of workloads) {
      const spec = w.object.spec.template.spec;
      for (const v of spec.volumes ?? []) {
        if (!v.secret || v.secret.defaultMode === undefined) continue;
        const user = spec.securityContext?.runAsUser;
        const ownerOnly = (v.secret.defaultMode & 0o040) === 0;
        if (user !== 0 && (ownerOnly || spec.securityContext?.fsGroup === undefined)) {
          problems.push(`${w.object.metadata.name}: secret volume ${v.name} (mode ${v.secret.defaultMode.toString(8)}) unreadable by uid ${user} (fsGroup ${spec.securityContext?.fsGroup})`);
        }
      }
    }
    expect(problems).toEqual([]);
  });
});

describe('Nomad ACL bootstrap wiring', () => {
  const server = synthesized['aws-example-server'];
  const objs = kubernetesObjects(server);

  test('its service account may write only the component token Secrets, and the components wait for the Job', () => {
    const role = objs.find((o) => o.object.kind === 'Role' && o.object.metadata.name === 'nomad-acl-bootstrap')!.object;
    expect(role.rules).toEqual([
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['gyre-nomad-scheduler-token', 'nomad-autoscaler-token'], verbs: ['get', 'update'] },
    ]);
    const job = Object.keys(server.resource.kubernetes_job_v1).find((k) => k.startsWith('NomadAcl_Job'))!;
    const waiting = Object.values<any>(server.resource.kubernetes_deployment_v1)
      .filter((d) => (d.depends_on ?? []).includes(`kubernetes_job_v1.${job}`)).map((d) => d.metadata.name).sort();
    expect(waiting).toEqual(['gyre-scheduler', 'nomad-autoscaler']);
    // The tokens the components read are the Secrets the Job writes.
    const tokenSecret = (name: string) => objs.find((o) => o.object.kind === 'Deployment' && o.object.metadata.name === name)!
      .object.spec.template.spec.containers[0].env.find((e: any) => e.name === 'NOMAD_TOKEN').valueFrom.secretKeyRef;
    expect(tokenSecret('gyre-scheduler')).toEqual({ name: 'gyre-nomad-scheduler-token', key: 'token' });
    expect(tokenSecret('nomad-autoscaler')).toEqual({ name: 'nomad-autoscaler-token', key: 'token' });
  });
});

describe('Nomad clients reach the servers they are told about', () => {
  // Joined clients dial the servers' advertised addresses: the server pods' own.
  test('AWS: the nodes\' security group admits Nomad RPC from the clients\' security group', () => {
    const infra = synthesized['aws-example-infra'];
    const rules = Object.values<any>(infra.resource.aws_vpc_security_group_ingress_rule);
    expect(rules).toEqual(expect.arrayContaining([expect.objectContaining({
      security_group_id: expect.stringContaining('vpc_config[0].cluster_security_group_id'),
      referenced_security_group_id: expect.stringContaining('aws_security_group.NomadClients_SecurityGroup'),
      from_port: 4647, to_port: 4647,
    })]));
  });

  test('GCP: a firewall rule admits Nomad RPC from the clients\' tag to the nodes carrying the server pods', () => {
    const infra = synthesized['gcp-example-infra'];
    const pool = Object.values<any>(infra.resource.google_container_node_pool)[0];
    const rule = Object.values<any>(infra.resource.google_compute_firewall).find((f) => f.name.endsWith('-nomad-rpc-to-pods'));
    expect(rule).toMatchObject({ direction: 'INGRESS', allow: [{ protocol: 'tcp', ports: ['4647'] }], target_tags: pool.node_config.tags });
    const template = Object.values<any>(infra.resource.google_compute_instance_template)[0];
    expect(rule.source_tags).toEqual(template.tags);
  });
});
