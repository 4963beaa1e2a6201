import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadEnvironment, loadEnvironments, parseEnvironment } from '../../stacks/environment';
import { ROLE_NAMES } from '../../runtime/roles/names';
import { testTempDir } from '../support/temp-dir';

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
    ['nomad.registryMirrors', (d: any) => { d.nomad.registryMirrors = ['https://hub-cache.example.com/v2']; }, /nomad.registryMirrors\[0\] \("https:\/\/hub-cache.example.com\/v2"\) must be an https:\/\/ URL of a host with no path/],
    ['access.uiCidrs', (d: any) => { d.access.uiCidrs = ['10.0.0.0/33']; }, /access.uiCidrs\[0\] \("10.0.0.0\/33"\) must be an IPv4 CIDR/],
    ['database.mode', (d: any) => { d.database = { mode: 'sqlite' }; }, /database.mode \("sqlite"\) must be one of: managed, external/],
    ['registry', (d: any) => { d.registry = 'https://registry.example.com'; }, /registry \("https:\/\/registry.example.com"\) must be a registry host/],
    ['replicas', (d: any) => { d.replicas = { web: 2 }; }, `replicas.web is not a runtime role; allowed: ${ROLE_NAMES.join(', ')}`],
    ['replicas (a role with no code behind it)', (d: any) => { d.replicas = { runners: 1 }; }, `replicas.runners is not a runtime role; allowed: ${ROLE_NAMES.join(', ')}`],
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
    ['secrets.keyWrapper (local)', (d: any) => { d.secrets = { keyWrapper: 'local' }; }, /secrets.keyWrapper \(local\) is not for a cluster install: each pod's key file is its own.*use aws-kms or vault-transit/],
    ['secrets.keyWrapper (another cloud\'s)', (d: any) => { d.secrets = { keyWrapper: 'gcp-kms' }; }, /secrets.keyWrapper \("gcp-kms"\) must be one of: aws-kms, vault-transit/],
    ['secrets.existingKey (an alias)', (d: any) => { d.secrets = { existingKey: 'alias/gyre' }; }, /secrets.existingKey \("alias\/gyre"\) must be a KMS key ARN, arn:aws:kms:<region>:<account>:key\/<key id> \(not an alias/],
    ['secrets.existingKey (GCP)', (d: any) => { d.cloud = 'gcp'; d.project = 'p'; d.region = 'us-east1'; d.zones = ['us-east1-b', 'us-east1-c']; d.state = { backend: 'local' }; d.secrets = { existingKey: 'projects/p/keyRings/r/cryptoKeys/k' }; }, /secrets.existingKey \("projects\/p\/keyRings\/r\/cryptoKeys\/k"\) must be a CryptoKey name, projects\/<project>\/locations/],
    ['secrets.rotationDays', (d: any) => { d.secrets = { rotationDays: 30 }; }, /secrets.rotationDays \(30\) must be a whole number from 90 to 2560/],
    ['secrets.deletionWindowDays', (d: any) => { d.secrets = { deletionWindowDays: 60 }; }, /secrets.deletionWindowDays \(60\) must be a whole number from 7 to 30/],
    ['secrets.rotationDays with an existing key', (d: any) => { d.secrets = { existingKey: 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab', rotationDays: 90 }; }, /secrets.rotationDays applies only to the key the infra stack makes/],
    ['secrets field', (d: any) => { d.secrets = { keyWrapper: 'vault-transit', existingKey: 'x', vault: {} }; }, /secrets.existingKey is not a setting of keyWrapper vault-transit; allowed: keyWrapper, vault/],
    ['secrets.vault', (d: any) => { d.secrets = { keyWrapper: 'vault-transit' }; }, /secrets.vault is required when secrets.keyWrapper is vault-transit/],
    ['secrets.vault.token in the file', (d: any) => { d.secrets = { keyWrapper: 'vault-transit', vault: { address: 'https://vault.example.com', key: 'gyre', token: 'hvs.in-the-file' } }; }, /secrets.vault.token must be \{ fromEnv: NAME \}: the token is read from the environment cdktf runs in, never written in the file/],
    ['secrets.vault.token unset', (d: any) => { d.secrets = { keyWrapper: 'vault-transit', vault: { address: 'https://vault.example.com', key: 'gyre', token: { fromEnv: 'GYRE_TEST_UNSET_VAULT_TOKEN' } } }; }, /secrets.vault.token reads the environment variable GYRE_TEST_UNSET_VAULT_TOKEN, which is not set where cdktf runs/],
    ['secrets.vault.address', (d: any) => { process.env.GYRE_TEST_SET_VAULT_TOKEN = 't'; d.secrets = { keyWrapper: 'vault-transit', vault: { address: 'http://vault.example.com:8200', key: 'gyre', token: { fromEnv: 'GYRE_TEST_SET_VAULT_TOKEN' } } }; }, /secrets.vault.address \("http:\/\/vault.example.com:8200"\) must be an https:\/\/ address of Vault/],
    ['secrets.vault.key', (d: any) => { process.env.GYRE_TEST_SET_VAULT_TOKEN = 't'; d.secrets = { keyWrapper: 'vault-transit', vault: { address: 'https://vault.example.com', key: '..', token: { fromEnv: 'GYRE_TEST_SET_VAULT_TOKEN' } } }; }, /secrets.vault.key \(".."\) must be a transit key name/],
    ['secrets.vault field', (d: any) => { d.secrets = { keyWrapper: 'vault-transit', vault: { address: 'https://vault.example.com', key: 'gyre', roleId: 'x' } }; }, /secrets.vault.roleId is not a Vault setting; allowed: address, key, mount, namespace, token/],
  ])('a bad %s is refused with the file, field and what is allowed', (_field, patch, message) => {
    try {
      expect(parse(patch)).toThrow(message);
    } finally {
      delete process.env.GYRE_TEST_SET_VAULT_TOKEN;
    }
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

  test('secrets default to a KMS key the infra stack makes, rotated yearly, with a 30-day deletion window', () => {
    expect(parseEnvironment(valid(), 'e.yaml').secrets).toEqual({ keyWrapper: 'aws-kms', existingKey: undefined, rotationDays: 365, deletionWindowDays: 30 });
    const gcp = parseEnvironment({ ...valid(), cloud: 'gcp', project: 'p', region: 'us-east1', zones: ['us-east1-b', 'us-east1-c'], state: { backend: 'local' } }, 'e.yaml');
    expect(gcp.secrets).toMatchObject({ keyWrapper: 'gcp-kms', rotationDays: 365 });
    const own = 'arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab';
    expect(parseEnvironment({ ...valid(), secrets: { existingKey: own } }, 'e.yaml').secrets).toMatchObject({ keyWrapper: 'aws-kms', existingKey: own });
  });

  test('Vault transit takes its token from the environment cdktf runs in, not from the file', () => {
    process.env.GYRE_TEST_VAULT_TOKEN = 'hvs.from-the-environment';
    try {
      const env = parseEnvironment({ ...valid(), secrets: { keyWrapper: 'vault-transit', vault: { address: 'https://vault.example.com:8200', key: 'gyre', namespace: 'ci/prod', token: { fromEnv: 'GYRE_TEST_VAULT_TOKEN' } } } }, 'e.yaml');
      expect(env.secrets).toEqual({
        keyWrapper: 'vault-transit',
        vault: { address: 'https://vault.example.com:8200', key: 'gyre', mount: 'transit', namespace: 'ci/prod', token: 'hvs.from-the-environment' },
      });
    } finally {
      delete process.env.GYRE_TEST_VAULT_TOKEN;
    }
  });

  test('relative paths are resolved from the environment file\'s directory, whatever the working directory', () => {
    const dir = testTempDir('gyre-env-');
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
    const dir = testTempDir('gyre-env-');
    const file = path.join(dir, 'broken.yaml');
    fs.writeFileSync(file, 'cloud: [aws\n');
    expect(() => loadEnvironment(file)).toThrow(`${file}: (file) is not valid YAML`);
  });
});
