import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createAwsKmsKeyWrapper } from '../../runtime/secrets/aws-kms-key-wrapper';
import { createGcpKmsKeyWrapper } from '../../runtime/secrets/gcp-kms-key-wrapper';
import { createSecretBox, type KeyWrapper } from '../../runtime/secrets/secret-box';
import { createVaultTransitKeyWrapper } from '../../runtime/secrets/vault-transit-key-wrapper';
import { AWS_KMS_STAND_IN_CREDENTIALS, startAwsKmsStandIn } from '../support/aws-kms-stand-in';
import { startGcpKmsStandIn } from '../support/gcp-kms-stand-in';
import { startVaultStandIn } from '../support/vault-stand-in';

/**
 * Each key service's official client (or, for Vault, which has none for Node.js, fetch) talks to a
 * stand-in of that service's API on loopback, with only the endpoint pointed at it.
 */
interface Setup {
  /** The wrapper Gyre would use. */
  readonly wrapper: KeyWrapper;
  /** A wrapper over another key of the same service. */
  readonly other: KeyWrapper;
  /** What the service saw: every plaintext, every request body. */
  readonly plaintexts: Buffer[];
  bodies(): string[];
  readonly problems: string[];
  /** Makes a new current key (the service's rotation); answers the key id wraps now carry. */
  rotate(): Promise<string>;
  /** A wrapper like `wrapper` but with credentials the service refuses. */
  readonly badCredentials: KeyWrapper;
  readonly keyIdPattern: RegExp;
  close(): Promise<void>;
}

async function awsSetup(): Promise<Setup> {
  const kms = await startAwsKmsStandIn();
  const first = kms.createKey();
  const second = kms.createKey();
  kms.setAlias('alias/gyre', first);
  const make = (keyId: string, creds: { accessKeyId: string; secretAccessKey: string } = AWS_KMS_STAND_IN_CREDENTIALS) => createAwsKmsKeyWrapper({ keyId, endpoint: kms.url, region: kms.region, credentials: creds });
  return {
    wrapper: make('alias/gyre'),
    other: make(second),
    plaintexts: kms.plaintexts,
    bodies: () => kms.requests.map((r) => r.body),
    problems: kms.problems,
    async rotate() {
      const next = kms.createKey();
      kms.setAlias('alias/gyre', next);
      return `aws-kms:${next}`;
    },
    badCredentials: make('alias/gyre', { ...AWS_KMS_STAND_IN_CREDENTIALS, secretAccessKey: 'not-the-secret-access-key' }),
    keyIdPattern: /^aws-kms:arn:aws:kms:us-east-1:111122223333:key\/[0-9a-f-]{36}$/,
    close: kms.close,
  };
}

async function gcpSetup(): Promise<Setup> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kms = await startGcpKmsStandIn({ publicKey });
  const keyName = 'projects/gyre-test/locations/europe-west1/keyRings/gyre/cryptoKeys/secrets';
  const otherName = 'projects/gyre-test/locations/europe-west1/keyRings/gyre/cryptoKeys/other';
  kms.createKey(keyName);
  kms.createKey(otherName);
  const account = (key = privateKey) => ({ client_email: 'gyre@gyre-test.iam.gserviceaccount.com', private_key: key.export({ type: 'pkcs8', format: 'pem' }).toString() });
  const make = (name: string, creds = account()) => createGcpKmsKeyWrapper({ keyName: name, apiEndpoint: kms.endpoint, credentials: creds, projectId: 'gyre-test' });
  return {
    wrapper: make(keyName),
    other: make(otherName),
    plaintexts: kms.plaintexts,
    bodies: () => kms.requests.map((r) => r.body),
    problems: kms.problems,
    rotate: async () => `gcp-kms:${kms.rotate(keyName)}`,
    badCredentials: make(keyName, account(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey)),
    keyIdPattern: /^gcp-kms:projects\/gyre-test\/locations\/europe-west1\/keyRings\/gyre\/cryptoKeys\/secrets\/cryptoKeyVersions\/\d+$/,
    close: kms.close,
  };
}

async function vaultSetup(): Promise<Setup> {
  const vault = await startVaultStandIn({ mount: 'gyre/transit', namespace: 'ci' });
  const make = (key: string, token = vault.token) => createVaultTransitKeyWrapper({ address: vault.address, token, mount: 'gyre/transit', key, namespace: 'ci' });
  return {
    wrapper: make('secrets'),
    other: make('other'),
    plaintexts: vault.plaintexts,
    bodies: () => vault.requests.map((r) => r.body),
    problems: vault.requests.filter((r) => r.headers['x-vault-request'] !== 'true').map((r) => `${r.path} lacks X-Vault-Request`),
    rotate: async () => `vault-transit:secrets:${vault.rotate('secrets')}`,
    badCredentials: make('secrets', 'hvs.not-the-token'),
    keyIdPattern: /^vault-transit:secrets:\d+$/,
    close: vault.close,
  };
}

describe.each([
  ['AWS KMS', awsSetup],
  ['Google Cloud KMS', gcpSetup],
  ['Vault transit', vaultSetup],
] as const)('%s (official client against a stand-in)', (_name, setup) => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup();
  });
  afterAll(() => s?.close());
  afterEach(() => expect(s.problems).toEqual([]));

  it('wraps and unwraps a data key, and seals and opens values through it', async () => {
    const dataKey = randomBytes(32);
    const { wrappedKey, keyId } = await s.wrapper.wrap(dataKey);
    expect(keyId).toMatch(s.keyIdPattern);
    expect(await s.wrapper.currentKeyId()).toBe(keyId);
    expect((await s.wrapper.unwrap(wrappedKey, keyId)).equals(dataKey)).toBe(true);
    const box = createSecretBox(s.wrapper);
    const sealed = await box.seal('deploy-token-value', 'project-variable:p1:DEPLOY');
    // Another process (no cached data key) opens it through the service.
    expect(await createSecretBox(s.wrapper).open(sealed, 'project-variable:p1:DEPLOY')).toBe('deploy-token-value');
  });

  it('refuses to unwrap with the wrong key, a changed wrapped key, or another wrapper kind', async () => {
    const dataKey = randomBytes(32);
    const mine = await s.wrapper.wrap(dataKey);
    const theirs = await s.other.wrap(randomBytes(32));
    await expect(s.wrapper.unwrap(mine.wrappedKey, theirs.keyId)).rejects.toThrow();
    await expect(s.other.unwrap(mine.wrappedKey, theirs.keyId)).rejects.toThrow();
    const changed = Buffer.from(mine.wrappedKey);
    changed[changed.length - 3] ^= 0x04;
    const error = await s.wrapper.unwrap(changed, mine.keyId).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).not.toContain(dataKey.toString('base64'));
    await expect(s.wrapper.unwrap(mine.wrappedKey, 'local:1')).rejects.toThrow(/is not an? .*was GYRE_SECRETS_KEY_WRAPPER changed/);
  });

  it('refuses credentials the service does not accept, without repeating them', async () => {
    const error = await s.badCredentials.wrap(randomBytes(32)).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/permission denied|authentication|signature/i);
    for (const secret of ['hvs.not-the-token', 'not-the-secret-access-key', 'PRIVATE KEY']) expect((error as Error).message).not.toContain(secret);
  });

  it('sees data keys only, never a secret value', async () => {
    const value = `the-secret-value-${randomBytes(8).toString('hex')}`;
    const box = createSecretBox(s.wrapper, { cacheMs: 0 });
    const sealed = await box.seal(value, 'context:of:value');
    expect(await box.open(sealed, 'context:of:value')).toBe(value);
    expect(s.plaintexts.length).toBeGreaterThan(0);
    for (const plaintext of s.plaintexts) expect(plaintext).toHaveLength(32);
    const spellings = [value, Buffer.from(value).toString('base64'), Buffer.from(value).toString('hex')];
    for (const body of s.bodies()) for (const spelling of spellings) expect(body).not.toContain(spelling);
  });

  it('rotates: new wraps use the new key, old ones still unwrap, a rewrap moves them', async () => {
    const box = createSecretBox(s.wrapper);
    const before = await box.seal('kept across rotation', 'ctx');
    const next = await s.rotate();
    expect(await s.wrapper.currentKeyId()).toBe(next);
    expect(before.keyId).not.toBe(next);
    expect((await box.seal('new', 'ctx')).keyId).toBe(next);
    const fresh = createSecretBox(s.wrapper);
    expect(await fresh.open(before, 'ctx')).toBe('kept across rotation');
    const moved = await fresh.rewrap(before);
    expect(moved.keyId).toBe(next);
    expect(moved.ciphertext.equals(before.ciphertext)).toBe(true);
    expect(await createSecretBox(s.wrapper).open(moved, 'ctx')).toBe('kept across rotation');
  });
});

describe('hostile key ids', () => {
  it('are refused before any request: path traversal in a Vault key name, a version that is not the ciphertext\'s, a GCP name with ..', async () => {
    const vault = await startVaultStandIn();
    try {
      const wrapper = createVaultTransitKeyWrapper({ address: vault.address, token: vault.token, key: 'secrets' });
      const { wrappedKey } = await wrapper.wrap(randomBytes(32));
      const before = vault.requests.length;
      await expect(wrapper.unwrap(wrappedKey, 'vault-transit:..:1')).rejects.toThrow(/is not a Vault transit key/);
      await expect(wrapper.unwrap(wrappedKey, 'vault-transit:secrets:2')).rejects.toThrow(/is not a Vault ciphertext of version 2/);
      await expect(wrapper.unwrap(Buffer.from('vault:v1:AAAA/../../sys'), 'vault-transit:secrets:1')).rejects.toThrow(/is not a Vault ciphertext/);
      expect(vault.requests.length).toBe(before);
      expect(() => createVaultTransitKeyWrapper({ address: vault.address, token: 't', key: 'secrets', mount: 'transit/../sys' })).toThrow(/is not a mount path/);
    } finally {
      await vault.close();
    }
    const gcp = createGcpKmsKeyWrapper({ keyName: 'projects/p/locations/l/keyRings/r/cryptoKeys/k', apiEndpoint: 'http://127.0.0.1:9' });
    await expect(gcp.unwrap(Buffer.alloc(40), 'gcp-kms:projects/../locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1')).rejects.toThrow(/is not a Cloud KMS key version/);
    expect(() => createGcpKmsKeyWrapper({ keyName: 'projects/p/locations/l/keyRings/r/cryptoKeys/../../x' })).toThrow(/is not a Cloud KMS CryptoKey name/);
  });
});
