import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadEnvironment, loadEnvironments, parseEnvironment } from '../../stacks/environment';
import { ROLE_NAMES } from '../../runtime/roles/names';

const examples = path.join(__dirname, '..', '..', 'environments');
const valid = () => ({
  cloud: 'aws', region: 'us-east-1', zones: ['us-east-1a', 'us-east-1b'], domain: 'gyre.example.com',
  nomad: { packageMirror: 'https://mirror.example.com' }, access: { uiCidrs: ['0.0.0.0/0'] }, kubernetes: { apiAllowedCidrs: [] },
  state: { backend: 's3', bucket: 'acme-tfstate', dynamodbTable: 'acme-tfstate-locks' },
});
const parse = (patch: (d: any) => void) => {
  const d: any = valid();
  patch(d);
  return () => parseEnvironment(d, 'environments/prod.yaml', 'prod');
};

describe('environment definitions', () => {
  test('the examples load, with defaults filled in', () => {
    const envs = loadEnvironments(examples);
    expect(envs.map((e) => `${e.name}:${e.cloud}`)).toEqual(['aws-example:aws', 'gcp-example:gcp']);
    expect(envs[1].registry).toBe('registry.example.net/gyre');
    expect(envs[1].nomad.nomadVersion).toBe('1.9.7');
  });

  test.each([
    ['cloud', (d: any) => { d.cloud = 'azure'; }, /environments\/prod.yaml: cloud \("azure"\) must be one of: aws, gcp/],
    ['zones', (d: any) => { d.zones = ['us-east-1a', 'eu-west-1b']; }, /zones\[1\] \("eu-west-1b"\) must be a zone of region us-east-1/],
    ['domain', (d: any) => { d.domain = 'not a host'; }, /domain \("not a host"\) must be a DNS name/],
    ['tls.mode', (d: any) => { d.cloud = 'gcp'; d.project = 'p'; d.zones = ['us-east1-b', 'us-east1-c']; d.region = 'us-east1'; d.tls = { mode: 'acm', certificateArn: 'x' }; }, /tls.mode \(acm\) is only allowed when cloud is aws/],
    ['tls.certificateFile', (d: any) => { d.tls = { mode: 'provided' }; }, /tls.certificateFile is required/],
    ['kubernetes.nodes.desired', (d: any) => { d.kubernetes.nodes = { min: 3, desired: 9, max: 6 }; }, /kubernetes.nodes.desired \(9\) must be between kubernetes.nodes.min \(3\) and kubernetes.nodes.max \(6\)/],
    ['kubernetes.version', (d: any) => { d.kubernetes.version = 1.3; }, /kubernetes.version \(1.3\) must be a non-empty string/],
    ['nomad.clients.max', (d: any) => { d.nomad.clients = { min: 5, max: 2 }; }, /nomad.clients.max \(2\) must be at least nomad.clients.min \(5\)/],
    ['nomad.packageMirror', (d: any) => { d.nomad.packageMirror = 'ftp://x'; }, /nomad.packageMirror \("ftp:\/\/x"\) must be an http\(s\) URL/],
    ['access.uiCidrs', (d: any) => { d.access.uiCidrs = ['10.0.0.0/33']; }, /access.uiCidrs\[0\] \("10.0.0.0\/33"\) must be an IPv4 CIDR/],
    ['database.mode', (d: any) => { d.database = { mode: 'sqlite' }; }, /database.mode \("sqlite"\) must be one of: managed, external/],
    ['registry', (d: any) => { d.registry = 'https://registry.example.com'; }, /registry \("https:\/\/registry.example.com"\) must be a registry host/],
    ['replicas', (d: any) => { d.replicas = { web: 2 }; }, `replicas.web is not a runtime role; allowed: ${ROLE_NAMES.join(', ')}`],
    ['replicas (a role with no code behind it)', (d: any) => { d.replicas = { machines: 1 }; }, `replicas.machines is not a runtime role; allowed: ${ROLE_NAMES.join(', ')}`],
    ['state', (d: any) => { delete d.state; }, /state is required: name the remote state, e.g. \{ backend: s3/],
    ['state.backend', (d: any) => { d.state = { backend: 'consul' }; }, /state.backend \("consul"\) must be one of: s3, gcs, local/],
    ['state.dynamodbTable', (d: any) => { delete d.state.dynamodbTable; }, /state.dynamodbTable is required/],
    ['state.prefix on s3', (d: any) => { d.state.prefix = 'x/'; }, /state.prefix is not a setting of the s3 backend; allowed: backend, bucket, region, dynamodbTable, kmsKeyId, keyPrefix/],
    ['nomad.registryCredentials', (d: any) => { d.registry = 'registry.example.com/gyre'; }, /nomad.registryCredentials.source is required when registry \(registry.example.com\/gyre\) is not ECR/],
    ['nomad.registryCredentials.source', (d: any) => { d.nomad.registryCredentials = { source: 'cloud' }; }, /nomad.registryCredentials.source \(cloud\) needs registry to be an ECR registry/],
    ['project', (d: any) => { d.cloud = 'gcp'; }, /project is required when cloud is gcp/],
    ['unknown field', (d: any) => { d.nodes = 3; }, /nodes is not a known field; allowed: name, cloud/],
    ['signIn setting', (d: any) => { d.signIn = { DATABASE_URL: 'postgres://elsewhere' }; }, /signIn.DATABASE_URL is not a sign-in setting/],
    ['signIn value', (d: any) => { d.signIn = { GYRE_OIDC_ISSUER: 'http://idp.example.com', GYRE_OIDC_CLIENT_ID: 'gyre', GYRE_OIDC_CLIENT_SECRET: 's' }; }, /signIn.GYRE_OIDC_ISSUER 'http:\/\/idp.example.com' must be an https:\/\/ URL/],
    ['signIn pair', (d: any) => { d.signIn = { GYRE_LDAP_URL: 'ldaps://ldap.example.com' }; }, /signIn.GYRE_LDAP_USER_BASE is required with GYRE_LDAP_URL/],
    ['signIn fromEnv', (d: any) => { d.signIn = { GYRE_GITHUB_CLIENT_ID: 'id', GYRE_GITHUB_CLIENT_SECRET: { fromEnv: 'GYRE_TEST_UNSET_SECRET' } }; }, /signIn.GYRE_GITHUB_CLIENT_SECRET reads the environment variable GYRE_TEST_UNSET_SECRET, which is not set/],
  ])('a bad %s is refused with the file, field and what is allowed', (_field, patch, message) => {
    expect(parse(patch)).toThrow(message);
  });

  test('sign-in settings are checked at synth, and a secret can come from the environment instead of the file', () => {
    process.env.GYRE_TEST_OKTA_SECRET = 'from-the-environment';
    try {
      const env = parseEnvironment({ ...valid(), signIn: { GYRE_OIDC_ISSUER: 'https://example.okta.com', GYRE_OIDC_CLIENT_ID: 'gyre', GYRE_OIDC_CLIENT_SECRET: { fromEnv: 'GYRE_TEST_OKTA_SECRET' }, GYRE_OIDC_ROLES: 'ci-admins=instance:admin' } }, 'environments/prod.yaml', 'prod');
      expect(env.signIn).toEqual({ GYRE_OIDC_ISSUER: 'https://example.okta.com', GYRE_OIDC_CLIENT_ID: 'gyre', GYRE_OIDC_CLIENT_SECRET: 'from-the-environment', GYRE_OIDC_ROLES: 'ci-admins=instance:admin' });
      expect(parseEnvironment(valid(), 'environments/prod.yaml', 'prod').signIn).toEqual({});
    } finally {
      delete process.env.GYRE_TEST_OKTA_SECRET;
    }
  });

  test('relative paths are resolved from the environment file\'s directory, whatever the working directory', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-env-'));
    fs.mkdirSync(path.join(dir, 'certs'));
    fs.writeFileSync(path.join(dir, 'certs', 'gyre.pem'), 'CERT');
    fs.writeFileSync(path.join(dir, 'certs', 'gyre-key.pem'), 'KEY');
    fs.writeFileSync(path.join(dir, 'registry.json'), '{}');
    const d: any = { ...valid(), tls: { mode: 'provided', certificateFile: 'certs/gyre.pem', keyFile: './certs/gyre-key.pem' } };
    d.registry = 'registry.example.com/gyre';
    d.nomad = { ...d.nomad, registryCredentials: { source: 'file', file: 'registry.json' } };
    const file = path.join(dir, 'prod.yaml');
    fs.writeFileSync(file, JSON.stringify(d));
    const cwd = process.cwd();
    try {
      process.chdir(os.tmpdir());
      const env = loadEnvironment(file);
      expect(env.tls.certificateFile).toBe(path.join(dir, 'certs', 'gyre.pem'));
      expect(env.tls.keyFile).toBe(path.join(dir, 'certs', 'gyre-key.pem'));
      expect(env.nomad.registryCredentials).toEqual({ source: 'file', file: path.join(dir, 'registry.json') });
    } finally {
      process.chdir(cwd);
    }
    fs.writeFileSync(file, JSON.stringify({ ...d, tls: { mode: 'provided', certificateFile: 'certs/missing.pem', keyFile: 'certs/gyre-key.pem' } }));
    expect(() => loadEnvironment(file)).toThrow(`${file}: tls.certificateFile ("certs/missing.pem") is not a file (looked for ${path.join(dir, 'certs', 'missing.pem')}`);
  });

  test('a registry in ECR defaults to pulling with the machines\' identity; no registry means anonymous pulls', () => {
    const ecr = parseEnvironment({ ...valid(), registry: '123456789012.dkr.ecr.us-east-1.amazonaws.com/gyre' }, 'e.yaml');
    expect(ecr.nomad.registryCredentials).toEqual({ source: 'cloud' });
    expect(parseEnvironment(valid(), 'e.yaml').nomad.registryCredentials).toEqual({ source: 'none' });
  });

  test('a file that is not YAML names the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-env-'));
    const file = path.join(dir, 'broken.yaml');
    fs.writeFileSync(file, 'cloud: [aws\n');
    expect(() => loadEnvironment(file)).toThrow(`${file}: (file) is not valid YAML`);
  });
});
