import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type CliIo } from '../../runtime/cli/main';
import { createLocalKeyWrapper, defaultKeyFile } from '../../runtime/secrets/local-key-wrapper';
import { createSecretBox } from '../../runtime/secrets/secret-box';
import { createSshKeys } from '../../runtime/secrets/ssh-keys';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * A project's SSH keys over the API (runtime/secrets/ssh-key-routes.ts): checkout keys in API v2's
 * shapes (validated against the schemas of CircleCI's OpenAPI document, copied below), additional
 * keys over v1.1's paths, fingerprints as `ssh-keygen -l` prints them (checked against an
 * independent computation from the key's SSH wire form), and the rules: project admins only make
 * and delete keys, hostile input is refused naming the field, and no private key is ever in an
 * answer, an error, the audit log or any row of the database. On PGlite and, with DATABASE_URL,
 * PostgreSQL.
 */

/** CircleCI's `CheckoutKey` (circleci-api-v2.openapi.json, `/project/{project-slug}/checkout-key`). */
const CHECKOUT_KEY = {
  type: 'object',
  properties: {
    'public-key': { type: 'string' },
    type: { enum: ['deploy-key', 'github-user-key'], type: 'string' },
    fingerprint: { type: 'string' },
    preferred: { type: 'boolean' },
    'created-at': { type: 'string', format: 'date-time' },
  },
  required: ['public-key', 'type', 'fingerprint', 'preferred', 'created-at'],
};
/** CircleCI's `CheckoutKeyListResponse`. */
const CHECKOUT_KEY_LIST = {
  type: 'object',
  properties: { items: { type: 'array', items: CHECKOUT_KEY }, next_page_token: { type: ['string', 'null'] } },
  required: ['items', 'next_page_token'],
};
/** CircleCI's `MessageResponse`. */
const MESSAGE = { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] };

const ajv = addFormats(new Ajv({ strict: false, allErrors: true }));
const validators = { key: ajv.compile(CHECKOUT_KEY), list: ajv.compile(CHECKOUT_KEY_LIST), message: ajv.compile(MESSAGE) };
function expectShape(which: keyof typeof validators, value: unknown): void {
  const validate = validators[which];
  if (!validate(value)) throw new Error(`not a ${which} of the spec: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value)}`);
}

const HAS_SSH_KEYGEN = spawnSync('ssh-keygen', ['-?']).error === undefined;

// --- An independent oracle: a public key's SSH wire form and its fingerprints -------------------------

function sshString(b: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(b.length);
  return Buffer.concat([length, b]);
}
const mpint = (b: Buffer) => sshString(b[0] & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
/** The wire blob of an RSA or Ed25519 public key (RFC 4253 §6.6, RFC 8709). */
function wireOf(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty === 'OKP') return Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(Buffer.from(jwk.x!, 'base64url'))]);
  return Buffer.concat([sshString(Buffer.from('ssh-rsa')), mpint(Buffer.from(jwk.e!, 'base64url')), mpint(Buffer.from(jwk.n!, 'base64url'))]);
}
const md5Of = (wire: Buffer) => createHash('md5').update(wire).digest('hex').match(/../g)!.join(':');
const sha256Of = (wire: Buffer) => `SHA256:${createHash('sha256').update(wire).digest('base64').replace(/=+$/, '')}`;
/** The wire blob of an OpenSSH public key line. */
const wireOfLine = (line: string) => Buffer.from(line.split(' ')[1], 'base64');

/** A private key's PEM body lines (what must never be stored or answered in clear). */
const bodyLines = (pem: string) => pem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'));

describe.each(flowStore())('project SSH keys over the API (%s)', (store) => {
  let g: TestGyre;
  const tokens: Record<string, string> = {};
  const CK = '/api/v2/project/gh/acme/app/checkout-key';
  const SK = '/api/v1.1/project/gh/acme/app/ssh-key';
  /** Every private key given to or made by Gyre in this test, to look for afterwards. */
  const privateKeys: string[] = [];
  const answers: string[] = [];

  const as = async (who: string, method: string, path: string, body?: unknown) => {
    const res = await g.raw(method, path, { body: body === undefined ? undefined : JSON.stringify(body), headers: { 'Circle-Token': tokens[who] ?? g.token } });
    answers.push(res.text);
    return res;
  };

  beforeAll(async () => {
    g = await startTestGyre({ store });
    await g.addProject('gh/acme/app', { '.circleci/config.yml': 'version: 2.1\n' });
    await g.addProject('gh/rival/thing', { '.circleci/config.yml': 'version: 2.1\n' });
    for (const [login, role] of [['app-admin', 'admin'], ['app-writer', 'write'], ['app-reader', 'read']] as const) {
      tokens[login] = (await g.api('POST', '/api/v2/users', { login })).token;
      await g.api('PUT', `/api/v2/project/gh/acme/app/members/${login}`, { role });
    }
    tokens.outsider = (await g.api('POST', '/api/v2/users', { login: 'outsider' })).token;
    await g.api('PUT', '/api/v2/project/gh/rival/thing/members/outsider', { role: 'admin' });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
  });

  it('makes deploy and user checkout keys in CircleCI’s shapes, with ssh-keygen’s fingerprints, the user key preferred', async () => {
    const deploy = await as('app-admin', 'POST', CK, { type: 'deploy-key' });
    expect(deploy.status).toBe(201);
    expectShape('key', deploy.body);
    expect(deploy.body).toMatchObject({ type: 'deploy-key', preferred: true, 'public-key': expect.stringMatching(/^ssh-ed25519 AAAA\S+ gyre-deploy-key gh\/acme\/app$/) });
    // The fingerprint is the MD5 of the key's wire form, as `ssh-keygen -l -E md5` prints it without `MD5:`.
    expect(deploy.body.fingerprint).toBe(md5Of(wireOfLine(deploy.body['public-key'])));
    if (HAS_SSH_KEYGEN) {
      const dir = mkdtempSync(join(tmpdir(), 'gyre-ck-'));
      writeFileSync(join(dir, 'k.pub'), `${deploy.body['public-key']}\n`);
      expect(spawnSync('ssh-keygen', ['-l', '-E', 'md5', '-f', join(dir, 'k.pub')]).stdout.toString()).toContain(`MD5:${deploy.body.fingerprint}`);
      rmSync(dir, { recursive: true });
    }

    const user = await as('app-admin', 'POST', CK, { type: 'user-key' });
    expect(user.status).toBe(201);
    expect(user.body).toMatchObject({ type: 'github-user-key', preferred: true });

    const list = await as('app-reader', 'GET', CK);
    expect(list.status).toBe(200);
    expectShape('list', list.body);
    expect(list.body.next_page_token).toBeNull();
    expect(list.body.items.map((k: any) => [k.type, k.fingerprint, k.preferred])).toEqual([
      ['github-user-key', user.body.fingerprint, true],
      ['deploy-key', deploy.body.fingerprint, false],
    ]);
    // ?digest=sha256: the same keys with SHA256 fingerprints, as `ssh-keygen -l` prints them.
    const sha = await as('app-reader', 'GET', `${CK}?digest=sha256`);
    expectShape('list', sha.body);
    expect(sha.body.items.map((k: any) => k.fingerprint)).toEqual([sha256Of(wireOfLine(user.body['public-key'])), sha256Of(wireOfLine(deploy.body['public-key']))]);
    expect((await as('app-reader', 'GET', `${CK}?digest=sha1`)).status).toBe(400);

    // One key by either fingerprint (the SHA256 one URL-encoded: it may hold '/' and '+').
    const byMd5 = await as('app-reader', 'GET', `${CK}/${deploy.body.fingerprint}`);
    expectShape('key', byMd5.body);
    expect(byMd5.body).toEqual({ ...deploy.body, preferred: false });
    const shaPrint = sha.body.items[1].fingerprint;
    const bySha = await as('app-reader', 'GET', `${CK}/${encodeURIComponent(shaPrint)}`);
    expect(bySha.body).toEqual({ ...deploy.body, preferred: false, fingerprint: shaPrint });

    // Deleting the user key leaves the deploy key preferred; a deleted key is a 404.
    const gone = await as('app-admin', 'DELETE', `${CK}/${encodeURIComponent(sha.body.items[0].fingerprint)}`);
    expect(gone.status).toBe(200);
    expectShape('message', gone.body);
    expect((await as('app-reader', 'GET', `${CK}/${user.body.fingerprint}`)).body).toEqual({ message: `checkout key not found: ${user.body.fingerprint}` });
    expect((await as('app-reader', 'GET', CK)).body.items).toEqual([{ ...deploy.body, preferred: true }]);

    const audit = (await g.api('GET', '/api/v2/audit?limit=100')).items;
    expect(audit).toEqual(expect.arrayContaining([
      expect.objectContaining({ action: 'project.checkout-key.create', result: 'success', detail: expect.objectContaining({ checkout_key: deploy.body.fingerprint, type: 'deploy-key' }) }),
      expect.objectContaining({ action: 'project.checkout-key.delete', result: 'success', detail: expect.objectContaining({ checkout_key: user.body.fingerprint }) }),
    ]));
  });

  it('refuses a checkout key type CircleCI does not have, naming it', async () => {
    const bad = await as('app-admin', 'POST', CK, { type: 'root-key' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/type "root-key" is not a checkout key type: give deploy-key or user-key/);
    expect((await as('app-admin', 'POST', CK, {})).status).toBe(400);
  });

  it('adds additional keys (RSA PKCS#1, Ed25519 PKCS#8, EC SEC1, and OpenSSH’s own format) for a host or every host, lists and removes them', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rsaPem = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    const ed = generateKeyPairSync('ed25519');
    const edPem = ed.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const ecPem = ec.privateKey.export({ type: 'sec1', format: 'pem' }) as string;
    privateKeys.push(rsaPem, edPem, ecPem);

    const added = await as('app-admin', 'POST', SK, { hostname: 'deploy.example.com', private_key: rsaPem });
    expect(added.status).toBe(201);
    expect(added.body).toEqual({
      hostname: 'deploy.example.com',
      fingerprint: md5Of(wireOf(rsa.publicKey)),
      fingerprint_sha256: sha256Of(wireOf(rsa.publicKey)),
      public_key: expect.stringMatching(/^ssh-rsa AAAA/),
      created_at: expect.stringMatching(/^\d{4}-/),
    });
    expect(wireOfLine(added.body.public_key)).toEqual(wireOf(rsa.publicKey));
    // CRLF line ends (a key pasted on Windows) are the same key.
    const edAdded = await as('app-admin', 'POST', SK, { private_key: edPem.replace(/\n/g, '\r\n') });
    expect(edAdded.body).toMatchObject({ hostname: '', fingerprint: md5Of(wireOf(ed.publicKey)), fingerprint_sha256: sha256Of(wireOf(ed.publicKey)) });
    const ecAdded = await as('app-admin', 'POST', SK, { hostname: 'EC.Example.com', private_key: ecPem });
    expect(ecAdded.body).toMatchObject({ hostname: 'ec.example.com', public_key: expect.stringMatching(/^ecdsa-sha2-nistp256 /) });
    // The same key for another host is another entry; for the same host again, the same one.
    expect((await as('app-admin', 'POST', SK, { hostname: 'other.example.com', private_key: rsaPem })).status).toBe(201);
    expect((await as('app-admin', 'POST', SK, { hostname: 'deploy.example.com', private_key: rsaPem })).status).toBe(201);

    if (HAS_SSH_KEYGEN) {
      const dir = mkdtempSync(join(tmpdir(), 'gyre-sk-'));
      spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'from ssh-keygen', '-f', join(dir, 'id')]);
      const openssh = readFileSync(join(dir, 'id'), 'utf8');
      privateKeys.push(openssh);
      const fromKeygen = await as('app-admin', 'POST', SK, { hostname: 'keygen.example.com', private_key: openssh });
      expect(fromKeygen.status).toBe(201);
      expect(spawnSync('ssh-keygen', ['-l', '-E', 'md5', '-f', join(dir, 'id')]).stdout.toString()).toContain(`MD5:${fromKeygen.body.fingerprint}`);
      expect(spawnSync('ssh-keygen', ['-l', '-f', join(dir, 'id')]).stdout.toString()).toContain(fromKeygen.body.fingerprint_sha256);
      await as('app-admin', 'DELETE', SK, { fingerprint: fromKeygen.body.fingerprint });
      rmSync(dir, { recursive: true });
    }

    const list = await as('app-reader', 'GET', SK);
    expect(list.body.map((k: any) => [k.hostname, k.fingerprint])).toEqual([
      ['deploy.example.com', added.body.fingerprint],
      ['', edAdded.body.fingerprint],
      ['ec.example.com', ecAdded.body.fingerprint],
      ['other.example.com', added.body.fingerprint],
    ]);

    // Removing by fingerprint and host name leaves the key for its other host; by SHA256 too.
    expect((await as('app-admin', 'DELETE', SK, { fingerprint: added.body.fingerprint, hostname: 'deploy.example.com' })).status).toBe(200);
    expect((await as('app-reader', 'GET', SK)).body.map((k: any) => k.hostname)).toEqual(['', 'ec.example.com', 'other.example.com']);
    expect((await as('app-admin', 'DELETE', SK, { fingerprint: ecAdded.body.fingerprint_sha256 })).status).toBe(200);
    const missing = await as('app-admin', 'DELETE', SK, { fingerprint: ecAdded.body.fingerprint });
    expect(missing.status).toBe(404);
    expect(missing.body.message).toContain(ecAdded.body.fingerprint);

    const audit = (await g.api('GET', '/api/v2/audit?limit=200')).items;
    expect(audit).toEqual(expect.arrayContaining([expect.objectContaining({ action: 'project.ssh-key.add', result: 'success', detail: expect.objectContaining({ ssh_key: added.body.fingerprint, hostname: 'deploy.example.com' }) })]));
  });

  it('refuses what is not a usable private key, naming the field and quoting none of it', async () => {
    const ed = generateKeyPairSync('ed25519');
    const encrypted = ed.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pass phrase' }) as string;
    const rsaSmall = generateKeyPairSync('rsa', { modulusLength: 768 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    const rsaLegacyEncrypted = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem', cipher: 'aes-128-cbc', passphrase: 'pw' }) as string;
    const damaged = (ed.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string).replace(/\n([A-Za-z0-9+/]{10})/, '\nZZZZZZZZZZ');
    const marker = 'SECRET-MARKER-4d1f2b';
    const cases: [unknown, RegExp][] = [
      [undefined, /private_key is required/],
      ['', /private_key is required/],
      [`-----BEGIN PRIVATE KEY-----\n${marker}\n-----END PRIVATE KEY-----\n`, /could not be read as an RSA, ECDSA or Ed25519 private key/],
      [`just text ${marker}`, /not a private key in PEM form/],
      [encrypted, /encrypted with a passphrase/],
      [rsaLegacyEncrypted, /encrypted with a passphrase/],
      [rsaSmall, /RSA key of 768 bits; OpenSSH needs 1024 or more/],
      ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl you@host', /is a public key; give the private half/],
      [damaged, /could not be read|not a private key/],
      [`-----BEGIN PRIVATE KEY-----\n${'A'.repeat(20_000)}\n-----END PRIVATE KEY-----\n`, /at most 16384 bytes/],
      [12, /private_key|body/],
    ];
    for (const [privateKey, message] of cases) {
      const res = await as('app-admin', 'POST', SK, { hostname: 'h.example.com', private_key: privateKey });
      expect([res.status, res.body.message]).toEqual([400, expect.stringMatching(message)]);
      expect(res.text).not.toContain(marker);
      expect(res.text).not.toContain('AAAAAAAAAAAAAAAA');
      for (const line of typeof privateKey === 'string' ? bodyLines(privateKey) : []) expect(res.text).not.toContain(line);
    }
    // Host names that would write more than a Host line into ~/.ssh/config.
    const good = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    for (const hostname of ['evil\n  ProxyCommand touch /tmp/pwned', 'a b', '-oProxyCommand=x', 'h"ost', 'x'.repeat(300), 'host,other']) {
      const res = await as('app-admin', 'POST', SK, { hostname, private_key: good });
      expect([res.status, res.body.message]).toEqual([400, expect.stringMatching(/hostname .* is not a host name|hostname/)]);
    }
    for (const fingerprint of ['', 'zz:zz', 'SHA256:short', '../../etc']) {
      const res = await as('app-admin', 'DELETE', SK, { fingerprint });
      expect([res.status, res.body.message]).toEqual([400, expect.stringMatching(/is not an SSH key fingerprint/)]);
    }
    // The audit records of the refusals hold no key either.
    const audit = JSON.stringify((await g.api('GET', '/api/v2/audit?limit=500')).items);
    expect(audit).not.toContain(marker);
    for (const line of bodyLines(encrypted)) expect(audit).not.toContain(line);
  });

  it('lets only project admins make and delete keys; readers see public halves; other organisations see nothing', async () => {
    const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    privateKeys.push(pem);
    for (const who of ['app-writer', 'app-reader']) {
      expect((await as(who, 'POST', CK, { type: 'deploy-key' })).status).toBe(403);
      expect((await as(who, 'POST', SK, { private_key: pem })).status).toBe(403);
    }
    const made = await as('app-admin', 'POST', SK, { private_key: pem });
    expect((await as('app-writer', 'DELETE', SK, { fingerprint: made.body.fingerprint })).status).toBe(403);
    expect((await as('app-reader', 'GET', SK)).status).toBe(200);
    for (const [method, path, body] of [['GET', SK], ['GET', CK], ['POST', SK, { private_key: pem }], ['DELETE', SK, { fingerprint: made.body.fingerprint }]] as const) {
      const res = await as('outsider', method, path, body);
      expect([res.status, res.body.message]).toEqual([404, 'project not found: gh/acme/app']);
    }
    expect((await as('app-admin', 'DELETE', SK, { fingerprint: made.body.fingerprint })).status).toBe(200);
  });

  it('keeps no private key in clear: not in any answer, nor in any row of any table', async () => {
    // Checkout keys' private halves Gyre made: opened through the service, as a task would get them.
    const project = await g.api('GET', '/api/v2/project/gh/acme/app');
    // The server's own key file (GYRE_DATA_DIR/secrets/keys) opens them; nothing else does.
    const sshKeys = createSshKeys({ store: g.gyre.store, box: createSecretBox(createLocalKeyWrapper({ file: defaultKeyFile(g.dataDir) })) });
    const opened = await sshKeys.forTask({ projectId: project.id, fork: false, checkout: true, additional: 'all' });
    expect(opened?.checkout?.privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    expect(opened!.additional.length).toBeGreaterThan(0);
    const secrets = [...privateKeys, opened!.checkout!.privateKey, ...opened!.additional.map((k) => k.privateKey)];
    const lines = secrets.flatMap(bodyLines);
    expect(lines.length).toBeGreaterThan(10);

    const answered = answers.join('\n');
    for (const line of lines) expect(answered).not.toContain(line);

    // Every row of every table, as text (bytea as hex and as its bytes): a dump of the database.
    const tables = await g.gyre.store.query<{ name: string }>(`SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`);
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['public.project_checkout_keys', 'public.project_ssh_keys']));
    let dump = '';
    for (const { name } of tables) {
      for (const row of await g.gyre.store.query<Record<string, unknown>>(`SELECT * FROM ${name}`)) {
        for (const value of Object.values(row)) dump += Buffer.isBuffer(value) || value instanceof Uint8Array ? `${Buffer.from(value).toString('latin1')}\n` : `${typeof value === 'string' ? value : JSON.stringify(value)}\n`;
      }
    }
    expect(dump).toContain(opened!.checkout!.publicKey.split(' ')[1]);
    for (const line of lines) expect(dump).not.toContain(line);
    for (const line of lines) expect(dump).not.toContain(Buffer.from(line, 'base64').toString('latin1').slice(0, 24));
  });

  it('gyre ssh-key adds from a file, lists, removes, and makes and lists checkout keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-sk-cli-'));
    const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeFileSync(join(dir, 'key'), pem, { mode: 0o600 });
    const cli = async (...args: string[]) => {
      let stdout = '';
      let stderr = '';
      const io: CliIo = { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), env: { GYRE_URL: g.url, GYRE_TOKEN: tokens['app-admin'] } };
      const code = await run(args, io);
      return { code, stdout, stderr };
    };
    try {
      const added = await cli('ssh-key', 'add', 'gh/acme/app', '--hostname', 'cli.example.com', '--file', join(dir, 'key'));
      expect(added.code).toBe(0);
      const fingerprint = /added SSH key ([0-9a-f:]{47})/.exec(added.stdout)![1];
      expect(added.stdout).toContain('for host cli.example.com');
      const listed = await cli('ssh-key', 'list', 'gh/acme/app');
      expect(listed.stdout).toMatch(new RegExp(`cli\\.example\\.com\\s+${fingerprint}\\s+SHA256:`));
      // A key on the command line is refused, without echoing it.
      const inline = await cli('ssh-key', 'add', 'gh/acme/app', 'extra-argument');
      expect(inline.code).toBe(2);
      expect(inline.stderr).toMatch(/never on the command line/);
      expect((await cli('ssh-key', 'remove', 'gh/acme/app', fingerprint, '--hostname', 'cli.example.com')).code).toBe(0);
      expect((await cli('ssh-key', 'list', 'gh/acme/app')).stdout).not.toContain(fingerprint);

      const made = await cli('ssh-key', 'checkout', 'create', 'gh/acme/app');
      expect(made.code).toBe(0);
      expect(made.stdout).toMatch(/^ssh-ed25519 AAAA\S+ gyre-deploy-key gh\/acme\/app\n$/);
      expect(made.stderr).toMatch(/add this public key to the repository as a deploy key/);
      const ck = await cli('ssh-key', 'checkout', 'list', 'gh/acme/app', '--digest', 'sha256');
      expect(ck.stdout).toContain(sha256Of(wireOfLine(made.stdout.trim())));
      expect((await cli('ssh-key', 'frobnicate')).stderr).toMatch(/unknown ssh-key command 'frobnicate' \(allowed: add, list, remove, checkout\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
