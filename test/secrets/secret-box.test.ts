import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalKeyWrapper, defaultKeyFile, rotateLocalKey } from '../../runtime/secrets/local-key-wrapper';
import { rewrapAll, type SealedTable } from '../../runtime/secrets/rewrap';
import { createSecretBox, type KeyWrapper, type Sealed, type SecretBox } from '../../runtime/secrets/secret-box';
import { createPgliteStore } from '../../runtime/store/pglite-store';
import { createPostgresStore } from '../../runtime/store/postgres-store';
import type { Store } from '../../runtime/store/store';
import { createTestDatabase, testStores } from '../support/database';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'gyre-secrets-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A wrapper over a local key file that counts unwraps and remembers every data key it saw. */
function counting(inner: KeyWrapper) {
  const dataKeys: Buffer[] = [];
  let unwraps = 0;
  const wrapper: KeyWrapper = {
    kind: inner.kind,
    wrap: async (key) => {
      dataKeys.push(Buffer.from(key));
      return inner.wrap(key);
    },
    unwrap: async (wrapped, keyId) => {
      unwraps += 1;
      return inner.unwrap(wrapped, keyId);
    },
    currentKeyId: () => inner.currentKeyId(),
  };
  return { wrapper, dataKeys, unwraps: () => unwraps };
}

/** The key with `id` in a key file. */
function keyOfFile(file: string, id: string): Buffer {
  const line = readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith(`${id} `));
  return Buffer.from(line!.split(' ')[1], 'base64');
}

/** Fails when `message` holds `bytes` in any of the usual spellings. */
function expectNoBytes(message: string, bytes: Buffer): void {
  for (const spelling of [bytes.toString('hex'), bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('latin1')]) {
    expect(message).not.toContain(spelling);
  }
}

describe('the secret box', () => {
  let box: SecretBox;
  let keyFile: string;
  beforeEach(() => {
    keyFile = join(dir, 'keys');
    box = createSecretBox(createLocalKeyWrapper({ file: keyFile }));
  });

  it('opens what it sealed, in the same context: text, an empty value, a large one', async () => {
    for (const value of ['hunter2', '', 'ünïcødé ✓ \n multi-line\tvalue', 'x'.repeat(100_000)]) {
      const sealed = await box.seal(value, 'project-variable:p1:TOKEN');
      expect(await box.open(sealed, 'project-variable:p1:TOKEN')).toBe(value);
      expect(sealed.iv).toHaveLength(12);
      expect(sealed.tag).toHaveLength(16);
      expect(sealed.keyId).toBe('local:1');
      expect(sealed.ciphertext.toString('utf8')).not.toContain(value || 'never');
    }
  });

  it('seals one value twice into different bytes (fresh data key and IV each time)', async () => {
    const a = await box.seal('same value', 'ctx');
    const b = await box.seal('same value', 'ctx');
    expect(a.iv.equals(b.iv)).toBe(false);
    expect(a.ciphertext.equals(b.ciphertext)).toBe(false);
    expect(a.wrappedKey.equals(b.wrappedKey)).toBe(false);
  });

  it('refuses a value copied to another context (another row), naming the context and nothing of the value', async () => {
    const sealed = await box.seal('s3cr3t-value', 'project-variable:p1:TOKEN');
    const error = await box.open(sealed, 'project-variable:p2:TOKEN').catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/the sealed value for project-variable:p2:TOKEN cannot be opened/);
    expect((error as Error).message).not.toContain('s3cr3t');
  });

  it('refuses a changed ciphertext, tag, IV or wrapped key, and a shortened tag (an attack on GCM)', async () => {
    const { wrapper, dataKeys } = counting(createLocalKeyWrapper({ file: keyFile }));
    const counted = createSecretBox(wrapper);
    const value = 'the value nobody may change';
    const sealed = await counted.seal(value, 'ctx');
    const flip = (b: Buffer, i = 0) => {
      const copy = Buffer.from(b);
      copy[i] ^= 0x01;
      return copy;
    };
    const attacks: Sealed[] = [
      { ...sealed, ciphertext: flip(sealed.ciphertext, 3) },
      { ...sealed, ciphertext: Buffer.concat([sealed.ciphertext, Buffer.from('x')]) },
      { ...sealed, tag: flip(sealed.tag, 15) },
      { ...sealed, tag: sealed.tag.subarray(0, 4) },
      { ...sealed, tag: Buffer.alloc(0) },
      { ...sealed, iv: flip(sealed.iv) },
      { ...sealed, wrappedKey: flip(sealed.wrappedKey, 20) },
      { ...sealed, keyId: 'local:9' },
      { ...sealed, keyId: 'aws-kms:arn:aws:kms:us-east-1:111122223333:key/x' },
    ];
    for (const attack of attacks) {
      const error = await createSecretBox(wrapper).open(attack, 'ctx').catch((e: Error) => e);
      expect(error).toBeInstanceOf(Error);
      const message = (error as Error).message;
      expect(message).toMatch(/the sealed value for ctx cannot be opened/);
      expect(message).not.toContain(value);
      expectNoBytes(message, dataKeys[0]);
      expectNoBytes(message, keyOfFile(keyFile, '1'));
    }
    // A value sealed under another row's data key does not open with this one's tag either.
    const other = await counted.seal('other value', 'ctx');
    await expect(counted.open({ ...sealed, wrappedKey: other.wrappedKey }, 'ctx')).rejects.toThrow(/cannot be opened: its ciphertext, tag or context do not match/);
  });

  it('unwraps a data key once for many opens, keeps a bounded number, and forgets them after cacheMs', async () => {
    const sealer = createSecretBox(createLocalKeyWrapper({ file: keyFile }));
    const values = await Promise.all(['a', 'b', 'c'].map((v) => sealer.seal(v, `ctx:${v}`)));
    const { wrapper, unwraps } = counting(createLocalKeyWrapper({ file: keyFile }));

    const bounded = createSecretBox(wrapper, { cacheEntries: 2 });
    await Promise.all(Array.from({ length: 20 }, () => bounded.open(values[0], 'ctx:a')));
    expect(unwraps()).toBe(1); // twenty opens at once, one unwrap
    await bounded.open(values[1], 'ctx:b');
    await bounded.open(values[2], 'ctx:c'); // the cache holds two: a goes
    expect(unwraps()).toBe(3);
    await bounded.open(values[2], 'ctx:c');
    await bounded.open(values[1], 'ctx:b');
    expect(unwraps()).toBe(3);
    expect(await bounded.open(values[0], 'ctx:a')).toBe('a');
    expect(unwraps()).toBe(4);

    const none = createSecretBox(wrapper, { cacheMs: 0 });
    await none.open(values[0], 'ctx:a');
    await none.open(values[0], 'ctx:a');
    expect(unwraps()).toBe(6);

    // Three seconds: two opens in a row fall inside it even on a loaded machine (40 ms did not in
    // CI).
    const brief = createSecretBox(wrapper, { cacheMs: 3000 });
    await brief.open(values[0], 'ctx:a');
    await brief.open(values[0], 'ctx:a');
    expect(unwraps()).toBe(7);
    await new Promise((resolve) => setTimeout(resolve, 3100));
    await brief.open(values[0], 'ctx:a');
    expect(unwraps()).toBe(8);

    // A failed unwrap is not kept: the next open tries again.
    const failing = createSecretBox(wrapper);
    await expect(failing.open({ ...values[0], keyId: 'local:7' }, 'ctx:a')).rejects.toThrow(/does not unwrap with local:7/);
    await expect(failing.open({ ...values[0], keyId: 'local:7' }, 'ctx:a')).rejects.toThrow(/does not unwrap with local:7/);
    expect(unwraps()).toBe(10);
  });
});

describe('the local key file', () => {
  it('is created at first use, 0600 in a 0700 directory, with one key', async () => {
    const file = defaultKeyFile(join(dir, 'data'));
    expect(file).toBe(join(dir, 'data', 'secrets', 'keys'));
    const wrapper = createLocalKeyWrapper({ file });
    expect(await wrapper.currentKeyId()).toBe('local:1');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'data', 'secrets')).mode & 0o777).toBe(0o700);
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^1 [A-Za-z0-9+/]{43}=$/);
    // Two processes starting at once end with one keyring both use.
    const other = join(dir, 'race', 'keys');
    const ids = await Promise.all([createLocalKeyWrapper({ file: other }).wrap(randomBytes(32)), createLocalKeyWrapper({ file: other }).wrap(randomBytes(32))]);
    const both = ids.map((w) => w.keyId);
    expect(both).toEqual(['local:1', 'local:1']);
    const reader = createLocalKeyWrapper({ file: other });
    for (const w of ids) expect(await reader.unwrap(w.wrappedKey, w.keyId)).toHaveLength(32);
  });

  it('refuses a key file group or others can read, naming the file and chmod 600', async () => {
    const file = join(dir, 'keys');
    const box = createSecretBox(createLocalKeyWrapper({ file }), { cacheMs: 0 });
    const sealed = await box.seal('value', 'ctx');
    chmodSync(file, 0o640);
    const error = await box.open(sealed, 'ctx').catch((e: Error) => e);
    expect((error as Error).message).toContain(`the key file ${file} is open to group or others (mode 0640)`);
    expect((error as Error).message).toContain(`chmod 600 ${file}`);
    await expect(box.seal('value', 'ctx')).rejects.toThrow(/chmod 600/);
    await expect(rotateLocalKey(file)).rejects.toThrow(/chmod 600/);
    chmodSync(file, 0o600);
    expect(await box.open(sealed, 'ctx')).toBe('value');
  });

  it('refuses a malformed key file without repeating what is in it', async () => {
    const file = join(dir, 'keys');
    const secretish = randomBytes(31).toString('base64');
    writeFileSync(file, `# comment\n1 ${secretish}\n`, { mode: 0o600 });
    const error = await createLocalKeyWrapper({ file }).currentKeyId().catch((e: Error) => e);
    expect((error as Error).message).toMatch(/line 2: not '<id> <base64 of 32 bytes>'/);
    expect((error as Error).message).not.toContain(secretish);
    writeFileSync(file, `1 ${randomBytes(32).toString('base64')}\n1 ${randomBytes(32).toString('base64')}\n`);
    await expect(createLocalKeyWrapper({ file }).currentKeyId()).rejects.toThrow(/key id '1' is there twice/);
  });

  it('rotates: new seals use the new key, old ones still open, here and in another process', async () => {
    const file = join(dir, 'keys');
    const box = createSecretBox(createLocalKeyWrapper({ file }), { cacheMs: 0 });
    const old = await box.seal('before', 'ctx');
    expect(await rotateLocalKey(file)).toBe('local:2');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const fresh = await box.seal('after', 'ctx');
    expect(old.keyId).toBe('local:1');
    expect(fresh.keyId).toBe('local:2');
    expect(await box.wrapper.currentKeyId()).toBe('local:2');
    const elsewhere = createSecretBox(createLocalKeyWrapper({ file }));
    expect(await elsewhere.open(old, 'ctx')).toBe('before');
    expect(await elsewhere.open(fresh, 'ctx')).toBe('after');
    // A rewrap keeps the ciphertext and moves the data key to the current key.
    const moved = await box.rewrap(old);
    expect(moved.keyId).toBe('local:2');
    expect(moved.ciphertext.equals(old.ciphertext)).toBe(true);
    expect(await box.open(moved, 'ctx')).toBe('before');
    // With key 1 gone, what it wrapped does not open; the error says which key and where.
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.split('\n').filter((l) => !l.startsWith('1 ')).join('\n'));
    await expect(box.open(old, 'ctx')).rejects.toThrow(`key local:1 is not in the key file ${file} (it holds local:2)`);
    expect(await box.open(moved, 'ctx')).toBe('before');
    await expect(rotateLocalKey(join(dir, 'missing'))).rejects.toThrow(/there is no key file at .*missing to rotate/);
  });
});

describe.each(testStores())('rewrapAll (%s)', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    if (kind === 'postgres') {
      const db = await createTestDatabase();
      drop = db.drop;
      store = await createPostgresStore({ connectionString: db.url });
    } else {
      store = await createPgliteStore();
    }
  }, 30_000);
  beforeEach(async () => {
    await store.query('DROP TABLE IF EXISTS throwaway_values');
    await store.query(`CREATE TABLE throwaway_values (
      owner_id text NOT NULL, name text NOT NULL,
      ciphertext bytea NOT NULL, iv bytea NOT NULL, tag bytea NOT NULL, wrapped_key bytea NOT NULL, key_id text NOT NULL,
      PRIMARY KEY (owner_id, name))`);
  });
  afterAll(async () => {
    await store?.close();
    await drop?.();
  });

  const table: SealedTable = { table: 'throwaway_values', keyColumns: ['owner_id', 'name'] };
  const insert = (s: Store, owner: string, name: string, sealed: Sealed) =>
    s.query('INSERT INTO throwaway_values VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (owner_id, name) DO UPDATE SET ciphertext = $3, iv = $4, tag = $5, wrapped_key = $6, key_id = $7', [
      owner,
      name,
      sealed.ciphertext,
      sealed.iv,
      sealed.tag,
      sealed.wrappedKey,
      sealed.keyId,
    ]);
  const read = async (owner: string, name: string): Promise<Sealed> => {
    const [row] = await store.query<{ ciphertext: Buffer; iv: Buffer; tag: Buffer; wrapped_key: Buffer; key_id: string }>(
      'SELECT ciphertext, iv, tag, wrapped_key, key_id FROM throwaway_values WHERE owner_id = $1 AND name = $2',
      [owner, name],
    );
    return { ciphertext: row.ciphertext, iv: row.iv, tag: row.tag, wrappedKey: row.wrapped_key, keyId: row.key_id };
  };

  it('moves every row to the current key, in batches, and every value still opens', async () => {
    const file = join(dir, 'keys');
    const box = createSecretBox(createLocalKeyWrapper({ file }));
    const rows: Array<[string, string, string]> = [];
    for (let i = 0; i < 230; i++) rows.push([`owner-${i % 7}`, `VAR_${i}`, `value ${i} ${randomBytes(4).toString('hex')}`]);
    for (const [owner, name, value] of rows) await insert(store, owner, name, await box.seal(value, `${owner}:${name}`));
    const before = await read('owner-0', 'VAR_0');
    await rotateLocalKey(file);
    await insert(store, 'owner-new', 'ALREADY_CURRENT', await box.seal('new', 'owner-new:ALREADY_CURRENT'));

    const result = await rewrapAll(store, box, [table], { batchSize: 50 });
    expect(result).toMatchObject({ keyId: 'local:2', rewrapped: 230, failed: 0, remaining: 0 });
    expect(result.tables).toEqual([{ table: 'throwaway_values', rewrapped: 230, failed: 0, remaining: 0 }]);
    const [{ n }] = await store.query<{ n: number }>("SELECT count(*)::int AS n FROM throwaway_values WHERE key_id = 'local:2'");
    expect(n).toBe(231);
    const after = await read('owner-0', 'VAR_0');
    expect(after.ciphertext.equals(before.ciphertext)).toBe(true);
    expect(after.wrappedKey.equals(before.wrappedKey)).toBe(false);

    // Key 1 can go now: every value opens with key 2 alone, in a fresh process.
    writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => !l.startsWith('1 ')).join('\n'));
    const fresh = createSecretBox(createLocalKeyWrapper({ file }));
    for (const [owner, name, value] of rows) expect(await fresh.open(await read(owner, name), `${owner}:${name}`)).toBe(value);
    // Nothing is left to do.
    expect(await rewrapAll(store, fresh, [table])).toMatchObject({ rewrapped: 0, remaining: 0 });
  });

  it('copes with rows written while it runs, and counts rows whose key is gone without stopping', async () => {
    const file = join(dir, 'keys');
    const box = createSecretBox(createLocalKeyWrapper({ file }));
    for (let i = 0; i < 120; i++) await insert(store, 'o', `V${String(i).padStart(3, '0')}`, await box.seal(`old ${i}`, `o:V${i}`));
    const lateUnderOldKey = await box.seal('late', 'o:LATE');
    await rotateLocalKey(file);

    // The writer changes a row still due (the last one) and adds one under the old key, while the
    // first batch is being re-wrapped. Its writes have landed by the time the first pass asks for
    // the current key again, so the count at the end sees them however slow the machine is.
    const inner = createLocalKeyWrapper({ file });
    let unwraps = 0;
    const writes: Promise<unknown>[] = [];
    const racing: KeyWrapper = {
      ...inner,
      currentKeyId: async () => {
        await Promise.all(writes);
        return inner.currentKeyId();
      },
      unwrap: async (wrapped, keyId) => {
        if (++unwraps === 5) {
          writes.push(
            (async () => {
              await insert(store, 'o', 'V119', await box.seal('rewritten', 'o:V119'));
              await insert(store, 'o', 'V999_LATE', lateUnderOldKey);
            })(),
          );
        }
        return inner.unwrap(wrapped, keyId);
      },
    };
    // A row whose key is gone (a wrapped key from a keyring nobody has) is counted and left.
    await insert(store, 'o', 'V050', { ...(await read('o', 'V050')), keyId: 'local:lost' });

    const result = await rewrapAll(store, createSecretBox(racing), [table], { batchSize: 40 });
    await Promise.all(writes);
    expect(result.failed).toBe(1);
    expect(result.tables[0].firstError).toMatch(/local:lost is not in the key file/);
    const [{ n }] = await store.query<{ n: number }>("SELECT count(*)::int AS n FROM throwaway_values WHERE key_id <> 'local:2'");
    expect(result.remaining).toBe(n);
    expect(n).toBe(1); // the lost one: the late one, written during the first pass, moved in the second
    expect(await box.open(await read('o', 'V119'), 'o:V119')).toBe('rewritten');
    expect(await box.open(await read('o', 'V999_LATE'), 'o:LATE')).toBe('late');
    for (let i = 0; i < 119; i++) if (i !== 50) expect(await box.open(await read('o', `V${String(i).padStart(3, '0')}`), `o:V${i}`)).toBe(`old ${i}`);
    // Another run moves whatever came late.
    const again = await rewrapAll(store, box, [table]);
    expect(again).toMatchObject({ failed: 1, remaining: 1 });
  });

  it('refuses table and column names that are not plain SQL names (no injection through a spec)', async () => {
    const box = createSecretBox(createLocalKeyWrapper({ file: join(dir, 'keys') }));
    await expect(rewrapAll(store, box, [{ table: 'throwaway_values; DROP TABLE throwaway_values', keyColumns: ['owner_id'] }])).rejects.toThrow(/is not a plain SQL name/);
    await expect(rewrapAll(store, box, [{ table: 'throwaway_values', keyColumns: ['owner_id" OR 1=1 --'] }])).rejects.toThrow(/is not a plain SQL name/);
    await expect(rewrapAll(store, box, [{ ...table, columns: { keyId: 'key_id = key_id; --' } }])).rejects.toThrow(/is not a plain SQL name/);
    const [{ n }] = await store.query<{ n: number }>('SELECT count(*)::int AS n FROM throwaway_values');
    expect(n).toBe(0);
  });
});
