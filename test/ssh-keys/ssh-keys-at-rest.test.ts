import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalKeyWrapper, rotateLocalKey } from '../../runtime/secrets/local-key-wrapper';
import { rewrapAll } from '../../runtime/secrets/rewrap';
import { SEALED_TABLES } from '../../runtime/secrets/sealed-tables';
import { createSecretBox } from '../../runtime/secrets/secret-box';
import { createSshKeys } from '../../runtime/secrets/ssh-keys';
import type { Store } from '../../runtime/store/store';
import { openTestStore, testStores } from '../support/database';

/**
 * Projects' SSH keys at rest: sealed under the key wrapper, moved to a new wrapping key by the
 * same re-wrap as every other secret (`gyre secrets rewrap`, the contexts role after a rotation),
 * and bound to their row, so a sealed private key copied into another project's row does not open.
 */
describe.each(testStores())('SSH keys at rest (%s)', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let dir: string;
  const project = { id: randomUUID(), slug: 'gh/acme/app', org: 'acme' };
  const other = { id: randomUUID(), slug: 'gh/acme/other', org: 'acme' };

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
    dir = mkdtempSync(join(tmpdir(), 'gyre-sshkeys-rest-'));
    for (const p of [project, other]) {
      await store.query("INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, $2, 'acme', $3, 'git@github.com:acme/app.git')", [p.id, p.slug, p.slug.split('/')[2]]);
    }
  }, 60_000);
  afterAll(async () => {
    await store?.close();
    await drop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('re-wraps checkout and additional keys after a key rotation, and they still open', async () => {
    const file = join(dir, 'keys');
    const first = createSshKeys({ store, box: createSecretBox(createLocalKeyWrapper({ file })) });
    const checkout = await first.createCheckoutKey(project, 'deploy-key');
    const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    await first.addSshKey(project, { hostname: 'a.example.com', privateKey: pem });
    await first.addSshKey(project, { hostname: 'b.example.com', privateKey: pem });
    const before = await first.forTask({ projectId: project.id, fork: false, checkout: true, additional: 'all' });

    expect(SEALED_TABLES.map((t) => t.table)).toEqual(expect.arrayContaining(['project_checkout_keys', 'project_ssh_keys']));
    const newKey = await rotateLocalKey(file);
    const box = createSecretBox(createLocalKeyWrapper({ file }));
    const result = await rewrapAll(store, box, SEALED_TABLES);
    expect(result.keyId).toBe(newKey);
    expect(result.tables.filter((t) => t.table.startsWith('project_') && t.table.endsWith('_keys'))).toEqual([
      { table: 'project_checkout_keys', rewrapped: 1, failed: 0, remaining: 0 },
      { table: 'project_ssh_keys', rewrapped: 2, failed: 0, remaining: 0 },
    ]);
    for (const table of ['project_checkout_keys', 'project_ssh_keys']) {
      expect((await store.query<{ key_id: string }>(`SELECT DISTINCT key_id FROM ${table}`)).map((r) => r.key_id)).toEqual([newKey]);
    }

    const after = await createSshKeys({ store, box }).forTask({ projectId: project.id, fork: false, checkout: true, additional: 'all' });
    expect(after).toEqual(before);
    expect(after?.checkout?.fingerprint).toBe(checkout.fingerprint);
    expect(after?.additional.map((k) => [k.hostname, k.privateKey])).toEqual([
      ['a.example.com', pem],
      ['b.example.com', pem],
    ]);
  });

  it('a sealed private key copied into another project’s row does not open', async () => {
    const sshKeys = createSshKeys({ store, box: createSecretBox(createLocalKeyWrapper({ file: join(dir, 'keys') })) });
    await sshKeys.createCheckoutKey(other, 'deploy-key');
    await store.query(
      `UPDATE project_checkout_keys o SET ciphertext = p.ciphertext, iv = p.iv, tag = p.tag, wrapped_key = p.wrapped_key, key_id = p.key_id
         FROM project_checkout_keys p WHERE o.project_id = $1 AND p.project_id = $2`,
      [other.id, project.id],
    );
    await expect(sshKeys.forTask({ projectId: other.id, fork: false, checkout: true, additional: [] })).rejects.toThrow(/cannot be opened: its ciphertext, tag or context do not match/);
  });
});
