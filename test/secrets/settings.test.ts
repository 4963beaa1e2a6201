import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigurationError } from '../../runtime/domain/errors';
import { createKeyWrapper, readSecretsSettings } from '../../runtime/secrets/settings';
import { createSecretBox } from '../../runtime/secrets/secret-box';
import { startVaultStandIn } from '../support/vault-stand-in';

const dataDir = '/var/lib/gyre-data';

function refusal(env: Record<string, string>): ConfigurationError {
  try {
    readSecretsSettings(env, dataDir);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    return error as ConfigurationError;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('secrets settings', () => {
  it('defaults to the local key file in the data directory, or GYRE_SECRETS_KEY_FILE', () => {
    expect(readSecretsSettings({}, dataDir)).toEqual({ wrapper: 'local', keyFile: '/var/lib/gyre-data/secrets/keys', vaultTransitMount: 'transit' });
    expect(readSecretsSettings({ GYRE_SECRETS_KEY_FILE: '/etc/gyre/keys' }, dataDir).keyFile).toBe('/etc/gyre/keys');
    expect(createKeyWrapper(readSecretsSettings({}, dataDir)).kind).toBe('local');
  });

  it('reads each service\'s settings', () => {
    expect(readSecretsSettings({ GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: 'alias/gyre', GYRE_SECRETS_AWS_KMS_ENDPOINT: 'https://kms.vpce.example' }, dataDir)).toMatchObject({
      wrapper: 'aws-kms',
      awsKmsKeyId: 'alias/gyre',
      awsKmsEndpoint: 'https://kms.vpce.example',
    });
    const gcp = { GYRE_SECRETS_KEY_WRAPPER: 'gcp-kms', GYRE_SECRETS_GCP_KMS_KEY: 'projects/p/locations/global/keyRings/r/cryptoKeys/k' };
    expect(readSecretsSettings(gcp, dataDir)).toMatchObject({ wrapper: 'gcp-kms', gcpKmsKeyName: gcp.GYRE_SECRETS_GCP_KMS_KEY });
    expect(createKeyWrapper(readSecretsSettings(gcp, dataDir)).kind).toBe('gcp-kms');
    const aws = createKeyWrapper(readSecretsSettings({ GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab' }, dataDir));
    expect(aws.kind).toBe('aws-kms');
  });

  it('names the missing or malformed setting and what is allowed', () => {
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'rot13' }).message).toBe("GYRE_SECRETS_KEY_WRAPPER: 'rot13' is not a key wrapper (allowed: local, aws-kms, gcp-kms, vault-transit)");
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'aws-kms' }).setting).toBe('GYRE_SECRETS_AWS_KMS_KEY_ID');
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: 'gyre key; rm -rf /' }).setting).toBe('GYRE_SECRETS_AWS_KMS_KEY_ID');
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: 'alias/gyre', GYRE_SECRETS_AWS_KMS_ENDPOINT: 'file:///etc/passwd' }).setting).toBe('GYRE_SECRETS_AWS_KMS_ENDPOINT');
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'gcp-kms' }).setting).toBe('GYRE_SECRETS_GCP_KMS_KEY');
    for (const name of ['projects/p/../../keys', 'projects/../locations/l/keyRings/r/cryptoKeys/k', 'projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1']) {
      expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'gcp-kms', GYRE_SECRETS_GCP_KMS_KEY: name }).setting).toBe('GYRE_SECRETS_GCP_KMS_KEY');
    }
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit' }).setting).toBe('VAULT_ADDR');
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'http://vault:8200' }).message).toMatch(/^VAULT_TOKEN: \(or GYRE_SECRETS_VAULT_TOKEN_FILE\) is required/);
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'http://vault:8200', GYRE_SECRETS_VAULT_TOKEN_FILE: '/nonexistent/token' }).setting).toBe('GYRE_SECRETS_VAULT_TOKEN_FILE');
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'http://vault:8200', VAULT_TOKEN: 't' }).setting).toBe('GYRE_SECRETS_VAULT_TRANSIT_KEY');
    for (const key of ['../sys/seal', '..', 'a b']) {
      expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'http://vault:8200', VAULT_TOKEN: 't', GYRE_SECRETS_VAULT_TRANSIT_KEY: key }).setting).toBe('GYRE_SECRETS_VAULT_TRANSIT_KEY');
    }
    expect(refusal({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: 'http://vault:8200', VAULT_TOKEN: 't', GYRE_SECRETS_VAULT_TRANSIT_KEY: 'k', GYRE_SECRETS_VAULT_TRANSIT_MOUNT: 'transit/../sys' }).setting).toBe('GYRE_SECRETS_VAULT_TRANSIT_MOUNT');
  });

  it('builds a Vault transit wrapper that reads its token from a file at each request', async () => {
    const vault = await startVaultStandIn();
    const dir = mkdtempSync(join(tmpdir(), 'gyre-vault-'));
    try {
      const tokenFile = join(dir, 'token');
      writeFileSync(tokenFile, 'hvs.stale\n', { mode: 0o600 });
      const settings = readSecretsSettings({ GYRE_SECRETS_KEY_WRAPPER: 'vault-transit', VAULT_ADDR: vault.address, GYRE_SECRETS_VAULT_TOKEN_FILE: tokenFile, GYRE_SECRETS_VAULT_TRANSIT_KEY: 'gyre' }, dataDir);
      const box = createSecretBox(createKeyWrapper(settings));
      await expect(box.seal('v', 'ctx')).rejects.toThrow(/refused encrypt with transit key transit\/gyre: 403 permission denied/);
      writeFileSync(tokenFile, `${vault.token}\n`); // Vault Agent renewed it
      const sealed = await box.seal('v', 'ctx');
      expect(sealed.keyId).toBe('vault-transit:gyre:1');
      expect(await createSecretBox(createKeyWrapper(settings)).open(sealed, 'ctx')).toBe('v');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await vault.close();
    }
  });
});
