import 'cdktf/lib/testing/adapters/jest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Testing } from 'cdktf';
import * as os from 'node:os';
import { parse as parseYaml } from 'yaml';
import { loadEnvironment, loadEnvironments, EnvironmentDefinition } from '../../stacks/environment';
import { addEnvironments, EnvironmentStacks } from '../../stacks/app';
import { readImageManifest } from '../../constructs/images';
import { ROLE_NAMES } from '../../runtime/roles/names';

Testing.setupJest();

const envs = loadEnvironments(path.join(__dirname, '..', '..', 'environments'));
const build = (list: EnvironmentDefinition[]): EnvironmentStacks[] => addEnvironments(Testing.app(), list);
/** Synthesizes the whole app, as `cdktf synth` does (cross-stack outputs are only wired then). */
const synthAll = (list: EnvironmentDefinition[]): Record<string, any> => {
  const app = Testing.app();
  addEnvironments(app, list);
  app.synth();
  const dir = path.join(app.outdir, 'stacks');
  return Object.fromEntries(fs.readdirSync(dir).map((id) => [id, JSON.parse(fs.readFileSync(path.join(dir, id, 'cdk.tf.json'), 'utf8'))]));
};
const byName = (name: string) => envs.find((e) => e.name === name)!;

describe('stacks per environment', () => {
  const [aws, gcp] = build(envs);
  const synthesized = synthAll(envs);

  test('each environment has <env>-infra and <env>-server, the server depending on the infra', () => {
    expect([aws.infra.node.id, aws.server.node.id, gcp.infra.node.id, gcp.server.node.id])
      .toEqual(['aws-example-infra', 'aws-example-server', 'gcp-example-infra', 'gcp-example-server']);
    expect(aws.server.dependencies).toContain(aws.infra);
  });

  // Construct ids are the contract with existing infrastructure: a change here replaces resources.
  test.each(['aws-example-infra', 'aws-example-server', 'gcp-example-infra', 'gcp-example-server'])('%s matches its snapshot', (name) => {
    expect(synthesized[name]).toMatchSnapshot();
  });

  test('the server stack reads the cluster from the infra stack through outputs', () => {
    const server = synthesized['aws-example-server'];
    const infra = synthesized['aws-example-infra'];
    expect(Object.keys(server.data.terraform_remote_state)).toEqual(['cross-stack-reference-input-aws-example-infra']);
    expect(Object.keys(infra.output).some((o) => o.startsWith('cross-stack-output-aws_eks_cluster'))).toBe(true);
    expect(server.provider.kubernetes[0].host).toContain('data.terraform_remote_state.cross-stack-reference-input-aws-example-infra.outputs');
  });

  test('an external database is a sensitive variable, not a managed instance', () => {
    const env = { ...byName('aws-example'), name: 'byo-db', database: { mode: 'external' as const, allowedCidrs: ['10.9.0.0/24'], port: 5432 } };
    const [stacks] = build([env]);
    expect(Testing.synth(stacks.infra)).not.toContain('aws_db_instance');
    const server = JSON.parse(Testing.synth(stacks.server));
    expect(server.variable.database_url).toMatchObject({ sensitive: true, type: 'string' });
  });

  test('a provided certificate named relative to the environment file is read by Terraform from there', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-envdir-'));
    fs.mkdirSync(path.join(dir, 'tls'));
    fs.writeFileSync(path.join(dir, 'tls', 'gyre.crt'), 'CERT');
    fs.writeFileSync(path.join(dir, 'tls', 'gyre.key'), 'KEY');
    const raw = { ...parseYaml(fs.readFileSync(path.join(__dirname, '..', '..', 'environments', 'gcp-example.yaml'), 'utf8')), tls: { mode: 'provided', certificateFile: 'tls/gyre.crt', keyFile: 'tls/gyre.key' } };
    fs.writeFileSync(path.join(dir, 'relative.yaml'), JSON.stringify(raw));
    const env = loadEnvironment(path.join(dir, 'relative.yaml'));
    const outdir = path.join(dir, 'elsewhere', 'cdktf.out');
    fs.mkdirSync(outdir, { recursive: true });
    const app = new App({ outdir });
    addEnvironments(app, [env]);
    app.synth();
    const stackDir = path.join(outdir, 'stacks', 'relative-server');
    const server = JSON.parse(fs.readFileSync(path.join(stackDir, 'cdk.tf.json'), 'utf8'));
    const secret = Object.values<any>(server.resource.kubernetes_secret_v1).find((s) => s.metadata.name === 'gyre-edge-tls');
    const file = (expr: string) => /^\$\{file\("([^"]+)"\)\}$/.exec(expr)![1];
    // Terraform runs in the stack's directory: the paths must lead from there to the files.
    expect(fs.readFileSync(path.resolve(stackDir, file(secret.data['tls.crt'])), 'utf8')).toBe('CERT');
    expect(fs.readFileSync(path.resolve(stackDir, file(secret.data['tls.key'])), 'utf8')).toBe('KEY');
    expect(path.isAbsolute(file(secret.data['tls.crt']))).toBe(false);
  });

  test('two environments with one name are refused', () => {
    expect(() => addEnvironments(new App({ outdir: '/tmp/unused' }), [byName('aws-example'), { ...byName('gcp-example'), name: 'aws-example' }]))
      .toThrow(/name \(aws-example\) is already used by/);
  });
});

/** Every value under an `image` key, a `repository` key next to a tag, or an `image:` in embedded text. */
function imageReferences(node: unknown, found: string[] = []): string[] {
  if (typeof node === 'string') {
    for (const m of node.matchAll(/"image"\s*:\s*"([^"]+)"/g)) found.push(m[1]);
    for (const m of node.matchAll(/^\s*(?:image|repository):\s*(\S+)\s*$/gm)) found.push(m[1]);
  } else if (Array.isArray(node)) {
    node.forEach((n) => imageReferences(n, found));
  } else if (node && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      // Machine images of VMs (boot disks) are cloud images, not container images.
      if (key === 'boot_disk' || key === 'disk') continue;
      if ((key === 'image' || key === 'GYRE_AGENT_IMAGE') && typeof value === 'string') found.push(value);
      if (key === 'env' && Array.isArray(value)) value.filter((e: any) => /IMAGE$/.test(e.name)).forEach((e: any) => found.push(e.value));
      imageReferences(value, found);
    }
  }
  return found;
}

describe('air-gapped installs', () => {
  const registry = 'mirror.internal:5000/gyre';
  const outputs = Object.values(synthAll(envs.map((e) => ({ ...e, name: `${e.name}-ag`, registry, helmRepository: `oci://${registry}/charts` }))));

  test('every image reference in every stack points at the registry', () => {
    const refs = outputs.flatMap((o) => imageReferences(o));
    // Per environment: 7 runtime roles (container and migration wait), the migration Job, the
    // Nomad ACL bootstrap Job, edge, nomad, autoscaler, agent (scheduler env and job template);
    // plus metrics-server's and cluster-autoscaler's Helm values on AWS.
    expect(refs).toHaveLength(2 * (ROLE_NAMES.length * 2 + 2 + 3 + 2) + 2);
    expect(refs.filter((r) => !r.startsWith(`${registry}/`))).toEqual([]);
  });

  test('every image in the manifest appears, and nothing outside it', () => {
    const refs = new Set(outputs.flatMap((o) => imageReferences(o)).map((r) => r.replace(/:[^:/]+$/, '')));
    const manifest = readImageManifest();
    for (const image of manifest.images) {
      expect([...refs].some((r) => r.endsWith(image.source.split('/').slice(1).join('/')))).toBe(true);
    }
    expect(refs.size).toBe(manifest.images.length);
  });

  test('Helm charts come from the mirror', () => {
    const releases = outputs.flatMap((o) => Object.values(o.resource?.helm_release ?? {})) as any[];
    expect(releases.length).toBeGreaterThan(0);
    expect(releases.every((r) => r.repository === `oci://${registry}/charts`)).toBe(true);
  });

  test('without a registry the walk does find public images (the check can fail)', () => {
    const refs = imageReferences(synthAll([{ ...byName('aws-example'), name: 'public' }])['public-server']);
    expect(refs).toContain('docker.io/hashicorp/nomad:1.9.7');
  });
});
