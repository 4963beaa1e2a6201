import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { createHttpApp, listen, type RunningHttpServer } from '../../runtime/api/http-app';
import { appendAudit } from '../../runtime/audit/audit-log';
import { AuthenticationError } from '../../runtime/domain/errors';
import { createIdentity, type Identity } from '../../runtime/identity/identity';
import { createLogger } from '../../runtime/logger';
import { registerOidcRoutes } from '../../runtime/secrets/oidc-routes';
import { createOidcIssuer, publishOidcDocuments, vcsOriginOf, type MintInput, type OidcIssuer, type PutObject } from '../../runtime/secrets/oidc-tokens';
import { createSecretBox, type KeyWrapper, type SecretBox } from '../../runtime/secrets/secret-box';
import { migrate } from '../../runtime/store/migrate';
import { createPgliteStore } from '../../runtime/store/pglite-store';
import type { Store } from '../../runtime/store/store';
import { readGate } from '../support/read-gate';
import { startS3rver } from '../support/s3rver';

/**
 * Job tokens (CIRCLE_OIDC_TOKEN, CIRCLE_OIDC_TOKEN_V2) checked the way a cloud checks them: the
 * issuer's discovery document and JWKS fetched from a running app over HTTP, the token verified
 * with jose against them, CircleCI's claim names. Key rotation, organisations kept apart, private
 * keys never in clear in the database, and CircleCI's custom-claims API with its permissions.
 */

const DAY = 24 * 3600_000;

/** A stand-in KMS: AES-256-GCM with a fixed key held by the test. */
function testWrapper(): KeyWrapper {
  const kek = randomBytes(32);
  return {
    kind: 'test',
    async wrap(dataKey) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', kek, iv);
      const body = Buffer.concat([cipher.update(dataKey), cipher.final()]);
      return { wrappedKey: Buffer.concat([iv, cipher.getAuthTag(), body]), keyId: 'test:1' };
    },
    async unwrap(wrapped) {
      const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(0, 12));
      decipher.setAuthTag(wrapped.subarray(12, 28));
      return Buffer.concat([decipher.update(wrapped.subarray(28)), decipher.final()]);
    },
    currentKeyId: async () => 'test:1',
  };
}

/** CircleCI's `ClaimResponse` (circleci-api-v2.openapi.json, components.schemas), as the custom-claims routes must answer it. */
const CLAIM_RESPONSE = {
  type: 'object',
  required: ['org_id'],
  properties: {
    audience: { type: 'array', items: { type: 'string' } },
    audience_updated_at: { type: 'string', format: 'date-time' },
    org_id: { type: 'string', format: 'uuid' },
    project_id: { type: 'string', format: 'uuid' },
    ttl: { type: 'string', pattern: '^([0-9]+(ms|s|m|h|d|w)){1,7}$' },
    ttl_updated_at: { type: 'string', format: 'date-time' },
  },
  additionalProperties: false,
};
const ajv = new Ajv({ strict: false });
addFormats(ajv);
const isClaimResponse = ajv.compile(CLAIM_RESPONSE);

describe('OIDC tokens for jobs', () => {
  let store: Store;
  let box: SecretBox;
  let identity: Identity;
  let issuer: OidcIssuer;
  let server: RunningHttpServer;
  let clock = Date.now();
  const now = () => new Date(clock);
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  const keysChanged: string[] = [];
  const publishedKids = new Set<string>();

  const call = async (method: string, path: string, who: string, body?: unknown) => {
    const res = await fetch(server.url + path, {
      method,
      headers: { 'Circle-Token': tokens[who], ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  const input = (org: 'acme' | 'rival', extra: Partial<MintInput> = {}): MintInput => ({
    orgId: ids[org],
    projectId: ids[org === 'acme' ? 'app' : 'thing'],
    userId: ids.dev,
    contextIds: [ids.context],
    vcsOrigin: 'github.com/acme/app',
    vcsRef: 'refs/heads/main',
    pipelineId: ids.pipeline,
    ...extra,
  });
  /** Verifies as a cloud would: discovery first, then the JWKS it names, issuer and audience checked. */
  const verifyAsCloud = async (token: string, orgId: string, options: { audience?: string; at?: number } = {}) => {
    const discovery = (await (await fetch(`${server.url}/org/${orgId}/.well-known/openid-configuration`)).json()) as { issuer: string; jwks_uri: string };
    const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
    return jwtVerify(token, jwks, { issuer: discovery.issuer, audience: options.audience ?? orgId, algorithms: ['RS256'], currentDate: new Date(options.at ?? clock) });
  };

  beforeAll(async () => {
    store = await createPgliteStore();
    await migrate(store);
    box = createSecretBox(testWrapper());
    identity = createIdentity({ store });
    tokens.admin = (await identity.ensureAdmin()).token!;
    for (const login of ['owner', 'viewer', 'app-admin', 'app-reader', 'outsider', 'dev']) {
      const made = await identity.users.add({ login });
      tokens[login] = made.token;
      ids[login] = made.user.id;
    }
    ids.acme = (await identity.orgs.create('acme')).id;
    ids.rival = (await identity.orgs.create('rival')).id;
    for (const [key, slug] of [['app', 'gh/acme/app'], ['other', 'gh/acme/other'], ['thing', 'gh/rival/thing']]) {
      ids[key] = randomUUID();
      const [, org, name] = slug.split('/');
      await store.query('INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, $2, $3, $4, $5)', [ids[key], slug, org, name, `https://github.com/${org}/${name}.git`]);
    }
    await identity.orgs.setRole('acme', 'owner', 'admin');
    await identity.orgs.setRole('acme', 'viewer', 'viewer');
    await identity.orgs.setRole('rival', 'outsider', 'admin');
    await identity.orgs.setProjectRole({ id: ids.app, slug: 'gh/acme/app' }, 'app-admin', 'admin');
    await identity.orgs.setProjectRole({ id: ids.app, slug: 'gh/acme/app' }, 'app-reader', 'read');
    ids.context = randomUUID();
    ids.pipeline = randomUUID();
    ids.job = randomUUID();

    issuer = createOidcIssuer({
      store,
      box,
      publicUrl: () => server.url,
      now,
      // Publishing to a bucket that records the organisation of each key it is sent for the first time.
      publish: {
        put: async (key, body) => {
          if (!key.endsWith('/jwks-pub.json')) return;
          for (const { kid } of (JSON.parse(body.toString()) as { keys: JWK[] }).keys) {
            if (!publishedKids.has(kid!)) keysChanged.push(key.split('/')[1]);
            publishedKids.add(kid!);
          }
        },
      },
    });
    const app = await createHttpApp({
      log: createLogger({ level: 'silent' }),
      credentials: {
        user: (token) => identity.authenticate(token),
        task: () => {
          throw new AuthenticationError('no task tokens here');
        },
        runner: async () => undefined,
      },
      access: identity,
      auditLog: { append: (event) => appendAudit(store, event) },
    });
    registerOidcRoutes(app, { issuer });
    server = await listen(app, 0, '127.0.0.1', false);
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await store?.close();
  });

  it('mints both tokens with CircleCI’s claims, verifiable against the served discovery document and JWKS', async () => {
    const minted = await issuer.mint(input('acme', { jobId: ids.job }));
    const issuerUrl = `${server.url}/org/${ids.acme}`;

    const res = await fetch(`${issuerUrl}/.well-known/openid-configuration`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('public, max-age=300');
    const discovery = (await res.json()) as { jwks_uri: string };
    expect(discovery).toEqual({
      issuer: issuerUrl,
      jwks_uri: `${issuerUrl}/.well-known/jwks-pub.json`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      scopes_supported: ['openid'],
      claims_supported: expect.arrayContaining(['sub', 'aud', 'oidc.circleci.com/project-id', 'oidc.circleci.com/context-ids', 'oidc.circleci.com/vcs-origin', 'oidc.circleci.com/vcs-ref']),
    });
    const jwksRes = await fetch(discovery.jwks_uri);
    expect(jwksRes.headers.get('cache-control')).toBe('public, max-age=300');
    const { keys } = (await jwksRes.json()) as { keys: JWK[] };
    expect(keys).toEqual([{ kty: 'RSA', n: expect.any(String), e: 'AQAB', kid: expect.any(String), alg: 'RS256', use: 'sig' }]);

    const v1 = await verifyAsCloud(minted.v1, ids.acme);
    const v2 = await verifyAsCloud(minted.v2, ids.acme);
    expect(v1.protectedHeader).toEqual({ alg: 'RS256', kid: keys[0].kid, typ: 'JWT' });
    const common = {
      iss: issuerUrl,
      aud: ids.acme,
      iat: Math.floor(clock / 1000),
      exp: Math.floor(clock / 1000) + 3600,
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      'oidc.circleci.com/org-id': ids.acme,
      'oidc.circleci.com/project-id': ids.app,
      'oidc.circleci.com/pipeline-id': ids.pipeline,
      'oidc.circleci.com/job-id': ids.job,
      'oidc.circleci.com/context-ids': [ids.context],
      'oidc.circleci.com/vcs-origin': 'github.com/acme/app',
      'oidc.circleci.com/vcs-ref': 'refs/heads/main',
      'oidc.circleci.com/ssh-rerun': false,
    };
    expect(v1.payload).toEqual({ ...common, sub: `org/${ids.acme}/project/${ids.app}/user/${ids.dev}` });
    expect(v2.payload).toEqual({ ...common, sub: `org/${ids.acme}/project/${ids.app}/user/${ids.dev}/vcs-origin/github.com/acme/app/vcs-ref/refs/heads/main` });
    expect(v1.payload.jti).not.toBe(v2.payload.jti);
    expect(keysChanged).toEqual([ids.acme]);

    // A standard OpenID client accepts the document as this issuer's (it checks `issuer` matches).
    const client = await import('openid-client');
    const config = await client.discovery(new URL(issuerUrl), ids.acme, undefined, undefined, { execute: [client.allowInsecureRequests] });
    expect(config.serverMetadata().jwks_uri).toBe(`${issuerUrl}/.well-known/jwks-pub.json`);
  });

  it('leaves the repository out of a pipeline that came from none, and names no user when none started the job', async () => {
    const minted = await issuer.mint(input('acme', { vcsOrigin: undefined, vcsRef: undefined, userId: undefined, contextIds: [] }));
    const v1 = decodeJwt(minted.v1);
    const v2 = decodeJwt(minted.v2);
    expect(v2.sub).toBe(`org/${ids.acme}/project/${ids.app}/user/00000000-0000-0000-0000-000000000000`);
    expect(v1.sub).toBe(v2.sub);
    expect(v2).not.toHaveProperty(['oidc.circleci.com/vcs-origin']);
    expect(v2['oidc.circleci.com/context-ids']).toEqual([]);
  });

  it('answers 404 and nothing else for an organisation that does not exist, whatever the id looks like', async () => {
    for (const id of [randomUUID(), 'not-an-id', encodeURIComponent('../../etc'), `${ids.acme}x`]) {
      for (const doc of ['openid-configuration', 'jwks-pub.json']) {
        const res = await fetch(`${server.url}/org/${id}/.well-known/${doc}`);
        expect(res.status).toBe(404);
        const body = (await res.json()) as { message: string };
        expect(Object.keys(body)).toEqual(['message']);
        expect(body.message).toMatch(/^organization not found: /);
        expect(res.headers.get('cache-control')).toBe('no-store');
      }
    }
    await expect(issuer.mint(input('acme', { orgId: randomUUID() }))).rejects.toThrow(/project not found/);
  });

  it('makes an organisation’s key ahead of its first job, once however often asked, and its first token is signed with it', async () => {
    const orgId = (await identity.orgs.create('early')).id;
    const projectId = randomUUID();
    await store.query('INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, $2, $3, $4, $5)', [projectId, 'gh/early/app', 'early', 'app', 'https://github.com/early/app.git']);
    expect((await issuer.jwks(orgId)).keys).toEqual([]);
    const before = keysChanged.length;
    // Two projects added at once ask together; a later project asks again.
    await Promise.all([issuer.prepare(orgId), issuer.prepare(orgId)]);
    await issuer.prepare(orgId);
    const { keys } = await issuer.jwks(orgId);
    expect(keys).toHaveLength(1);
    expect(keysChanged.slice(before)).toEqual([orgId]);
    const minted = await issuer.mint(input('acme', { orgId, projectId }));
    expect(decodeProtectedHeader(minted.v2).kid).toBe(keys[0].kid);
    expect((await verifyAsCloud(minted.v2, orgId)).payload.sub).toMatch(new RegExp(`^org/${orgId}/project/${projectId}/`));
    expect((await issuer.jwks(orgId)).keys).toEqual(keys);
    await expect(issuer.prepare(randomUUID())).rejects.toThrow(/organization not found/);
  });

  it('publishes a new key before anything signs with it, in this process or another', async () => {
    // The bucket: each organisation's published kids. This process's writes wait at a gate the test holds.
    const published = new Map<string, string[]>();
    const gate = readGate();
    let held = 0;
    const putVia = (gated: boolean) => async (key: string, body: Buffer) => {
      if (gated) {
        held++;
        await gate.passed();
        held--;
      }
      const [, org, , name] = key.split('/');
      if (name === 'jwks-pub.json') published.set(org, (JSON.parse(body.toString()) as { keys: JWK[] }).keys.map((k) => k.kid!));
    };
    const issuerWith = (put: PutObject): OidcIssuer => {
      return createOidcIssuer({ store, box, publicUrl: () => server.url, now, publish: { put } });
    };
    const here = issuerWith(putVia(true));
    const elsewhere = issuerWith(putVia(false));
    const newOrg = async (name: string) => {
      const orgId = (await identity.orgs.create(name)).id;
      const projectId = randomUUID();
      await store.query('INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, $2, $3, $4, $5)', [projectId, `gh/${name}/app`, name, 'app', `https://github.com/${name}/app.git`]);
      return { orgId, projectId };
    };
    const kidOf = (minted: { v2: string }) => decodeProtectedHeader(minted.v2).kid!;
    const publishing = async () => {
      while (held === 0) await new Promise((r) => setTimeout(r, 5));
    };

    // This process: a job's token waits for the key its project's addition is making to be published.
    const first = await newOrg('gated');
    let open = gate.hold();
    const preparing = here.prepare(first.orgId);
    await publishing();
    let signedAt: string[] | undefined;
    const minting = here.mint(input('acme', first)).then((minted) => ((signedAt = published.get(first.orgId)), minted));
    await new Promise((r) => setTimeout(r, 300));
    expect(signedAt).toBeUndefined();
    open();
    const [, minted] = await Promise.all([preparing, minting]);
    expect(signedAt).toContain(kidOf(minted));

    // Another process stores its key first: its token's key is in the bucket when it signs, and again
    // after this process's publication of the key that lost.
    const second = await newOrg('raced');
    open = gate.hold();
    const losing = here.prepare(second.orgId);
    await publishing();
    const won = await elsewhere.mint(input('acme', second));
    expect(published.get(second.orgId)).toEqual([kidOf(won)]);
    open();
    await losing;
    expect(published.get(second.orgId)).toEqual([kidOf(won)]);
    expect(kidOf(await here.mint(input('acme', second)))).toBe(kidOf(won));
  });

  it('goes on making keys when the bucket refuses and a failure is to be logged, and stores no key when it is not', async () => {
    const refused = new Error('AccessDenied: the bucket refuses writes');
    const put = async () => {
      throw refused;
    };
    const failures: [string, Error][] = [];
    const orgId = (await identity.orgs.create('refused')).id;
    const strict = createOidcIssuer({ store, box, publicUrl: () => server.url, now, publish: { put } });
    await expect(strict.prepare(orgId)).rejects.toThrow('AccessDenied');
    expect((await strict.jwks(orgId)).keys).toEqual([]);
    const lenient = createOidcIssuer({ store, box, publicUrl: () => server.url, now, publish: { put, failed: (org, error) => failures.push([org, error]) } });
    await lenient.prepare(orgId);
    expect((await lenient.jwks(orgId)).keys).toHaveLength(1);
    // Both of the change's publications (before the key is stored, and after) were reported.
    expect(failures).toEqual([
      [orgId, refused],
      [orgId, refused],
    ]);
  });

  it('keeps organisations apart: a token of one verifies under no other organisation’s issuer, even with its claims rewritten', async () => {
    const a = await issuer.mint(input('acme'));
    await issuer.mint(input('rival', { vcsOrigin: 'github.com/rival/thing' }));
    await expect(verifyAsCloud(a.v1, ids.rival)).rejects.toThrow();
    // Not only the claims: rival's keys do not verify acme's signature at all.
    const rivalJwks = createRemoteJWKSet(new URL(`${server.url}/org/${ids.rival}/.well-known/jwks-pub.json`));
    await expect(jwtVerify(a.v1, rivalJwks, { currentDate: now() })).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
    // An attacker who rewrites the payload to rival's claims, keeping acme's signature, gets nowhere.
    const [header, , signature] = a.v1.split('.');
    const forged = { ...decodeJwt(a.v1), iss: `${server.url}/org/${ids.rival}`, aud: ids.rival, 'oidc.circleci.com/org-id': ids.rival };
    const forgedToken = `${header}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${signature}`;
    await expect(verifyAsCloud(forgedToken, ids.rival)).rejects.toThrow();
    await expect(verifyAsCloud(forgedToken, ids.acme, { audience: ids.rival })).rejects.toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    // And a project of another organisation cannot be named in a token.
    await expect(issuer.mint(input('acme', { projectId: ids.thing }))).rejects.toThrow(/project not found/);
  });

  it('refuses values that would make the v2 sub claim pass for another ref or repository', async () => {
    const hostile: Partial<MintInput>[] = [
      { vcsRef: 'refs/heads/feature/vcs-ref/refs/heads/main' },
      { vcsOrigin: 'github.com/acme/app/vcs-ref/refs/heads/main' },
      { vcsRef: 'vcs-origin/github.com/acme/app' },
      { vcsRef: 'refs/heads/main\nx' },
      { vcsOrigin: 'github.com/acme/app', vcsRef: undefined },
      { contextIds: ['not-a-uuid'] },
      { userId: "x' OR '1'='1" },
    ];
    for (const extra of hostile) await expect(issuer.mint(input('acme', extra))).rejects.toMatchObject({ name: 'InputError' });
  });

  it('rotates: tokens signed before still verify while the old key is published, new ones use the new kid', async () => {
    const before = await issuer.mint(input('acme'));
    const oldKid = decodeProtectedHeader(before.v1).kid;
    await issuer.rotate(ids.acme);
    const after = await issuer.mint(input('acme'));
    const newKid = decodeProtectedHeader(after.v1).kid;
    expect(newKid).not.toBe(oldKid);
    const { keys } = (await (await fetch(`${server.url}/org/${ids.acme}/.well-known/jwks-pub.json`)).json()) as { keys: JWK[] };
    expect(keys.map((k) => k.kid)).toEqual([newKid, oldKid]);
    await expect(verifyAsCloud(before.v2, ids.acme)).resolves.toBeTruthy();
    await expect(verifyAsCloud(after.v2, ids.acme)).resolves.toBeTruthy();

    // Seven days on the old key is gone from the JWKS (and from the database).
    clock += 7 * DAY + 60_000;
    const later = await issuer.mint(input('acme'));
    expect(decodeProtectedHeader(later.v1).kid).toBe(newKid);
    await issuer.rotate(ids.rival);
    const kids = (await store.query<{ kid: string }>('SELECT kid FROM oidc_signing_keys WHERE organization_id = $1', [ids.acme])).map((r) => r.kid);
    expect(kids).toEqual([newKid]);
    await expect(verifyAsCloud(before.v2, ids.acme, { at: clock - 7 * DAY })).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });

    // Thirty days after it was made, the first token minted replaces the key first.
    clock += 30 * DAY;
    const due = await issuer.mint(input('acme'));
    expect(decodeProtectedHeader(due.v1).kid).not.toBe(newKid);
    await expect(verifyAsCloud(due.v1, ids.acme)).resolves.toBeTruthy();
    expect(await issuer.rotateDue()).not.toContain(ids.acme);
  });

  it('keeps no private key in clear anywhere in the database, and a sealed key moved to another organisation does not sign', async () => {
    await issuer.mint(input('acme'));
    await issuer.rotate(ids.rival);
    const rows = await store.query<{ kid: string; organization_id: string; ciphertext: Buffer; iv: Buffer; tag: Buffer; wrapped_key: Buffer; key_id: string }>('SELECT * FROM oidc_signing_keys');
    expect(rows.length).toBeGreaterThanOrEqual(2);
    const secrets: string[] = [];
    for (const row of rows) {
      const jwk = JSON.parse(await box.open({ ciphertext: row.ciphertext, iv: row.iv, tag: row.tag, wrappedKey: row.wrapped_key, keyId: row.key_id }, `oidc-signing-key:${row.organization_id}:${row.kid}`));
      expect(jwk.d).toEqual(expect.any(String));
      for (const part of ['d', 'p', 'q', 'dp', 'dq', 'qi']) secrets.push(jwk[part], Buffer.from(jwk[part], 'base64url').toString('hex'), Buffer.from(jwk[part], 'base64url').toString('base64'));
    }
    const tables = await store.query<{ tablename: string }>(`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`);
    expect(tables.map((t) => t.tablename)).toContain('oidc_signing_keys');
    for (const { tablename } of tables) {
      const dump = (await store.query<{ t: string }>(`SELECT t::text AS t FROM "${tablename}" t`)).map((r) => r.t).join('\n');
      // The search reads the rows' bytes: the public half is there to be found.
      if (tablename === 'oidc_signing_keys') expect(dump).toContain(String((rows[0] as any).public_jwk.n).slice(0, 40));
      expect(dump).not.toMatch(/PRIVATE KEY|"d"\s*:/);
      for (const secret of secrets) expect(dump.includes(secret.slice(0, 40))).toBe(false);
    }
    // Someone with write access to the database swaps rival's sealed key for acme's: rival's tokens stop, they are never signed with acme's key.
    const acme = rows.find((r) => r.organization_id === ids.acme)!;
    await store.query(
      `UPDATE oidc_signing_keys SET ciphertext = $1, iv = $2, tag = $3, wrapped_key = $4 WHERE organization_id = $5 AND state = 'active'`,
      [acme.ciphertext, acme.iv, acme.tag, acme.wrapped_key, ids.rival],
    );
    const fresh = createOidcIssuer({ store, box, publicUrl: () => server.url, now });
    await expect(fresh.mint(input('rival'))).rejects.toThrow(/cannot be opened/);
    await issuer.rotate(ids.rival);
  });

  describe('custom claims API', () => {
    const orgPath = () => `/api/v2/org/${ids.acme}/oidc-custom-claims`;
    const projectPath = (org = ids.acme, project = ids.app) => `/api/v2/org/${org}/project/${project}/oidc-custom-claims`;

    it('sets, shows and removes claims in CircleCI’s shapes, and tokens follow them (the project’s win over the organisation’s)', async () => {
      expect(await call('GET', orgPath(), 'viewer')).toEqual({ status: 200, body: { org_id: ids.acme } });

      const patched = await call('PATCH', orgPath(), 'owner', { audience: ['sts.amazonaws.com'], ttl: '30m' });
      expect(patched.status).toBe(200);
      expect(isClaimResponse(patched.body)).toBe(true);
      expect(patched.body).toEqual({ org_id: ids.acme, audience: ['sts.amazonaws.com'], audience_updated_at: now().toISOString(), ttl: '30m', ttl_updated_at: now().toISOString() });
      expect((await call('GET', orgPath(), 'viewer')).body).toEqual(patched.body);

      const project = await call('PATCH', projectPath(), 'app-admin', { audience: ['vault', 'https://example.internal'] });
      expect(project.status).toBe(200);
      expect(isClaimResponse(project.body)).toBe(true);
      expect(project.body).toEqual({ org_id: ids.acme, project_id: ids.app, audience: ['vault', 'https://example.internal'], audience_updated_at: expect.any(String) });
      expect((await call('GET', projectPath(), 'app-reader')).body).toEqual(project.body);

      const app = await issuer.mint(input('acme'));
      const appClaims = decodeJwt(app.v1);
      expect(appClaims.aud).toEqual(['vault', 'https://example.internal']);
      expect(appClaims.exp! - appClaims.iat!).toBe(1800);
      await expect(verifyAsCloud(app.v2, ids.acme, { audience: 'vault' })).resolves.toBeTruthy();
      await expect(verifyAsCloud(app.v2, ids.acme)).rejects.toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' });
      const other = decodeJwt((await issuer.mint(input('acme', { projectId: ids.other }))).v1);
      expect(other.aud).toBe('sts.amazonaws.com');

      const removed = await call('DELETE', `${orgPath()}?claims=ttl`, 'owner');
      expect(removed).toEqual({ status: 200, body: { org_id: ids.acme, audience: ['sts.amazonaws.com'], audience_updated_at: expect.any(String) } });
      expect(isClaimResponse(removed.body)).toBe(true);
      const back = decodeJwt((await issuer.mint(input('acme'))).v1);
      expect(back.exp! - back.iat!).toBe(3600);
      expect((await call('DELETE', `${projectPath()}?claims=audience,ttl`, 'app-admin')).body).toEqual({ org_id: ids.acme, project_id: ids.app });
      expect(decodeJwt((await issuer.mint(input('acme'))).v1).aud).toBe('sts.amazonaws.com');
      await call('DELETE', `${orgPath()}?claims=audience`, 'owner');
      expect(decodeJwt((await issuer.mint(input('acme'))).v1).aud).toBe(ids.acme);

      const [record] = await store.query<any>(`SELECT * FROM audit_events WHERE action = 'oidc.claims.set' AND result = 'success' AND actor_login = 'owner'`);
      expect(record).toMatchObject({ org: 'acme', target_type: 'oidc-custom-claims', target_id: ids.acme, detail: { audience: ['sts.amazonaws.com'], ttl: '30m' } });
    });

    it('lets only the organisation’s and the project’s admins change them; others get 403, or the 404 of what they cannot see', async () => {
      expect((await call('PATCH', orgPath(), 'viewer', { ttl: '2h' })).status).toBe(403);
      expect((await call('DELETE', `${orgPath()}?claims=ttl`, 'viewer')).status).toBe(403);
      expect((await call('PATCH', orgPath(), 'app-admin', { ttl: '2h' })).status).toBe(403);
      expect((await call('GET', orgPath(), 'app-reader')).status).toBe(403);
      expect((await call('PATCH', projectPath(), 'app-reader', { ttl: '2h' })).status).toBe(403);
      expect((await call('PATCH', projectPath(ids.acme, ids.other), 'app-admin', { ttl: '2h' })).status).toBe(404);

      // An outsider sees what a caller sees for an organisation that does not exist.
      const unknown = randomUUID();
      const hidden = await call('GET', orgPath(), 'outsider');
      const missing = await call('GET', `/api/v2/org/${unknown}/oidc-custom-claims`, 'outsider');
      expect(hidden).toEqual({ status: 404, body: { message: `organization not found: ${ids.acme}` } });
      expect(missing).toEqual({ status: 404, body: { message: `organization not found: ${unknown}` } });
      expect((await call('PATCH', projectPath(), 'outsider', { ttl: '2h' })).body).toEqual({ message: `project not found: ${ids.app}` });
      // Pairing an organisation one administers with another's project shows nothing of either.
      expect(await call('PATCH', projectPath(ids.rival, ids.app), 'app-admin', { ttl: '2h' })).toEqual({ status: 404, body: { message: `project not found: ${ids.app}` } });
      expect(await call('GET', projectPath(ids.acme, ids.thing), 'outsider')).toEqual({ status: 404, body: { message: `project not found: ${ids.thing}` } });

      expect((await call('GET', orgPath(), 'admin')).body).toEqual({ org_id: ids.acme });
      const denied = await store.query<any>(`SELECT * FROM audit_events WHERE action = 'oidc.claims.set' AND result = 'denied' AND actor_login = 'viewer'`);
      expect(denied).toHaveLength(1);
    });

    it('refuses malformed claims, naming the field', async () => {
      const bad: [unknown, RegExp][] = [
        [{ ttl: '1000h' }, /ttl '1000h' must be between 1m and 24h/],
        [{ ttl: '10s' }, /between 1m and 24h/],
        [{ ttl: "1h'; DROP TABLE oidc_signing_keys; --" }, /ttl/],
        [{ audience: [] }, /audience/],
        [{ audience: Array.from({ length: 11 }, (_, i) => `a${i}`) }, /audience/],
        [{ audience: ['has space'] }, /audience\[0\] must be 1 to 1000 characters without spaces or control characters/],
        [{ audience: ['ok', 'tab\there'] }, /audience\[1\]/],
        [{}, /send audience, ttl or both/],
      ];
      for (const [body, message] of bad) {
        const res = await call('PATCH', orgPath(), 'owner', body);
        expect(res.status).toBe(400);
        expect(res.body.message).toMatch(message);
      }
      expect((await call('DELETE', `${orgPath()}?claims=audience,sub`, 'owner')).body.message).toMatch(/names 'sub': the claims are audience, ttl/);
      expect((await call('DELETE', orgPath(), 'owner')).status).toBe(400);
      expect((await call('GET', orgPath(), 'owner')).body).toEqual({ org_id: ids.acme });
      expect((await store.query('SELECT 1 FROM oidc_signing_keys')).length).toBeGreaterThan(0);
    });
  });

  it('names repositories as CircleCI’s vcs-origin does', () => {
    expect(vcsOriginOf('https://github.com/acme/app.git')).toBe('github.com/acme/app');
    expect(vcsOriginOf('https://x-access-token:secret@github.com:443/acme/app')).toBe('github.com/acme/app');
    expect(vcsOriginOf('git@github.com:acme/app.git')).toBe('github.com/acme/app');
    expect(vcsOriginOf('ssh://git@ghe.example.com/acme/app.git')).toBe('ghe.example.com/acme/app');
    expect(vcsOriginOf('/srv/git/app')).toBe('srv/git/app');
  });

  it('publishes the documents to a public bucket, where a verifier finds the issuer and its keys', async () => {
    const s3 = await startS3rver();
    try {
      const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
      const bucketUrl = `${s3.endpoint}/${s3.bucket}`;
      const put = async (key: string, body: Buffer, contentType: string) => {
        await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: body, ContentType: contentType }));
      };
      // Every key change is published before the new key signs.
      const published = createOidcIssuer({ store, box, publicUrl: () => bucketUrl, now, publish: { put } });
      expect(await publishOidcDocuments(published, put, [ids.rival])).toEqual([`org/${ids.rival}/.well-known/jwks-pub.json`, `org/${ids.rival}/.well-known/openid-configuration`]);
      await published.rotate(ids.rival);
      const token = (await published.mint(input('rival', { vcsOrigin: 'github.com/rival/thing' }))).v2;

      const issuerUrl = `${bucketUrl}/org/${ids.rival}`;
      const res = await fetch(`${issuerUrl}/.well-known/openid-configuration`);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const discovery = (await res.json()) as { issuer: string; jwks_uri: string };
      expect(discovery.issuer).toBe(issuerUrl);
      const verified = await jwtVerify(token, createRemoteJWKSet(new URL(discovery.jwks_uri)), { issuer: discovery.issuer, audience: ids.rival, currentDate: now() });
      expect(verified.payload.iss).toBe(issuerUrl);
      expect(verified.payload['oidc.circleci.com/project-id']).toBe(ids.thing);
    } finally {
      await s3.stop();
    }
  });
});
