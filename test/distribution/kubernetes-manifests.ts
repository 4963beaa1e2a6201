import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Turns the kubernetes_* resources of a synthesized stack (Terraform JSON, the provider's
 * snake_case schema) into the Kubernetes objects the provider creates, and checks them against the
 * Kubernetes API schema shipped in `kubernetes-models` (its validators for types and required
 * fields, and its type declarations for which fields exist at all).
 */

/** Terraform resource type → the Kubernetes object it creates, and its kubernetes-models module. */
export const KINDS: Record<string, { apiVersion: string; kind: string; model: string }> = {
  kubernetes_namespace_v1: { apiVersion: 'v1', kind: 'Namespace', model: 'v1/Namespace' },
  kubernetes_service_account_v1: { apiVersion: 'v1', kind: 'ServiceAccount', model: 'v1/ServiceAccount' },
  kubernetes_secret_v1: { apiVersion: 'v1', kind: 'Secret', model: 'v1/Secret' },
  kubernetes_config_map_v1: { apiVersion: 'v1', kind: 'ConfigMap', model: 'v1/ConfigMap' },
  kubernetes_service_v1: { apiVersion: 'v1', kind: 'Service', model: 'v1/Service' },
  kubernetes_deployment_v1: { apiVersion: 'apps/v1', kind: 'Deployment', model: 'apps/v1/Deployment' },
  kubernetes_stateful_set_v1: { apiVersion: 'apps/v1', kind: 'StatefulSet', model: 'apps/v1/StatefulSet' },
  kubernetes_job_v1: { apiVersion: 'batch/v1', kind: 'Job', model: 'batch/v1/Job' },
  kubernetes_pod_disruption_budget_v1: { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', model: 'policy/v1/PodDisruptionBudget' },
  kubernetes_horizontal_pod_autoscaler_v2: { apiVersion: 'autoscaling/v2', kind: 'HorizontalPodAutoscaler', model: 'autoscaling/v2/HorizontalPodAutoscaler' },
  kubernetes_storage_class_v1: { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', model: 'storage.k8s.io/v1/StorageClass' },
  kubernetes_network_policy_v1: { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', model: 'networking.k8s.io/v1/NetworkPolicy' },
  kubernetes_role_v1: { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', model: 'rbac.authorization.k8s.io/v1/Role' },
  kubernetes_role_binding_v1: { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', model: 'rbac.authorization.k8s.io/v1/RoleBinding' },
};

/** Terraform-only arguments of a resource, not part of the object. */
const TERRAFORM_ONLY = new Set(['//', 'lifecycle', 'depends_on', 'provider', 'count', 'for_each', 'timeouts', 'wait_for_completion', 'wait_for_rollout', 'wait_for_load_balancer', 'data_wo_revision']);

/** Provider block names whose Kubernetes field is a list under another name. */
const LIST_RENAMES: Record<string, string> = {
  container: 'containers', init_container: 'initContainers', port: 'ports', volume: 'volumes', volume_mount: 'volumeMounts',
  topology_spread_constraint: 'topologySpreadConstraints', volume_claim_template: 'volumeClaimTemplates', metric: 'metrics',
  rule: 'rules', subject: 'subjects', toleration: 'tolerations', image_pull_secret: 'imagePullSecrets', env_from: 'envFrom',
};
/** Field names whose camel case is not Kubernetes' spelling. */
const NAME_FIXES: Record<string, string> = { cluster_ip: 'clusterIP', storage_provisioner: 'provisioner', host_ip: 'hostIP', pod_ip: 'podIP' };
/** Provider blocks that are lists of at most one, where Kubernetes has a single object. */
const SINGLE_OBJECTS = new Set([
  'label_selector', 'tcp_socket', 'http_get', 'exec', 'ip_block', 'pod_selector', 'namespace_selector', 'role_ref', 'selector',
  'spec', 'metadata', 'template', 'strategy', 'rolling_update', 'security_context', 'resources', 'seccomp_profile', 'capabilities',
  'startup_probe', 'readiness_probe', 'liveness_probe', 'empty_dir', 'secret', 'config_map', 'secret_ref', 'config_map_ref',
  'value_from', 'secret_key_ref', 'field_ref', 'scale_target_ref', 'target', 'affinity', 'pod_anti_affinity', 'pod_affinity_term',
]);
/** Provider strings that Kubernetes holds as integers (or int-or-string, given as a number). */
const INTEGERS = new Set(['replicas', 'run_as_user', 'run_as_group', 'fs_group', 'ttl_seconds_after_finished', 'max_unavailable', 'max_surge', 'port', 'target_port']);

const camel = (s: string) => NAME_FIXES[s] ?? s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

function convert(value: unknown, key?: string): unknown {
  if (Array.isArray(value)) {
    if (key && SINGLE_OBJECTS.has(key) && value.length === 1 && value[0] && typeof value[0] === 'object') return convert(value[0], key);
    return value.map((v) => convert(v));
  }
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      // Maps whose keys are data, not field names.
      if (['labels', 'annotations', 'match_labels', 'data', 'data_wo', 'parameters', 'requests', 'limits', 'node_selector', 'string_data'].includes(k)) {
        out[camel(k)] = v;
        continue;
      }
      const name = Array.isArray(v) && LIST_RENAMES[k] ? LIST_RENAMES[k] : camel(k);
      out[name] = convert(v, k);
    }
    return out;
  }
  if (typeof value === 'string' && key === 'default_mode' && /^0[0-7]{3}$/.test(value)) return parseInt(value, 8);
  if (typeof value === 'string' && key && INTEGERS.has(key) && /^\d+$/.test(value)) return Number(value);
  return value;
}

export interface KubernetesObject {
  readonly address: string;
  readonly type: string;
  readonly object: Record<string, any>;
}

/** Every kubernetes_* resource of a synthesized stack as the object it creates. */
export function kubernetesObjects(stack: any): KubernetesObject[] {
  const found: KubernetesObject[] = [];
  for (const [type, byName] of Object.entries<Record<string, any>>(stack.resource ?? {})) {
    if (!type.startsWith('kubernetes_')) continue;
    const kind = KINDS[type];
    if (!kind) throw new Error(`${type}: no Kubernetes kind is mapped for this resource type; add it to KINDS`);
    for (const [name, resource] of Object.entries(byName)) {
      const body = Object.fromEntries(Object.entries(resource).filter(([k]) => !TERRAFORM_ONLY.has(k)));
      const object: Record<string, any> = { apiVersion: kind.apiVersion, kind: kind.kind, ...(convert(body) as Record<string, any>) };
      // The provider takes Secret values in the clear and encodes them itself; write-only values
      // (`data_wo`, kept out of the state) become the Secret's data just the same.
      if (kind.kind === 'Secret' && (object.data || object.dataWo)) {
        object.stringData = { ...(object.data ?? {}), ...(object.dataWo ?? {}) };
        delete object.data;
        delete object.dataWo;
      }
      found.push({ address: `${type}.${name}`, type, object });
    }
  }
  return found;
}

const modelsRoot = path.dirname(require.resolve('kubernetes-models/package.json'));

/** Errors of the kubernetes-models validator for the object. */
export function schemaErrors(o: KubernetesObject): string[] {
  const { model } = KINDS[o.type];
  const module = require(`kubernetes-models/${model}`);
  const Model = module[KINDS[o.type].kind];
  try {
    new Model(o.object).validate();
    return [];
  } catch (error) {
    return [`${o.address}: ${(error as Error).message}`];
  }
}

/** Fields of each interface, read from the kubernetes-models type declarations. */
interface Shape { readonly fields: Map<string, { type: string; file: string }> }
const shapes = new Map<string, Shape | null>();

function resolveImport(fromFile: string, spec: string): string {
  if (spec.startsWith('.')) return `${path.resolve(path.dirname(fromFile), spec)}.d.ts`;
  const candidates = [path.join(modelsRoot, 'node_modules', `${spec}.d.ts`), path.join(path.dirname(modelsRoot), `${spec}.d.ts`)];
  return candidates.find((c) => fs.existsSync(c)) ?? '';
}

function shapeOf(file: string): Shape | null {
  if (shapes.has(file)) return shapes.get(file)!;
  const text = fs.readFileSync(file, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)";/g)) imports.set(m[1], resolveImport(file, m[2]));
  const body = /export interface \w+(?: extends [^{]+)? \{([\s\S]*?)\n\}/.exec(text);
  if (!body) {
    shapes.set(file, null);
    return null;
  }
  const fields = new Map<string, { type: string; file: string }>();
  // One field per line at this indent; a map's type opens a brace and runs over several lines.
  for (const m of body[1].matchAll(/^ {4}"([^"]+)"\??: ([^\n]*)$/gm)) {
    const type = m[2].replace(/;$/, '');
    const ref = /^(?:Array<)?(I\w+)>?$/.exec(type);
    fields.set(m[1], { type, file: ref && imports.has(ref[1]) ? imports.get(ref[1])! : '' });
  }
  const shape = { fields };
  shapes.set(file, shape);
  return shape;
}

/** Fields that exist in no version of the object's schema (a misspelt or misplaced field). */
export function unknownFields(o: KubernetesObject): string[] {
  const errors: string[] = [];
  const walk = (value: unknown, file: string, at: string) => {
    const shape = file ? shapeOf(file) : null;
    if (!shape || !value || typeof value !== 'object') return;
    if (Array.isArray(value)) {
      value.forEach((v, i) => walk(v, file, `${at}[${i}]`));
      return;
    }
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const field = shape.fields.get(k);
      if (!field) errors.push(`${o.address}: ${at}.${k} is not a field of ${path.basename(file, '.d.ts')}`);
      else walk(v, field.file, `${at}.${k}`);
    }
  };
  const { apiVersion: _a, kind: _k, ...rest } = o.object;
  walk(rest, path.join(modelsRoot, `${KINDS[o.type].model}.d.ts`), '');
  return errors;
}
