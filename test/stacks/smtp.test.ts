import 'cdktf/lib/testing/adapters/jest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Fn, Testing } from 'cdktf';
import { SecretV1 } from '@cdktf/provider-kubernetes/lib/secret-v1';
import { parse as parseYaml } from 'yaml';
import { loadEnvironment, parseEnvironment } from '../../stacks/environment';
import { addEnvironments } from '../../stacks/app';
import { ControlPlane, ControlPlaneProps, SMTP_SECRET, SmtpProps } from '../../constructs/kubernetes/control-plane';
import { testTempDir } from '../support/temp-dir';
import { ImageCatalog } from '../../constructs/images';
import { readNotificationSettings } from '../../runtime/notifications/settings';
import { kubernetesObjects, schemaErrors, unknownFields } from '../distribution/kubernetes-manifests';

Testing.setupJest();

/**
 * The SMTP server in a cluster install (`smtp:` in an environment file), as the GitHub App's key
 * is handled (github.test.ts): the notifier role, and no other workload, gets GYRE_SMTP_URL from a
 * Secret whose data is write-only and GYRE_SMTP_FROM, and may reach the server's port; the password
 * is in neither the synthesized JSON nor (write-only) Terraform's state; a bad field stops synth.
 */

const EXAMPLES = path.join(__dirname, '..', '..', 'environments');
/** A password with every character a URL's user info must escape, and a space. */
const PASSWORD = 'p@ss:w/rd +%20 ?#ünïcode';

function operatorFiles() {
  const dir = testTempDir('gyre-smtp-env-');
  fs.mkdirSync(path.join(dir, 'secrets'));
  fs.writeFileSync(path.join(dir, 'secrets', 'smtp-password'), `${PASSWORD}\n`);
  fs.writeFileSync(path.join(dir, 'empty'), '\n');
  return { dir };
}

function environmentWith(name: string, dir: string, smtp: Record<string, unknown> | undefined) {
  const raw = { ...parseYaml(fs.readFileSync(path.join(EXAMPLES, 'aws-example.yaml'), 'utf8')), name, ...(smtp ? { smtp } : {}) };
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, JSON.stringify(raw));
  return loadEnvironment(file);
}

function synth(envs: ReturnType<typeof loadEnvironment>[]) {
  const outdir = testTempDir('gyre-smtp-out-');
  const app = new App({ outdir });
  addEnvironments(app, envs);
  app.synth();
  const stacks = path.join(outdir, 'stacks');
  const byId = Object.fromEntries(fs.readdirSync(stacks).map((id) => [id, JSON.parse(fs.readFileSync(path.join(stacks, id, 'cdk.tf.json'), 'utf8'))]));
  return { outdir, stacks: byId as Record<string, any> };
}

const resourcesOf = (stack: any, type: string): any[] => Object.values(stack.resource?.[type] ?? {});
const podsOf = (server: any): { name: string; spec: any; metadata: any }[] =>
  ['kubernetes_deployment_v1', 'kubernetes_job_v1', 'kubernetes_stateful_set_v1']
    .flatMap((type) => resourcesOf(server, type))
    .map((r) => ({ name: r.metadata.name, spec: r.spec.template.spec, metadata: r.spec.template.metadata }));
const containersOf = (spec: any): any[] => [...spec.container, ...(spec.init_container ?? [])];
const sendsMail = (pod: { spec: any; metadata: any }) =>
  pod.metadata.labels?.['gyre.dev/smtp'] !== undefined || containersOf(pod.spec).some((c) => (c.env ?? []).some((e: any) => /^GYRE_SMTP_/.test(e.name)));

const haveTerraform = (() => {
  try {
    execFileSync('terraform', ['version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
})();

describe('an SMTP server in a cluster install', () => {
  const files = operatorFiles();
  const mail = environmentWith('mail', files.dir, { host: 'smtp.example.com', user: 'gyre@example.com', passwordFile: 'secrets/smtp-password', from: 'Gyre CI <ci@example.com>' });
  const nomail = environmentWith('nomail', files.dir, undefined);
  const { outdir, stacks } = synth([mail, nomail]);
  const server = stacks['mail-server'];
  const stackDir = path.join(outdir, 'stacks', 'mail-server');
  const secret = () => resourcesOf(server, 'kubernetes_secret_v1').find((s) => s.metadata.name === SMTP_SECRET);

  test('reads the section with its defaults: STARTTLS required, port 587', () => {
    expect(mail.smtp).toEqual({ host: 'smtp.example.com', port: 587, tls: 'starttls', user: 'gyre@example.com', passwordFile: path.join(files.dir, 'secrets', 'smtp-password'), from: 'Gyre CI <ci@example.com>' });
    const implicit = parseEnvironment({ ...parseYaml(fs.readFileSync(path.join(EXAMPLES, 'aws-example.yaml'), 'utf8')), smtp: { host: '10.0.8.25', tls: 'tls' } }, 'environments/relay.yaml', 'relay', files.dir);
    expect(implicit.smtp).toEqual({ host: '10.0.8.25', port: 465, tls: 'tls', from: 'Gyre <gyre@gyre.example.com>' });
  });

  test('only the notifier gets GYRE_SMTP_URL, from the write-only Secret, and the sender; it rolls when the password changes', () => {
    const pods = podsOf(server);
    expect(pods.filter(sendsMail).map((p) => p.name)).toEqual(['gyre-notifier']);
    const notifier = pods.find((p) => p.name === 'gyre-notifier')!;
    const env = notifier.spec.container[0].env.filter((e: any) => /^GYRE_SMTP_/.test(e.name));
    expect(env).toEqual([
      { name: 'GYRE_SMTP_URL', value_from: { secret_key_ref: { name: SMTP_SECRET, key: 'url' } } },
      { name: 'GYRE_SMTP_FROM', value: 'Gyre CI <ci@example.com>' },
    ]);
    for (const init of notifier.spec.init_container) expect((init.env ?? []).filter((e: any) => /^GYRE_SMTP_/.test(e.name))).toEqual([]);
    expect(notifier.metadata.annotations['gyre.dev/smtp-revision']).toMatch(/^\$\{substr\(sha256\(join\(.*file\("[^"]*smtp-password"\).*\), 0, 12\)\}$/);
    // Nothing of it in the runtime Secret every role reads.
    const runtime = resourcesOf(server, 'kubernetes_secret_v1').find((s) => s.metadata.name === 'gyre-runtime');
    expect(Object.keys(runtime.data).filter((k) => k.startsWith('GYRE_SMTP_'))).toEqual([]);
    // Without smtp: no role sends, and there is no Secret.
    expect(podsOf(stacks['nomail-server']).filter(sendsMail)).toEqual([]);
    expect(resourcesOf(stacks['nomail-server'], 'kubernetes_secret_v1').map((s) => s.metadata.name)).not.toContain(SMTP_SECRET);
  });

  test('the password is not in the synthesized output; Terraform reads it at plan time into write-only data', () => {
    for (const file of fs.readdirSync(outdir, { recursive: true }) as string[]) {
      const full = path.join(outdir, file);
      if (!fs.statSync(full).isFile()) continue;
      const text = fs.readFileSync(full, 'utf8');
      expect(text).not.toContain('p@ss');
      expect(text).not.toContain(encodeURIComponent(PASSWORD).slice(0, 12));
    }
    expect(secret().data).toBeUndefined();
    expect(Object.keys(secret().data_wo)).toEqual(['url']);
    // One Terraform expression that reads the file (by a path relative to the stack's directory).
    expect(secret().data_wo.url).toMatch(/^\$\{join\("", \["smtp:\/\/gyre%40example\.com:", .*file\("[^"/][^"]*smtp-password"\).*, "@smtp\.example\.com:587\?requireTLS=true"\]\)\}$/);
    expect(secret().data_wo_revision).toMatch(/^\$\{parseint\(substr\(sha256\(.*\), 0, 12\), 16\)\}$/);
    expect(server.terraform.required_version).toBe('>= 1.11.0');
    expect(stacks['nomail-server'].terraform.required_version).toBeUndefined();
  });

  test('the notifier may reach the SMTP port; no other pod may', () => {
    const policies = resourcesOf(server, 'kubernetes_network_policy_v1');
    const smtp = policies.find((p) => p.metadata.name === 'smtp');
    expect(smtp.spec.pod_selector.match_labels).toEqual({ 'gyre.dev/smtp': 'true' });
    expect(smtp.spec.egress).toEqual([{ ports: [{ port: '587', protocol: 'TCP' }] }]);
    // 587 is opened by no other rule.
    const others = policies.filter((p) => p.metadata.name !== 'smtp').flatMap((p) => (p.spec.egress ?? []).flatMap((e: any) => e.ports ?? []));
    expect(others.filter((p: any) => p.port === '587')).toEqual([]);
    expect(resourcesOf(stacks['nomail-server'], 'kubernetes_network_policy_v1').map((p) => p.metadata.name)).not.toContain('smtp');
  });

  test('every Kubernetes object, the write-only Secret and the env reference included, validates against the Kubernetes schema', () => {
    const objects = kubernetesObjects(server);
    expect(Object.keys(objects.find((o) => o.object.kind === 'Secret' && o.object.metadata.name === SMTP_SECRET)!.object.stringData)).toEqual(['url']);
    expect(objects.flatMap(schemaErrors)).toEqual([]);
    expect(objects.flatMap(unknownFields)).toEqual([]);
  });

  if (!haveTerraform) console.warn('smtp.test.ts: the URL test is skipped; it evaluates the Secret with `terraform console`');
  (haveTerraform ? test : test.skip)('Terraform makes a URL the runtime accepts, with the password as the file has it', () => {
    // Terraform reads the stack's JSON: a local of the same value, in JSON too, in a directory beside
    // the stack's (which needs its providers), so its relative path reads the same file.
    const beside = path.join(path.dirname(stackDir), 'console');
    fs.mkdirSync(beside, { recursive: true });
    fs.writeFileSync(path.join(beside, 'main.tf.json'), JSON.stringify({ locals: { url: secret().data_wo.url } }));
    const url = JSON.parse(execFileSync('terraform', ['console'], { cwd: beside, input: 'local.url', env: { ...process.env, CHECKPOINT_DISABLE: '1' }, stdio: 'pipe' }).toString().trim());
    const settings = readNotificationSettings({ GYRE_SMTP_URL: url, GYRE_SMTP_FROM: 'Gyre CI <ci@example.com>' });
    const parsed = new URL(settings.smtp!.url);
    expect([parsed.protocol, parsed.hostname, parsed.port, parsed.search]).toEqual(['smtp:', 'smtp.example.com', '587', '?requireTLS=true']);
    expect([decodeURIComponent(parsed.username), decodeURIComponent(parsed.password)]).toEqual(['gyre@example.com', PASSWORD]);
  }, 60_000);
});

describe('a bad smtp: section stops synth, naming the field and what is allowed', () => {
  const files = operatorFiles();
  const base = () => ({
    cloud: 'aws', region: 'us-east-1', zones: ['us-east-1a', 'us-east-1b'], domain: 'gyre.example.com',
    nomad: { packageMirror: 'https://mirror.example.com' }, access: { uiCidrs: ['0.0.0.0/0'] }, kubernetes: { apiAllowedCidrs: [] },
    state: { backend: 'local' },
  });
  const good = { host: 'smtp.example.com', user: 'gyre', passwordFile: 'secrets/smtp-password' };
  const parse = (smtp: unknown) => () => parseEnvironment({ ...base(), smtp }, 'environments/prod.yaml', 'prod', files.dir);

  test.each([
    ['the password itself', { ...good, password: 'hunter2' }, /environments\/prod.yaml: smtp.password is not a field: secrets are never written in the environment file; put the password in a file and name that in smtp.passwordFile/],
    ['a URL with the password in it', { url: 'smtp://u:p@smtp.example.com' }, /smtp.url is not a field: secrets are never written/],
    ['an unknown field', { ...good, secure: true }, /smtp.secure is not an SMTP setting; allowed: host, port, tls, user, passwordFile, from/],
    ['no host', { user: 'gyre', passwordFile: 'secrets/smtp-password' }, /smtp.host is required/],
    ['a host with a scheme', { ...good, host: 'smtp://smtp.example.com' }, /smtp.host \("smtp:\/\/smtp.example.com"\) must be a DNS name or an IPv4 address/],
    ['a TLS mode', { ...good, tls: 'ssl' }, /smtp.tls \("ssl"\) must be one of: starttls, tls, opportunistic/],
    ['a port', { ...good, port: 70000 }, /smtp.port \(70000\) must be a whole number from 1 to 65535/],
    ['a user without a password', { host: 'smtp.example.com', user: 'gyre' }, /smtp.passwordFile is required with smtp.user/],
    ['a password without a user', { host: 'smtp.example.com', passwordFile: 'secrets/smtp-password' }, /smtp.passwordFile needs smtp.user/],
    ['a password over a connection that may stay plain', { ...good, tls: 'opportunistic' }, /smtp.passwordFile cannot go with smtp.tls opportunistic: the password could be sent in the clear/],
    ['a missing password file', { ...good, passwordFile: 'secrets/nope' }, /smtp.passwordFile \("secrets\/nope"\) is not a file/],
    ['an empty password file', { ...good, passwordFile: 'empty' }, /smtp.passwordFile \("empty"\) is empty/],
    ['a sender that is not one', { ...good, from: 'Gyre' }, /smtp.from 'Gyre' is not a sender/],
    ['a Terraform expression as the sender', { ...good, from: 'x@example.com ${file("/etc/passwd")}' }, /smtp.from .* must not hold \$\{ or %\{/],
    ['smtp not a mapping', 'yes', /smtp \("yes"\) must be a mapping/],
  ])('%s', (_case, smtp, message) => {
    expect(parse(smtp)).toThrow(message);
  });
});

describe('ControlPlane with an SMTP server', () => {
  const props: ControlPlaneProps = {
    images: new ImageCatalog({ gyreTag: '9.9.9' }), domain: 'gyre.example.com', cloud: 'aws', databaseUrl: 'postgres://u:p@db:5432/gyre',
    blobEnvironment: { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'bucket', GYRE_S3_REGION: 'us-east-1' },
    serviceAccountAnnotations: {}, tls: { mode: 'self-signed' },
    nomad: { address: 'https://nomad-server.gyre.svc.cluster.local:4646', caPem: 'ca', clientCertPem: 'cert', clientKeyPem: 'key' },
    loadBalancerSourceRanges: ['0.0.0.0/0'],
    keyWrapper: { environment: { GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: 'arn:aws:kms:us-east-1:123456789012:key/0b6a3c1e-0000-4000-8000-000000000001' } },
  };
  const smtp: SmtpProps = { host: 'smtp.example.com', tls: 'tls', user: 'gyre', password: Fn.file('smtp-password'), from: 'gyre@example.com' };
  const make = (over: Partial<SmtpProps>) => () => Testing.synthScope((s) => new ControlPlane(s, 'ControlPlane', { ...props, smtp: { ...smtp, ...over } }));

  test('makes a Secret of write-only data holding the smtps:// URL', () => {
    expect(make({})()).toHaveResourceWithProperties(SecretV1, { metadata: { name: SMTP_SECRET, namespace: expect.anything() }, data_wo: { url: expect.stringMatching(/^\$\{join\("", \["smtps:\/\/gyre:", .*file\("smtp-password"\).*, "@smtp\.example\.com:465"\]\)\}$/) } });
  });

  test.each([
    ['a password given as a value', { password: 'hunter2' }, /smtp.password must be read by Terraform at plan time \(Fn.file\(<path>\)\), not given as a value/],
    ['a password without a user', { user: undefined }, /smtp.password needs smtp.user/],
    ['a password over opportunistic TLS', { tls: 'opportunistic' as const }, /smtp.password with smtp.tls opportunistic could be sent in the clear/],
    ['a host that is no host', { host: 'smtp.example.com:25' }, /smtp.host \(smtp.example.com:25\) must be a DNS name or an IPv4 address/],
    ['a sender with an expression', { from: 'a@b.c ${var.x}' }, /smtp.from .* must not hold/],
  ])('refuses %s', (_case, over, message) => {
    expect(make(over)).toThrow(message);
  });
});
