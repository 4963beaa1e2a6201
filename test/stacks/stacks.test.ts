import 'cdktf/lib/testing/adapters/jest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Testing } from 'cdktf';
import * as os from 'node:os';
import { parse as parseYaml } from 'yaml';
import { loadEnvironment, loadEnvironments, parseEnvironment, EnvironmentDefinition } from '../../stacks/environment';
import { readSecretsSettings } from '../../runtime/secrets/settings';
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

describe('the key that wraps secrets', () => {
  const synthesized = synthAll(envs);
  const resourcesOf = (stack: any, type: string): any[] => Object.values(stack.resource?.[type] ?? {});
  /** Every runtime container of a server stack (roles, their migration waits, the migration Job). */
  const runtimeContainers = (server: any): any[] => [...resourcesOf(server, 'kubernetes_deployment_v1'), ...resourcesOf(server, 'kubernetes_job_v1')]
    .map((r) => r.spec.template.spec)
    .flatMap((spec) => [...spec.container, ...(spec.init_container ?? [])])
    .filter((c) => c.command?.join(' ') === 'tini -- gyre');
  const envOf = (c: any): Record<string, string> => Object.fromEntries(c.env.filter((e: any) => e.value !== undefined).map((e: any) => [e.name, e.value]));
  /** The infra output a server stack's `${data.terraform_remote_state….outputs.<name>}` reads. */
  const infraOutput = (infra: any, expression: string): string => {
    const name = /outputs\.([\w-]+)\}$/.exec(expression)?.[1];
    if (!name || !infra.output[name]) throw new Error(`${expression} reads no output of the infra stack`);
    return infra.output[name].value;
  };
  /** The resources of the key the infra stack makes (the EKS cluster has a KMS key of its own). */
  const wrappingKey = (stack: any, type: string): Record<string, any> =>
    Object.fromEntries(Object.entries<any>(stack.resource?.[type] ?? {}).filter(([id]) => id.startsWith('SecretsWrappingKey_')));
  const runtimeSecret = (server: any) => resourcesOf(server, 'kubernetes_secret_v1').find((s) => s.metadata.name === 'gyre-runtime');

  test('AWS: a symmetric KMS key with rotation, an alias and a deletion window', () => {
    const infra = synthesized['aws-example-infra'];
    expect(Object.values(wrappingKey(infra, 'aws_kms_key'))).toEqual([expect.objectContaining({
      key_usage: 'ENCRYPT_DECRYPT', customer_master_key_spec: 'SYMMETRIC_DEFAULT', enable_key_rotation: true, rotation_period_in_days: 365, deletion_window_in_days: 30,
    })]);
    expect(Object.values(wrappingKey(infra, 'aws_kms_alias'))).toEqual([expect.objectContaining({ name: 'alias/gyre-aws-example-secrets', target_key_id: expect.stringMatching(/^\$\{aws_kms_key\.SecretsWrappingKey_\w+\.key_id\}$/) })]);
  });

  test('AWS: only the runtime pods\' role may use it, and only for wrapping data keys', () => {
    const infra = synthesized['aws-example-infra'];
    const [keyId] = Object.keys(wrappingKey(infra, 'aws_kms_key'));
    const keyArn = `\${aws_kms_key.${keyId}.arn}`;
    const runtimeRole = Object.entries<any>(infra.resource.aws_iam_role).find(([, r]) => r.name === 'gyre-aws-example-runtime')![0];
    const grants = resourcesOf(infra, 'aws_iam_role_policy').filter((p) => p.policy.includes('kms:'));
    expect(grants.map((g) => g.role)).toEqual([`\${aws_iam_role.${runtimeRole}.name}`]);
    const statements = JSON.parse(grants[0].policy).Statement;
    expect(statements.flatMap((st: any) => st.Action).sort()).toEqual(['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey']);
    expect(statements.flatMap((st: any) => st.Resource)).toEqual([keyArn, keyArn]);
    // The pods act as that role (IRSA), with no static keys.
    const sa = resourcesOf(synthesized['aws-example-server'], 'kubernetes_service_account_v1').find((a) => a.metadata.name === 'gyre-runtime');
    expect(infraOutput(infra, sa.metadata.annotations['eks.amazonaws.com/role-arn'])).toBe(`\${aws_iam_role.${runtimeRole}.arn}`);
  });

  test.each([['aws-example', 'aws-kms', 'GYRE_SECRETS_AWS_KMS_KEY_ID', /^\$\{aws_kms_key\.\w+\.arn\}$/], ['gcp-example', 'gcp-kms', 'GYRE_SECRETS_GCP_KMS_KEY', /^\$\{google_kms_crypto_key\.\w+\.id\}$/]])(
    '%s: every runtime container wraps with the infra stack\'s key',
    (env, wrapper, setting, key) => {
      const containers = runtimeContainers(synthesized[`${env}-server`]);
      expect(containers).toHaveLength(ROLE_NAMES.length * 2 + 1);
      const values = new Set(containers.map((c) => { const e = envOf(c); return `${e.GYRE_SECRETS_KEY_WRAPPER} ${e[setting]}`; }));
      expect(values.size).toBe(1);
      const [value] = values;
      expect(value.split(' ')[0]).toBe(wrapper);
      expect(infraOutput(synthesized[`${env}-infra`], value.split(' ')[1])).toMatch(key);
    },
  );

  test('GCP: a key ring and a rotated crypto key, the runtime\'s service account an encrypter/decrypter of that key only', () => {
    const infra = synthesized['gcp-example-infra'];
    expect(resourcesOf(infra, 'google_kms_key_ring')).toEqual([expect.objectContaining({ name: 'gyre-gcp-example', location: 'europe-west1', project: 'example-project' })]);
    const [keyId] = Object.keys(infra.resource.google_kms_crypto_key);
    expect(infra.resource.google_kms_crypto_key[keyId]).toMatchObject({ name: 'secrets', purpose: 'ENCRYPT_DECRYPT', rotation_period: '31536000s', destroy_scheduled_duration: '2592000s' });
    const runtimeAccount = Object.entries<any>(infra.resource.google_service_account).find(([, a]) => a.account_id === 'gyre-gcp-example-runtime')![0];
    const kmsGrants = Object.entries<Record<string, any>>(infra.resource)
      .filter(([type]) => /iam/.test(type))
      .flatMap(([type, byName]) => Object.values(byName).map(({ '//': _metadata, ...r }) => ({ type, ...r })))
      .filter((r) => /cloudkms/.test(r.role ?? ''));
    expect(kmsGrants).toEqual([{
      type: 'google_kms_crypto_key_iam_member',
      crypto_key_id: `\${google_kms_crypto_key.${keyId}.id}`,
      role: 'roles/cloudkms.cryptoKeyEncrypterDecrypter',
      member: `\${google_service_account.${runtimeAccount}.member}`,
    }]);
  });

  test.each([
    ['aws-example', 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab', 'aws_kms_key', 'GYRE_SECRETS_AWS_KMS_KEY_ID'],
    ['gcp-example', 'projects/security-prj/locations/europe-west1/keyRings/platform/cryptoKeys/gyre', 'google_kms_crypto_key', 'GYRE_SECRETS_GCP_KMS_KEY'],
  ])('%s with an existing key: nothing is made, the runtime is granted on that key and pointed at it, as the runtime accepts', (name, existingKey, keyType, setting) => {
    const env = { ...byName(name), name: 'byo-key', secrets: { ...byName(name).secrets, existingKey } as EnvironmentDefinition['secrets'] };
    const out = synthAll([env]);
    const infra = out['byo-key-infra'];
    expect(wrappingKey(infra, keyType)).toEqual({});
    const grants = JSON.stringify([...resourcesOf(infra, 'aws_iam_role_policy'), ...resourcesOf(infra, 'google_kms_crypto_key_iam_member')]);
    expect(grants).toContain(existingKey);
    for (const c of runtimeContainers(out['byo-key-server'])) expect(envOf(c)[setting]).toBe(existingKey);
    const [role] = runtimeContainers(out['byo-key-server']);
    expect(readSecretsSettings(envOf(role), '/var/lib/gyre')).toMatchObject({ wrapper: byName(name).cloud === 'aws' ? 'aws-kms' : 'gcp-kms' });
  });

  describe('Vault transit', () => {
    const token = 'hvs.CAESIvault-token-from-the-operator';
    let out: Record<string, any>;
    beforeAll(() => {
      process.env.GYRE_TEST_VAULT_TOKEN = token;
      try {
        const raw = { ...parseYaml(fs.readFileSync(path.join(__dirname, '..', '..', 'environments', 'aws-example.yaml'), 'utf8')), name: 'vault' };
        raw.secrets = { keyWrapper: 'vault-transit', vault: { address: 'https://vault.example.com:8200', key: 'gyre-ci', namespace: 'platform', token: { fromEnv: 'GYRE_TEST_VAULT_TOKEN' } } };
        out = synthAll([parseEnvironment(raw, 'environments/vault.yaml', 'vault')]);
      } finally {
        delete process.env.GYRE_TEST_VAULT_TOKEN;
      }
    });

    test('no KMS key is made or granted', () => {
      const infra = out['vault-infra'];
      expect(wrappingKey(infra, 'aws_kms_key')).toEqual({});
      expect(wrappingKey(infra, 'aws_kms_alias')).toEqual({});
      expect(JSON.stringify(resourcesOf(infra, 'aws_iam_role_policy'))).not.toContain('kms:');
    });

    test('the token is in the runtime Secret, and no ConfigMap, pod spec or other object holds it', () => {
      const server = out['vault-server'];
      expect(runtimeSecret(server).data.VAULT_TOKEN).toBe(token);
      const holding = Object.entries<Record<string, any>>(server.resource)
        .flatMap(([type, byName]) => Object.values(byName).map((r) => ({ type, name: r.metadata?.name ?? '', r })))
        .filter(({ r }) => JSON.stringify(r).includes(token))
        .map(({ type, name }) => `${type} ${name}`);
      expect(holding).toEqual(['kubernetes_secret_v1 gyre-runtime']);
      expect(resourcesOf(server, 'kubernetes_config_map_v1').length).toBeGreaterThan(0);
      expect(JSON.stringify(server.output ?? {})).not.toContain(token);
    });

    test('every runtime container reads Vault\'s settings from its environment and the token from the Secret, as the runtime accepts', () => {
      const server = out['vault-server'];
      for (const c of runtimeContainers(server)) {
        expect(envOf(c)).toMatchObject({
          GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'https://vault.example.com:8200', GYRE_SECRETS_VAULT_TRANSIT_MOUNT: 'transit', GYRE_SECRETS_VAULT_TRANSIT_KEY: 'gyre-ci', VAULT_NAMESPACE: 'platform',
        });
        expect(c.env.map((e: any) => e.name)).not.toContain('VAULT_TOKEN');
        expect(c.env_from).toEqual([{ secret_ref: { name: 'gyre-runtime' } }]);
      }
      const [role] = runtimeContainers(server);
      const settings = readSecretsSettings({ ...envOf(role), VAULT_TOKEN: runtimeSecret(server).data.VAULT_TOKEN }, '/var/lib/gyre');
      expect(settings).toMatchObject({ wrapper: 'vault-transit', vaultAddr: 'https://vault.example.com:8200', vaultTransitKey: 'gyre-ci', vaultToken: token });
    });

    test('the roles may reach Vault\'s port', () => {
      const https = resourcesOf(out['vault-server'], 'kubernetes_network_policy_v1').find((p) => p.metadata.name === 'https');
      expect(https.spec.egress[0].ports).toEqual([{ port: '443', protocol: 'TCP' }, { port: '8200', protocol: 'TCP' }]);
      const usual = resourcesOf(synthesized['aws-example-server'], 'kubernetes_network_policy_v1').find((p) => p.metadata.name === 'https');
      expect(usual.spec.egress[0].ports).toEqual([{ port: '443', protocol: 'TCP' }]);
    });
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
