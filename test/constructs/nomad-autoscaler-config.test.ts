import * as fs from 'node:fs';
import * as path from 'node:path';
import { Testing } from 'cdktf';
import { parseHcl as parse } from './hcl';
import { NomadAutoscaler, NomadAutoscalerProps } from '../../constructs/kubernetes/nomad-autoscaler';
import { ImageCatalog } from '../../constructs/images';

/**
 * The nomad-autoscaler configuration Gyre writes, parsed as HCL and checked against what the agent
 * of the image tag in images/manifest.json accepts (test/fixtures/nomad-autoscaler/, transcribed
 * from its source). The agent decodes with hclsimple into fixed structures, so a key it does not
 * declare, or a block where it declares an attribute, stops it at start.
 */
const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'nomad-autoscaler', 'v0.4.6-schema.json'), 'utf8'));
const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'images', 'manifest.json'), 'utf8'));

type Body = { attributes?: Record<string, string>; blocks?: Record<string, Body>; labeled?: Record<string, Body | { $ref: string }>; required?: string[]; remain?: boolean };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isScalar = (v: unknown) => ['string', 'number', 'boolean'].includes(typeof v);

/** Every way `body` (hcl2json's JSON of an HCL body) departs from `spec`, as readable paths. */
function violations(body: Record<string, unknown>, spec: Body, at: string): string[] {
  const errors: string[] = [];
  const resolved = (s: Body | { $ref: string }): Body => ('$ref' in s ? schema[s.$ref] : s);
  if (spec.remain) {
    for (const [k, v] of Object.entries(body)) if (!isScalar(v)) errors.push(`${at}.${k} must be a string attribute`);
    return errors;
  }
  for (const [key, value] of Object.entries(body)) {
    const where = `${at}.${key}`;
    const type = spec.attributes?.[key];
    if (type) {
      if (type === 'map') {
        if (!isObject(value)) errors.push(`${where} must be an attribute (${key} = { … }), not a block`);
        else for (const [k, v] of Object.entries(value)) if (!isScalar(v)) errors.push(`${where}.${k} must be a string`);
      } else if (type === 'list') {
        if (!Array.isArray(value) || !value.every(isScalar)) errors.push(`${where} must be a list of strings`);
      } else if (!isScalar(value)) {
        errors.push(`${where} must be a ${type} attribute`);
      }
    } else if (spec.blocks?.[key]) {
      if (!Array.isArray(value) || !value.every(isObject)) errors.push(`${where} must be a block`);
      else for (const b of value) errors.push(...violations(b, spec.blocks[key], where));
    } else if (spec.labeled?.[key]) {
      if (!isObject(value)) errors.push(`${where} must be a labeled block (${key} "name" { … })`);
      else {
        for (const [label, blocks] of Object.entries(value)) {
          if (!Array.isArray(blocks)) { errors.push(`${where}.${label} must be a block`); continue; }
          for (const b of blocks) errors.push(...violations(b as Record<string, unknown>, resolved(spec.labeled[key]), `${where}.${label}`));
        }
      }
    } else {
      errors.push(`${where} is not accepted here`);
    }
  }
  for (const key of spec.required ?? []) if (!(key in body)) errors.push(`${at}.${key} is required`);
  return errors;
}

const images = new ImageCatalog();
const props = (target: NomadAutoscalerProps['target']): NomadAutoscalerProps => ({
  namespace: 'gyre', images, nomadAddress: 'https://nomad-server.gyre.svc.cluster.local:4646', nomadTlsSecretName: 'tls', nomadTokenSecretName: 'token',
  target, minClients: 1, maxClients: 10, serviceAccountAnnotations: {},
});
const configFiles = (p: NomadAutoscalerProps) => {
  const out = JSON.parse(Testing.synthScope((s) => new NomadAutoscaler(s, 'Autoscaler', p)));
  return Object.values(out.resource.kubernetes_config_map_v1)[0] as any;
};
const targets: NomadAutoscalerProps['target'][] = [
  { driver: 'aws-asg', region: 'us-east-1', autoScalingGroupName: 'gyre-nomad-asg' },
  { driver: 'gce-mig', project: 'example-project', region: 'europe-west1', instanceGroupManagerName: 'gyre-nomad' },
];

describe('nomad-autoscaler configuration', () => {
  test('the fixture describes the image Gyre deploys', () => {
    expect(manifest.images.find((i: any) => i.name === 'nomad-autoscaler').tag).toBe('0.4.6');
  });

  test.each(targets)('the agent file ($driver) has only keys the agent accepts, plugin settings as a `config = { }` attribute', async (target) => {
    const agent = await parse('agent.hcl', configFiles(props(target)).data['agent.hcl']);
    expect(violations(agent, schema.agent, 'agent')).toEqual([]);
    const plugin = agent.target[target.driver][0];
    expect(plugin.driver).toBe(target.driver);
    const known = schema.targets[target.driver].pluginConfig;
    expect(Object.keys(plugin.config).filter((k) => !known.includes(k))).toEqual([]);
    // Probes reach the health endpoint only if it listens beyond loopback (the default).
    expect(agent.http[0].bind_address).toBe('0.0.0.0');
    expect(agent.http[0].bind_address).not.toBe(schema.defaultHttpBindAddress);
  });

  test.each(targets)('the scaling policy ($driver) decodes, names its target fully, and queries nomad-apm in its grammar', async (target) => {
    const policyFile = await parse('clients.hcl', configFiles(props(target)).data['clients.hcl']);
    expect(violations(policyFile, schema.policyFile, 'policy')).toEqual([]);
    const policy = policyFile.scaling['nomad-clients'][0].policy[0];
    const t = policy.target[target.driver][0];
    const spec = schema.targets[target.driver];
    const allowed = [...spec.policyKeys, ...schema.clusterTargetKeys];
    expect(Object.keys(t).filter((k) => !allowed.includes(k))).toEqual([]);
    for (const need of spec.policyRequired) {
      const options: string[] = Array.isArray(need) ? need : [need];
      expect({ need, present: options.some((k) => k in t) }).toEqual({ need, present: true });
    }
    expect(t.node_class).toBe('linux-docker');
    for (const check of Object.values(policy.check) as any[][]) {
      expect(check[0].source).toBe('nomad-apm');
      expect(check[0].query).toMatch(new RegExp(schema.apms['nomad-apm'].nodeQuery));
      expect(check[0].query).toContain('/linux-docker/class');
      const [strategyName, [strategy]] = Object.entries(check[0].strategy)[0] as [string, any[]];
      expect(Object.keys(strategy).filter((k) => !schema.strategies[strategyName].keys.includes(k))).toEqual([]);
      expect(Object.keys(strategy)).toEqual(expect.arrayContaining(schema.strategies[strategyName].required));
    }
  });

  test('the check catches what the agent refused before: plugin config as a block, a bind to loopback, a bare query', async () => {
    const old = await parse('agent.hcl', 'target "gce-mig" {\n  driver = "gce-mig"\n  config {\n    project = "p"\n  }\n}\n');
    expect(violations(old, schema.agent, 'agent')).toEqual(['agent.target.gce-mig.config must be an attribute (config = { … }), not a block']);
    const unknown = await parse('agent.hcl', 'nomad {\n  adress = "x"\n}\n');
    expect(violations(unknown, schema.agent, 'agent')).toEqual(['agent.nomad.adress is not accepted here']);
    expect('percentage-allocated_cpu').not.toMatch(new RegExp(schema.apms['nomad-apm'].nodeQuery));
  });
});
