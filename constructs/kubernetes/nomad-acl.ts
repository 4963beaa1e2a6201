import * as fs from 'node:fs';
import * as path from 'node:path';
import { Construct } from 'constructs';
import { Fn, ITerraformDependable } from 'cdktf';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import { SecretV1 } from '@cdktf/provider-kubernetes/lib/secret-v1';
import { ServiceAccountV1 } from '@cdktf/provider-kubernetes/lib/service-account-v1';
import { RoleV1 } from '@cdktf/provider-kubernetes/lib/role-v1';
import { RoleBindingV1 } from '@cdktf/provider-kubernetes/lib/role-binding-v1';
import { JobV1 } from '@cdktf/provider-kubernetes/lib/job-v1';
import { Uuid } from '@cdktf/provider-random/lib/uuid';
import { ImageCatalog } from '../images';
import { RESTRICTED_CONTAINER } from './roles';
import { CAN_REACH_HTTPS, CAN_REACH_NOMAD_API, NOMAD_ACL_BOOTSTRAP_LABELS } from './labels';

/** The script the bootstrap Job runs (Node.js standard library only, from the runtime image). */
export const ACL_BOOTSTRAP_SCRIPT = path.join(__dirname, '..', '..', 'images', 'nomad-acl-bootstrap.js');

/** A Nomad ACL policy and the Kubernetes Secret (key `token`) its client token is delivered in. */
export interface NomadAclPolicy {
  readonly name: string;
  readonly description: string;
  /** Nomad ACL policy rules (HCL). */
  readonly rules: string;
  readonly secret: string;
}

/** What the scheduler role does with Nomad: run, watch and stop task agent jobs. */
export const SCHEDULER_POLICY_RULES = `namespace "default" {
  capabilities = ["list-jobs", "read-job", "submit-job", "read-logs", "alloc-lifecycle"]
}
node {
  policy = "read"
}
`;

/** What nomad-autoscaler does: read allocations and node resources, drain and purge clients. */
export const AUTOSCALER_POLICY_RULES = `namespace "*" {
  policy       = "read"
  capabilities = ["list-scaling-policies", "read-scaling-policy", "read-job-scaling", "scale-job"]
}
node {
  policy = "write"
}
`;

export interface NomadAclProps {
  readonly namespace: string;
  readonly images: ImageCatalog;
  /** HTTPS address of the Nomad API. */
  readonly nomadAddress: string;
  /** Secret holding ca.pem, client.pem and client-key.pem (a client certificate of the Nomad CA). */
  readonly nomadTlsSecretName: string;
  readonly policies: NomadAclPolicy[];
  /** What must exist before the Job runs (the Nomad servers). */
  readonly dependsOn?: ITerraformDependable[];
}

/**
 * Nomad ACLs: a management token the operator holds (generated, kept in Terraform state and the
 * `nomad-acl-bootstrap` Secret, printed by `cdktf output`), and a Job that bootstraps ACLs with it
 * and hands each component a client token holding only its own policy, as a Kubernetes Secret.
 * The Job's service account may write only those Secrets.
 */
export class NomadAcl extends Construct {
  /** The management token (sensitive). */
  readonly managementToken: string;
  /** The Job; whatever needs the component tokens depends on it. */
  readonly job: JobV1;

  constructor(scope: Construct, id: string, props: NomadAclProps) {
    super(scope, id);
    const ns = props.namespace;
    if (props.policies.length === 0) throw new Error('policies (0) must name at least one policy');
    for (const p of props.policies) {
      if (!/^[a-z0-9-]{1,63}$/.test(p.secret)) throw new Error(`policies.${p.name}.secret (${p.secret}) must be a Kubernetes Secret name`);
    }
    const script = fs.readFileSync(ACL_BOOTSTRAP_SCRIPT, 'utf8');
    if (/\$\{|%\{/.test(script)) throw new Error(`${ACL_BOOTSTRAP_SCRIPT} contains a Terraform interpolation sequence`);

    this.managementToken = new Uuid(this, 'ManagementToken').result;
    new SecretV1(this, 'ManagementSecret', {
      metadata: { name: 'nomad-acl-bootstrap', namespace: ns },
      data: { token: this.managementToken },
    });
    const config = new ConfigMapV1(this, 'Script', {
      metadata: { name: 'nomad-acl-bootstrap', namespace: ns },
      data: { 'bootstrap.js': script, 'policies.json': JSON.stringify(props.policies, null, 2) },
    });

    const account = new ServiceAccountV1(this, 'ServiceAccount', {
      metadata: { name: 'nomad-acl-bootstrap', namespace: ns },
      automountServiceAccountToken: false,
    });
    const secrets = props.policies.map((p) => p.secret);
    new RoleV1(this, 'Role', {
      metadata: { name: 'nomad-acl-bootstrap', namespace: ns },
      rule: [
        // Kubernetes cannot limit `create` by name; get/update only touch the named Secrets.
        { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
        { apiGroups: [''], resources: ['secrets'], resourceNames: secrets, verbs: ['get', 'update'] },
      ],
    });
    new RoleBindingV1(this, 'RoleBinding', {
      metadata: { name: 'nomad-acl-bootstrap', namespace: ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'nomad-acl-bootstrap' },
      subject: [{ kind: 'ServiceAccount', name: account.metadata.name, namespace: ns }],
    });

    this.job = new JobV1(this, 'Job', {
      metadata: { name: 'nomad-acl-bootstrap', namespace: ns, labels: NOMAD_ACL_BOOTSTRAP_LABELS },
      spec: {
        backoffLimit: 6,
        template: {
          metadata: {
            labels: { ...NOMAD_ACL_BOOTSTRAP_LABELS, ...CAN_REACH_NOMAD_API, ...CAN_REACH_HTTPS },
            // A changed script or policy replaces the Job, so it runs again.
            annotations: { 'gyre.dev/config-hash': Fn.sha256(Fn.jsonencode(config.data)) },
          },
          spec: {
            restartPolicy: 'Never',
            serviceAccountName: 'nomad-acl-bootstrap',
            automountServiceAccountToken: true,
            securityContext: { runAsNonRoot: true, runAsUser: '10001', runAsGroup: '10001', fsGroup: '10001', seccompProfile: { type: 'RuntimeDefault' } },
            container: [{
              name: 'bootstrap',
              image: props.images.ref('runtime'),
              command: ['node', '/etc/gyre/nomad-acl/bootstrap.js'],
              env: [
                { name: 'NOMAD_ADDR', value: props.nomadAddress },
                { name: 'NOMAD_CACERT', value: '/etc/gyre/nomad/ca.pem' },
                { name: 'NOMAD_CLIENT_CERT', value: '/etc/gyre/nomad/client.pem' },
                { name: 'NOMAD_CLIENT_KEY', value: '/etc/gyre/nomad/client-key.pem' },
                { name: 'NOMAD_BOOTSTRAP_TOKEN', valueFrom: { secretKeyRef: { name: 'nomad-acl-bootstrap', key: 'token' } } },
                { name: 'POLICIES_FILE', value: '/etc/gyre/nomad-acl/policies.json' },
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
              ],
              resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '128Mi' } },
              securityContext: RESTRICTED_CONTAINER,
              volumeMount: [
                { name: 'script', mountPath: '/etc/gyre/nomad-acl', readOnly: true },
                { name: 'nomad-tls', mountPath: '/etc/gyre/nomad', readOnly: true },
              ],
            }],
            volume: [
              { name: 'script', configMap: { name: 'nomad-acl-bootstrap' } },
              { name: 'nomad-tls', secret: { secretName: props.nomadTlsSecretName, defaultMode: '0440' } },
            ],
          },
        },
      },
      waitForCompletion: true,
      timeouts: { create: '15m', update: '15m' },
      dependsOn: props.dependsOn,
    });
  }
}
