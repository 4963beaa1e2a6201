import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import Ajv from 'ajv';
import { createHttpApp, listen, type RunningHttpServer } from '../../runtime/api/http-app';
import { appendAudit } from '../../runtime/audit/audit-log';
import { createApiClient } from '../../runtime/cli/client';
import type { CliIo } from '../../runtime/cli/main';
import { UsageError } from '../../runtime/cli/main';
import { contextCommand, envCommand } from '../../runtime/cli/secrets-commands';
import { AuthenticationError } from '../../runtime/domain/errors';
import type { Forge } from '../../runtime/forge/forge';
import { createIdentity, type Identity } from '../../runtime/identity/identity';
import { createLogger } from '../../runtime/logger';
import { createProjects, type Project, type Projects } from '../../runtime/projects/projects';
import { registerSecretsRoutes } from '../../runtime/secrets/api-routes';
import { createContexts, MAX_VARIABLES, type Contexts } from '../../runtime/secrets/contexts';
import { parseContextExpression } from '../../runtime/secrets/expressions';
import { createSecretBox, type KeyWrapper } from '../../runtime/secrets/secret-box';
import { migrate } from '../../runtime/store/migrate';
import { createPgliteStore } from '../../runtime/store/pglite-store';
import type { Store } from '../../runtime/store/store';

/**
 * Contexts and project environment variables as a CircleCI API client and a pipeline see them: the
 * v2 paths and shapes (copied below from CircleCI's OpenAPI description), values that never come
 * back (masked `xxxx` + last four, in no answer, error, audit record or log line), organisation
 * roles deciding who reads and who writes, restrictions deciding which task gets a context, and
 * hostile names and values refused with a 400 naming the field. One app on loopback, no whole Gyre.
 */

// --- CircleCI's shapes (from the API v2 OpenAPI description) -------------------------------------

const uuid = { type: 'string', format: 'uuid' };
const dateTime = { type: 'string', format: 'date-time' };
const Context = { type: 'object', properties: { id: uuid, name: { type: 'string' }, created_at: dateTime }, required: ['id', 'name', 'created_at'] };
const ContextList = { type: 'object', properties: { items: { type: 'array', items: Context }, next_page_token: { type: ['string', 'null'] } }, required: ['items', 'next_page_token'] };
const ContextVariable = {
  type: 'object',
  properties: { variable: { type: 'string' }, created_at: dateTime, updated_at: dateTime, context_id: uuid },
  required: ['variable', 'created_at', 'updated_at', 'context_id'],
};
const ContextVariableList = { type: 'object', properties: { items: { type: 'array', items: ContextVariable }, next_page_token: { type: ['string', 'null'] } }, required: ['items', 'next_page_token'] };
const EnvironmentVariable = { type: 'object', properties: { name: { type: 'string' }, value: { type: 'string' }, 'created-at': {} }, required: ['name', 'value'] };
const EnvironmentVariableList = { type: 'object', properties: { items: { type: 'array', items: EnvironmentVariable }, next_page_token: { type: ['string', 'null'] } }, required: ['items', 'next_page_token'] };
const MessageResponse = { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] };
const restrictionFields = {
  id: uuid,
  project_id: uuid,
  name: { type: ['string', 'null'] },
  restriction_type: { type: 'string' },
  restriction_value: { type: 'string' },
};
const RestrictionCreated = { type: 'object', additionalProperties: false, properties: restrictionFields };
const RestrictionList = {
  type: 'object',
  additionalProperties: false,
  properties: {
    items: { type: 'array', items: { type: 'object', additionalProperties: false, properties: { context_id: uuid, ...restrictionFields } } },
    next_page_token: { type: ['string', 'null'] },
  },
};

const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)) && /^\d{4}-\d\d-\d\dT/.test(s));
function expectShape(schema: object, value: unknown): void {
  const validate = ajv.compile(schema);
  if (!validate(value)) throw new Error(`not CircleCI's shape: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value).slice(0, 500)}`);
}

// --- A SecretBox with a fixed wrapping key ------------------------------------------------------

const WRAPPING_KEY = Buffer.alloc(32, 7);
const testWrapper: KeyWrapper = {
  kind: 'test',
  async wrap(dataKey) {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', WRAPPING_KEY, iv);
    const wrapped = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return { wrappedKey: Buffer.concat([iv, cipher.getAuthTag(), wrapped]), keyId: 'test:1' };
  },
  async unwrap(wrappedKey) {
    const decipher = createDecipheriv('aes-256-gcm', WRAPPING_KEY, wrappedKey.subarray(0, 12));
    decipher.setAuthTag(wrappedKey.subarray(12, 28));
    return Buffer.concat([decipher.update(wrappedKey.subarray(28)), decipher.final()]);
  },
  async currentKeyId() {
    return 'test:1';
  },
};

/** Every value set in this file: none may come back anywhere. */
const SECRETS = {
  deployKey: 'deploy-key-S3cr3t-0001',
  projectToken: 'project-token-S3cr3t-0002',
  shared: 'context-wins-S3cr3t-0003',
  short: 'abcd',
  replaced: 'replaced-S3cr3t-0004',
  extra: 'extra-S3cr3t-0005',
  cli: 'typed-into-cli-S3cr3t-0006',
  hostileLong: 'hostile-long-S3cr3t-0007',
};

describe('contexts and project environment variables', () => {
  let store: Store;
  let identity: Identity;
  let projects: Projects;
  let contexts: Contexts;
  let server: RunningHttpServer;
  let app: Project;
  let other: Project;
  let rival: Project;
  let acmeId: string;
  let rivalId: string;
  const tokens: Record<string, string> = {};
  /** Every answer's body, to search for values afterwards. */
  const answers: string[] = [];
  const logLines: string[] = [];

  const call = async (who: string | undefined, method: string, path: string, body?: unknown, raw?: string) => {
    const res = await fetch(server.url + path, {
      method,
      headers: { ...(who ? { 'Circle-Token': tokens[who] } : {}), ...(body !== undefined || raw !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    const text = await res.text();
    answers.push(text);
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };
  const ok = async (who: string, method: string, path: string, body?: unknown) => {
    const r = await call(who, method, path, body);
    if (r.status >= 300) throw new Error(`${method} ${path} as ${who} → ${r.status}: ${r.text}`);
    return r.json;
  };
  const newContext = async (name: string, org = 'gh/acme') => (await ok('admin', 'POST', '/api/v2/context', { name, owner: { slug: org } })).id as string;

  beforeAll(async () => {
    store = await createPgliteStore();
    await migrate(store);
    identity = createIdentity({ store });
    tokens.admin = (await identity.ensureAdmin()).token!;
    const forge = { defaultBranch: async () => 'main' } as unknown as Forge;
    projects = createProjects({ store, forge });
    app = await projects.add({ org: 'acme', name: 'app', repoUrl: '/nowhere' });
    other = await projects.add({ org: 'acme', name: 'other', repoUrl: '/nowhere' });
    rival = await projects.add({ org: 'rival', name: 'thing', repoUrl: '/nowhere' });
    acmeId = (await identity.orgs.get('acme')).id;
    rivalId = (await identity.orgs.get('rival')).id;
    for (const [login, role] of [['acme-admin', 'admin'], ['acme-member', 'member'], ['acme-viewer', 'viewer']] as const) {
      tokens[login] = (await identity.users.add({ login })).token;
      await identity.orgs.setRole('acme', login, role);
    }
    tokens['app-admin'] = (await identity.users.add({ login: 'app-admin' })).token;
    await identity.orgs.setProjectRole(app, 'app-admin', 'admin');
    tokens['app-reader'] = (await identity.users.add({ login: 'app-reader' })).token;
    await identity.orgs.setProjectRole(app, 'app-reader', 'read');
    tokens.outsider = (await identity.users.add({ login: 'outsider' })).token;
    await identity.orgs.setRole('rival', 'outsider', 'admin');
    const adminUser = await identity.users.get('admin');
    tokens['project-token'] = (await identity.tokens.createProject(app, adminUser.id, { scope: 'trigger' })).token;

    contexts = createContexts({ store, box: createSecretBox(testWrapper) });
    const http = await createHttpApp({
      log: createLogger({ level: 'info', write: (line) => logLines.push(line) }),
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
    registerSecretsRoutes(http, { contexts, projects, access: identity });
    server = await listen(http, 0, '127.0.0.1', false);
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await store?.close();
  });

  it('creates, lists (paged, by owner-id or owner-slug), gets and deletes contexts in CircleCI’s shapes', async () => {
    const made = await call('acme-admin', 'POST', '/api/v2/context', { name: 'deploy', owner: { id: acmeId, type: 'organization' } });
    expect(made.status).toBe(200);
    expectShape(Context, made.json);
    expect(made.json.name).toBe('deploy');
    expect((await call('acme-admin', 'POST', '/api/v2/context', { name: 'deploy', owner: { slug: 'gh/acme' } })).json).toEqual({ message: 'a context named "deploy" already exists in organization gh/acme' });

    const got = await ok('acme-viewer', 'GET', `/api/v2/context/${made.json.id}`);
    expect(got).toEqual(made.json);
    await store.query(`INSERT INTO contexts (id, organization_id, name) SELECT gen_random_uuid(), $1, 'bulk-' || lpad(g::text, 3, '0') FROM generate_series(0, 99) g`, [acmeId]);
    const first = await ok('acme-viewer', 'GET', `/api/v2/context?owner-id=${acmeId}`);
    expectShape(ContextList, first);
    expect(first.items).toHaveLength(100);
    expect(first.next_page_token).toEqual(expect.any(String));
    const second = await ok('acme-viewer', 'GET', `/api/v2/context?owner-slug=gh/acme&page-token=${first.next_page_token}`);
    expect(second).toEqual({ items: [made.json], next_page_token: null });
    expect((await call('acme-viewer', 'GET', '/api/v2/context?owner-slug=gh/acme&page-token=not-ours')).json.message).toMatch(/page-token 'not-ours' is not a token this API gave out/);

    const gone = await call('acme-admin', 'DELETE', `/api/v2/context/${first.items[0].id}`);
    expect(gone.status).toBe(200);
    expectShape(MessageResponse, gone.json);
    expect((await call('acme-admin', 'GET', `/api/v2/context/${first.items[0].id}`)).json).toEqual({ message: `context not found: ${first.items[0].id}` });
    expect((await call('acme-admin', 'GET', '/api/v2/context')).json).toEqual({ message: 'owner-id or owner-slug is required: the organization the contexts belong to' });
    expect((await call('acme-admin', 'GET', '/api/v2/context?owner-slug=acme&owner-type=account')).status).toBe(400);
  });

  it('keeps context variables sealed: lists and answers show names and xxxx + the last four characters, never a value', async () => {
    const id = await newContext('secrets');
    const put = await call('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/DEPLOY_KEY`, { value: SECRETS.deployKey });
    expect(put.status).toBe(200);
    expectShape(ContextVariable, put.json);
    expect(put.json).toEqual({ variable: 'DEPLOY_KEY', context_id: id, created_at: expect.any(String), updated_at: expect.any(String) });
    await ok('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/SHORT`, { value: SECRETS.short });
    await ok('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/EMPTY`, { value: '' });

    const list = await ok('acme-viewer', 'GET', `/api/v2/context/${id}/environment-variable`);
    expectShape(ContextVariableList, list);
    expect(list.items.map((v: any) => [v.variable, v.value])).toEqual([
      ['DEPLOY_KEY', 'xxxx0001'],
      ['EMPTY', 'xxxx'],
      // Four characters or fewer show none of them: a list never shows a whole value.
      ['SHORT', 'xxxx'],
    ]);

    // Replacing keeps created_at and moves updated_at.
    await new Promise((r) => setTimeout(r, 5));
    const replaced = await ok('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/DEPLOY_KEY`, { value: SECRETS.replaced });
    expect(replaced.created_at).toBe(put.json.created_at);
    expect(Date.parse(replaced.updated_at)).toBeGreaterThan(Date.parse(put.json.updated_at));

    const [row] = await store.query<{ ciphertext: Buffer; key_id: string; last4: string }>(`SELECT ciphertext, key_id, last4 FROM context_variables WHERE context_id = $1 AND name = 'DEPLOY_KEY'`, [id]);
    expect(row.key_id).toBe('test:1');
    expect(row.last4).toBe('0004');
    expect(Buffer.from(row.ciphertext).includes(Buffer.from(SECRETS.replaced))).toBe(false);

    const deleted = await call('acme-admin', 'DELETE', `/api/v2/context/${id}/environment-variable/SHORT`);
    expect(deleted).toMatchObject({ status: 200, json: { message: 'Environment variable deleted.' } });
    expect((await call('acme-admin', 'DELETE', `/api/v2/context/${id}/environment-variable/SHORT`)).json).toEqual({ message: 'environment variable not found: SHORT' });
  });

  it('keeps project variables sealed: POST answers 201 with the masked value, GET one and the list are masked, DELETE removes', async () => {
    const made = await call('app-admin', 'POST', '/api/v2/project/gh/acme/app/envvar', { name: 'API_TOKEN', value: SECRETS.projectToken });
    expect(made.status).toBe(201);
    expectShape(EnvironmentVariable, made.json);
    expect(made.json).toEqual({ name: 'API_TOKEN', value: 'xxxx0002', 'created-at': expect.any(String) });
    const list = await ok('app-reader', 'GET', '/api/v2/project/gh/acme/app/envvar');
    expectShape(EnvironmentVariableList, list);
    expect(list).toEqual({ items: [made.json], next_page_token: null });
    expect(await ok('project-token', 'GET', '/api/v2/project/gh/acme/app/envvar/API_TOKEN')).toEqual(made.json);

    await ok('app-admin', 'POST', '/api/v2/project/gh/acme/app/envvar', { name: 'DOOMED', value: 'x' });
    expect((await call('app-admin', 'DELETE', '/api/v2/project/gh/acme/app/envvar/DOOMED')).json).toEqual({ message: 'Environment variable deleted.' });
    expect((await call('app-admin', 'GET', '/api/v2/project/gh/acme/app/envvar/DOOMED')).json).toEqual({ message: 'environment variable not found: DOOMED' });
  });

  it('lets organisation roles read, and only its admins (and project admins, for project variables) write', async () => {
    const id = await newContext('guarded');
    const putVar = (who: string) => call(who, 'PUT', `/api/v2/context/${id}/environment-variable/X`, { value: 'v' });
    for (const who of ['acme-member', 'acme-viewer', 'app-admin', 'project-token']) {
      const res = await putVar(who);
      expect([who, res.status]).toEqual([who, 403]);
      expect(res.json.message).toMatch(/needs org:admin, held by the organisation's admin role/);
      expect((await call(who, 'POST', `/api/v2/context/${id}/restrictions`, { restriction_type: 'group', restriction_value: 'ops' })).status).toBe(403);
      expect((await call(who, 'DELETE', `/api/v2/context/${id}`)).status).toBe(403);
      expect((await call(who, 'POST', '/api/v2/context', { name: `by-${who}`, owner: { slug: 'gh/acme' } })).status).toBe(403);
    }
    for (const who of ['acme-member', 'acme-viewer']) {
      expect((await call(who, 'GET', `/api/v2/context/${id}/environment-variable`)).status).toBe(200);
      expect((await call(who, 'GET', `/api/v2/context?owner-slug=gh/acme`)).status).toBe(200);
    }
    expect((await putVar('acme-admin')).status).toBe(200);
    expect((await putVar('admin')).status).toBe(200);

    for (const who of ['app-reader', 'project-token', 'acme-member']) {
      const res = await call(who, 'POST', '/api/v2/project/gh/acme/app/envvar', { name: 'NOPE', value: 'v' });
      expect([who, res.status, res.json.message]).toEqual([who, 403, expect.stringMatching(/needs project:admin/)]);
      expect((await call(who, 'DELETE', '/api/v2/project/gh/acme/app/envvar/API_TOKEN')).status).toBe(403);
    }
    expect((await call('acme-admin', 'POST', '/api/v2/project/gh/acme/app/envvar', { name: 'BY_ORG_ADMIN', value: 'v' })).status).toBe(201);
    expect((await call(undefined, 'GET', `/api/v2/context/${id}/environment-variable`)).status).toBe(401);
  });

  it('answers 404 for another organisation’s context, exactly as for one that does not exist', async () => {
    const id = await newContext('acme-only');
    const missing = randomUUID();
    for (const [method, suffix, body] of [
      ['GET', '', undefined],
      ['GET', '/environment-variable', undefined],
      ['PUT', '/environment-variable/STOLEN', { value: 'x' }],
      ['GET', '/restrictions', undefined],
      ['DELETE', '', undefined],
    ] as const) {
      const theirs = await call('outsider', method, `/api/v2/context/${id}${suffix}`, body);
      const none = await call('outsider', method, `/api/v2/context/${missing}${suffix}`, body);
      expect([method, suffix, theirs.status, theirs.json.message.replace(id, 'ID')]).toEqual([method, suffix, 404, 'context not found: ID']);
      expect(none.json.message.replace(missing, 'ID')).toBe('context not found: ID');
    }
    // By slug or id in the query or the body: the same words as an organisation that does not exist.
    expect((await call('outsider', 'GET', '/api/v2/context?owner-slug=gh/acme')).json).toEqual({ message: 'organization not found: gh/acme' });
    expect((await call('outsider', 'GET', '/api/v2/context?owner-slug=gh/nowhere')).json).toEqual({ message: 'organization not found: gh/nowhere' });
    expect((await call('outsider', 'GET', `/api/v2/context?owner-id=${acmeId}`)).json).toEqual({ message: `organization not found: ${acmeId}` });
    expect((await call('outsider', 'GET', `/api/v2/context?owner-id=${missing}`)).json).toEqual({ message: `organization not found: ${missing}` });
    expect((await call('outsider', 'POST', '/api/v2/context', { name: 'planted', owner: { id: acmeId } })).status).toBe(404);
    // Their own organisation works as usual.
    expect((await call('outsider', 'POST', '/api/v2/context', { name: 'theirs', owner: { id: rivalId } })).status).toBe(200);
    const [{ count }] = await store.query<{ count: number }>(`SELECT count(*)::int AS count FROM context_variables WHERE name = 'STOLEN'`);
    expect(count).toBe(0);
  });

  it('adds, lists and deletes restrictions in CircleCI’s shapes, refusing what is not a restriction', async () => {
    const id = await newContext('restricted');
    const project = await call('acme-admin', 'POST', `/api/v2/context/${id}/restrictions`, { restriction_type: 'project', restriction_value: app.id });
    expect(project.status).toBe(201);
    expectShape(RestrictionCreated, project.json);
    expect(project.json).toEqual({ id: expect.any(String), project_id: app.id, name: 'gh/acme/app', restriction_type: 'project', restriction_value: app.id });
    // CircleCI's deprecated form.
    const deprecated = await call('acme-admin', 'POST', `/api/v2/context/${id}/restrictions`, { project_id: other.id });
    expect(deprecated.json).toMatchObject({ project_id: other.id, restriction_type: 'project' });
    const expression = await ok('acme-admin', 'POST', `/api/v2/context/${id}/restrictions`, { restriction_type: 'expression', restriction_value: 'pipeline.git.branch == "main" and not job.ssh.enabled' });
    expect(expression).toMatchObject({ name: null, restriction_type: 'expression' });

    const list = await ok('acme-viewer', 'GET', `/api/v2/context/${id}/restrictions`);
    expectShape(RestrictionList, list);
    expect(list.items.map((r: any) => [r.context_id, r.restriction_type])).toEqual([
      [id, 'project'],
      [id, 'project'],
      [id, 'expression'],
    ]);

    const refused: [unknown, RegExp][] = [
      [{ restriction_type: 'project', restriction_value: rival.id }, /restriction_value .*project does not exist in organization gh\/acme/],
      [{ restriction_type: 'project', restriction_value: 'not-a-project' }, /restriction_value/],
      [{ restriction_type: 'expression', restriction_value: 'pipeline.parameters.deploy == true' }, /restriction_value .*pipeline parameters \(pipeline\.parameters\.deploy\) cannot be used/],
      [{ restriction_type: 'expression', restriction_value: 'pipeline.git.branch =~ "release/.*"' }, /restriction_value .*'=~' .* is not an operator of context expressions/],
      [{ restriction_type: 'expression', restriction_value: 'pipeline.git.branch == "main" and (' }, /restriction_value .*ends where a value is expected/],
      [{ restriction_type: 'expression', restriction_value: 'process.env.SECRET == "x"' }, /restriction_value .*'process\.env\.SECRET' is not a pipeline value/],
      [{ restriction_type: 'expression', restriction_value: `${'('.repeat(100)}true${')'.repeat(100)}` }, /nests deeper than 64/],
      [{ restriction_type: 'role', restriction_value: 'x' }, /restriction_type "role" is not one of project, expression, group/],
      [{ restriction_type: 'group', restriction_value: ' ops\n' }, /restriction_value of a group restriction is a group name/],
      [{ project_id: app.id, restriction_type: 'project', restriction_value: app.id }, /project_id is the deprecated form/],
      [{ restriction_type: 'project', restriction_value: app.id, extra: 1 }, /body has a property 'extra' that is not allowed here/],
    ];
    for (const [body, message] of refused) {
      const res = await call('acme-admin', 'POST', `/api/v2/context/${id}/restrictions`, body);
      expect([JSON.stringify(body).slice(0, 80), res.status, res.json.message]).toEqual([JSON.stringify(body).slice(0, 80), 400, expect.stringMatching(message)]);
    }
    const again = await call('acme-admin', 'POST', `/api/v2/context/${id}/restrictions`, { restriction_type: 'project', restriction_value: app.id });
    expect(again).toMatchObject({ status: 409, json: { message: "The restriction you're trying to add already exists." } });

    expect(await ok('acme-admin', 'DELETE', `/api/v2/context/${id}/restrictions/${deprecated.json.id}`)).toEqual({ message: 'Context restriction deleted.' });
    expect((await call('acme-admin', 'DELETE', `/api/v2/context/${id}/restrictions/${deprecated.json.id}`)).status).toBe(404);
    expect((await ok('acme-admin', 'GET', `/api/v2/context/${id}/restrictions`)).items).toHaveLength(2);
  });

  describe('resolveForTask', () => {
    const base = () => ({ orgId: acmeId, projectId: app.id, pipeline: { branch: 'main', parameters: {} }, actor: {} });
    let restricted: string;

    beforeAll(async () => {
      await ok('app-admin', 'POST', '/api/v2/project/gh/acme/app/envvar', { name: 'SHARED', value: 'from-the-project' });
      const deploy = await newContext('deploy-env');
      await ok('acme-admin', 'PUT', `/api/v2/context/${deploy}/environment-variable/SHARED`, { value: SECRETS.shared });
      await ok('acme-admin', 'PUT', `/api/v2/context/${deploy}/environment-variable/ONLY_DEPLOY`, { value: 'deploy' });
      const extra = await newContext('extra-env');
      await ok('acme-admin', 'PUT', `/api/v2/context/${extra}/environment-variable/ONLY_DEPLOY`, { value: SECRETS.extra });
      restricted = await newContext('prod');
      await ok('acme-admin', 'PUT', `/api/v2/context/${restricted}/environment-variable/PROD_KEY`, { value: 'prod-key' });
      await newContext('rival-env', 'gh/rival');
    });

    it('gives the project’s variables, then each context’s in order: a later one wins, a context wins over the project', async () => {
      const resolved = await contexts.resolveForTask({ ...base(), contextNames: ['deploy-env', 'extra-env'] });
      expect(resolved).toEqual({
        ok: true,
        env: { API_TOKEN: SECRETS.projectToken, BY_ORG_ADMIN: 'v', SHARED: SECRETS.shared, ONLY_DEPLOY: SECRETS.extra },
      });
      expect(await contexts.resolveForTask({ ...base(), contextNames: [] })).toEqual({ ok: true, env: { API_TOKEN: SECRETS.projectToken, BY_ORG_ADMIN: 'v', SHARED: 'from-the-project' } });
    });

    it('refuses a context of another organisation, one that does not exist, and a project named under another organisation', async () => {
      expect(await contexts.resolveForTask({ ...base(), contextNames: ['rival-env'] })).toEqual({ ok: false, reason: 'context "rival-env" does not exist in organization gh/acme' });
      expect(await contexts.resolveForTask({ ...base(), contextNames: ['deploy-env', 'nope'] })).toEqual({ ok: false, reason: 'context "nope" does not exist in organization gh/acme' });
      expect(await contexts.resolveForTask({ ...base(), orgId: rivalId, contextNames: ['rival-env'] })).toEqual({ ok: false, reason: expect.stringMatching(/project gh\/acme\/app is not in organization/) });
    });

    it('lets a task through every restriction of the context, and refuses with a reason naming the context otherwise', async () => {
      const add = (type: string, value: string) => ok('acme-admin', 'POST', `/api/v2/context/${restricted}/restrictions`, { restriction_type: type, restriction_value: value });
      await add('project', app.id);
      const prod = { ...base(), contextNames: ['prod'] };
      expect(await contexts.resolveForTask(prod)).toMatchObject({ ok: true, env: { PROD_KEY: 'prod-key' } });
      expect(await contexts.resolveForTask({ ...prod, projectId: other.id })).toEqual({ ok: false, reason: 'Unauthorized: context "prod" is restricted to other projects than gh/acme/other' });

      await add('expression', 'pipeline.git.branch == "main" or pipeline.git.branch starts-with "release/"');
      expect((await contexts.resolveForTask({ ...prod, pipeline: { branch: 'release/2.0', parameters: {} } })).ok).toBe(true);
      const feature = await contexts.resolveForTask({ ...prod, pipeline: { branch: 'feature', parameters: { deploy: true } } });
      expect(feature).toEqual({ ok: false, reason: expect.stringMatching(/^Unauthorized: context "prod" has an expression restriction this job does not meet: pipeline\.git\.branch == "main" or .* is false$/) });
      // No branch (a tag pipeline): the expression fails closed.
      const tagged = await contexts.resolveForTask({ ...prod, pipeline: { tag: 'v1', parameters: {} } });
      expect(tagged).toEqual({ ok: false, reason: expect.stringMatching(/could not be evaluated: pipeline\.git\.branch has no value in this pipeline/) });

      await add('group', 'deployers');
      expect(await contexts.resolveForTask(prod)).toEqual({ ok: false, reason: 'Unauthorized: context "prod" is restricted to security groups the actor who started this job is not in' });
      expect((await contexts.resolveForTask({ ...prod, actor: { userId: randomUUID(), groups: ['devs', 'deployers'] } })).ok).toBe(true);
      // A refusal for one context refuses the task: no value of any context is handed out.
      expect((await contexts.resolveForTask({ ...prod, contextNames: ['deploy-env', 'prod'] })).ok).toBe(false);
    });

    it('gives a forked pull request’s task nothing, and refuses it any context, unless the project passes secrets to forks', async () => {
      const fork = { ...base(), pipeline: { branch: 'pull/7', fork: true } };
      expect(await contexts.resolveForTask({ ...fork, contextNames: [] })).toEqual({ ok: true, env: {} });
      const refused = { ok: false, reason: 'Unauthorized: contexts are not passed to pipelines of forked pull requests (project gh/acme/app does not pass secrets to forks: forks_receive_secret_env_vars is off)' };
      expect(await contexts.resolveForTask({ ...fork, contextNames: ['deploy-env'] })).toEqual(refused);
      // The conductor asks before it queues the job, and hears the same.
      expect(await contexts.authorize({ ...fork, contextNames: ['deploy-env'] })).toEqual(refused);

      await projects.updateSettings('gh/acme/app', { forksReceiveSecretEnvVars: true });
      try {
        expect(await contexts.resolveForTask({ ...fork, contextNames: ['deploy-env'] })).toEqual({ ok: true, env: expect.objectContaining({ API_TOKEN: SECRETS.projectToken, SHARED: SECRETS.shared }) });
        // Allowed for forks is not more than a branch gets: the context's restrictions still hold.
        expect(await contexts.resolveForTask({ ...fork, contextNames: ['prod'] })).toEqual({ ok: false, reason: expect.stringMatching(/^Unauthorized: context "prod" (is restricted|has an expression restriction)/) });
      } finally {
        await projects.updateSettings('gh/acme/app', { forksReceiveSecretEnvVars: false });
      }
    });

    it('evaluates CircleCI’s expression language, failing closed on errors whatever surrounds them', () => {
      const holds = (source: string, values: Record<string, string | number | boolean>) => parseContextExpression(source).evaluate(values).allowed;
      const v = { 'pipeline.git.branch': 'main', 'pipeline.number': 42, 'job.ssh.enabled': false, 'pipeline.trigger_source': 'api' };
      expect(holds('pipeline.git.branch == "main" and not job.ssh.enabled', v)).toBe(true);
      expect(holds('pipeline.number >= 40 and pipeline.number < 43', v)).toBe(true);
      expect(holds('pipeline.number == "42"', v)).toBe(false); // different types are never equal
      expect(holds('pipeline.number != "42"', v)).toBe(true);
      // `not` binds tighter than `and` (CircleCI: not foo and bar is (not foo) and bar).
      expect(holds('not job.ssh.enabled and false', v)).toBe(false);
      expect(holds('not (job.ssh.enabled and false)', v)).toBe(true);
      expect(holds('! (pipeline.trigger_source starts-with "ap")', v)).toBe(false);
      expect(holds('"say \\"hi\\"" == "say \\"hi\\""', v)).toBe(true);
      // Type errors and unset variables fail closed, even under not.
      expect(holds('not (pipeline.git.branch > 3)', v)).toBe(false);
      expect(holds('not (pipeline.number starts-with "4")', v)).toBe(false);
      expect(holds('not (pipeline.git.tag == "v1")', v)).toBe(false);
      // or stops at its first true operand, and stops nothing else.
      expect(holds('true or pipeline.git.tag == "v1"', v)).toBe(true);
    });
  });

  it('refuses hostile names and values with a 400 naming the field, storing nothing', async () => {
    const id = await newContext('hostile');
    const before = (await store.query<{ count: number }>('SELECT count(*)::int AS count FROM context_variables'))[0].count;
    const cases: [string, string, unknown, string | undefined, RegExp][] = [
      ['NUL in a value', 'PUT', { value: `a\u0000b${SECRETS.hostileLong}` }, undefined, /body\.value holds a NUL character/],
      ['70 KiB value', 'PUT', { value: SECRETS.hostileLong + 'x'.repeat(70 * 1024) }, undefined, /value of BIG is \d+ bytes; a value may be at most 65536 bytes/],
      ['__proto__ name', 'PUT', { value: 'x' }, '__proto__', /environment variable name "__proto__" is reserved/],
      ['a name with a dash', 'PUT', { value: 'x' }, 'BAD-NAME', /environment variable name "BAD-NAME" must start with a letter or _/],
      ['a name with a NUL', 'PUT', { value: 'x' }, 'A%00B', /path\.name holds a NUL character/],
      ['a value that is a number', 'PUT', { value: 12 }, undefined, /body\.value must be a string/],
      ['a lone surrogate', 'PUT', undefined, undefined, /value of BIG is not valid Unicode/],
    ];
    for (const [what, method, body, name, message] of cases) {
      const raw = what === 'a lone surrogate' ? '{"value":"\\ud800x"}' : undefined;
      const res = await call('acme-admin', method, `/api/v2/context/${id}/environment-variable/${name ?? 'BIG'}`, body, raw);
      expect([what, res.status, res.json?.message]).toEqual([what, 400, expect.stringMatching(message)]);
    }
    const proto = await call('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/X`, undefined, '{"value":"x","__proto__":{"polluted":true}}');
    expect(proto).toMatchObject({ status: 400, json: { message: expect.stringMatching(/__proto__/) } });
    expect(({} as any).polluted).toBeUndefined();
    const projectProto = await call('app-admin', 'POST', '/api/v2/project/gh/acme/app/envvar', { name: '__proto__', value: 'x' });
    expect(projectProto).toMatchObject({ status: 400, json: { message: 'environment variable name "__proto__" is reserved' } });
    const badContext = await call('acme-admin', 'POST', '/api/v2/context', { name: 'two\nlines', owner: { slug: 'gh/acme' } });
    expect(badContext).toMatchObject({ status: 400, json: { message: expect.stringMatching(/context name "two\\nlines" must not hold control characters or line breaks/) } });
    expect((await call('acme-admin', 'POST', '/api/v2/context', { name: ' padded', owner: { slug: 'gh/acme' } })).json.message).toMatch(/must not start or end with whitespace/);
    expect((await call('acme-admin', 'POST', '/api/v2/context', { name: 'x'.repeat(201), owner: { slug: 'gh/acme' } })).json.message).toMatch(/context name must be 1 to 200 characters/);
    expect((await store.query<{ count: number }>('SELECT count(*)::int AS count FROM context_variables'))[0].count).toBe(before);

    // The 1001st variable: a context holds 1000 (filled here in one statement from one sealed row).
    await ok('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/SEED`, { value: 'seed' });
    await store.query(
      `INSERT INTO context_variables (context_id, name, ciphertext, iv, tag, wrapped_key, key_id, last4)
       SELECT context_id, 'V' || lpad(g::text, 4, '0'), ciphertext, iv, tag, wrapped_key, key_id, last4 FROM context_variables, generate_series(1, ${MAX_VARIABLES - 1}) g
        WHERE context_id = $1 AND name = 'SEED'`,
      [id],
    );
    const full = await call('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/ONE_TOO_MANY`, { value: 'x' });
    expect(full).toMatchObject({ status: 400, json: { message: 'context "hostile" already holds 1000 environment variables, the most it may; delete one before adding ONE_TOO_MANY' } });
    // Replacing one it holds is still fine, and the list pages through all of them.
    expect((await call('acme-admin', 'PUT', `/api/v2/context/${id}/environment-variable/SEED`, { value: 'seed 2' })).status).toBe(200);
    let names = 0;
    let pageToken: string | null = null;
    do {
      const page: any = await ok('acme-admin', 'GET', `/api/v2/context/${id}/environment-variable${pageToken ? `?page-token=${pageToken}` : ''}`);
      names += page.items.length;
      pageToken = page.next_page_token;
    } while (pageToken);
    expect(names).toBe(MAX_VARIABLES);
  });

  it('sets and lists values from the CLI, reading a value from standard input and never from the command line', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io: CliIo = { stdout: (t) => void out.push(t), stderr: (t) => void err.push(t), env: {} };
    const client = createApiClient({ url: server.url, token: tokens['acme-admin'] });
    const stdin = async () => SECRETS.cli;
    expect(await contextCommand(['create', 'acme', 'from-cli'], io, client)).toBe(0);
    expect(await contextCommand(['env', 'set', 'gh/acme', 'from-cli', 'CLI_KEY'], io, client, stdin)).toBe(0);
    expect(await contextCommand(['env', 'list', 'acme', 'from-cli'], io, client)).toBe(0);
    expect(out.join('')).toMatch(/CLI_KEY\s+xxxx0006/);
    expect(await envCommand(['set', 'gh/acme/app', 'CLI_KEY'], io, createApiClient({ url: server.url, token: tokens['app-admin'] }), stdin)).toBe(0);
    expect(out.join('')).toMatch(/set CLI_KEY in gh\/acme\/app \(xxxx0006\)/);
    const onArgv = envCommand(['set', 'gh/acme/app', 'CLI_KEY', 'typed-on-argv'], io, client, stdin);
    await expect(onArgv).rejects.toThrow(UsageError);
    await expect(onArgv).rejects.toThrow(/never on the command line/);
    await expect(onArgv).rejects.not.toThrow(/typed-on-argv/);
    expect(await contextCommand(['env', 'unset', 'acme', 'from-cli', 'CLI_KEY'], io, client)).toBe(0);
    expect(await contextCommand(['delete', 'acme', 'from-cli'], io, client)).toBe(0);
    expect([...out, ...err].join('')).not.toContain(SECRETS.cli);
  });

  it('records every change in the audit log, and no value reaches an answer, an audit record or the log', async () => {
    const events = await store.query<{ action: string; result: string; target_type: string | null; detail: unknown; org: string | null }>('SELECT action, result, target_type, detail, org FROM audit_events ORDER BY id');
    const actions = new Set(events.filter((e) => e.result === 'success').map((e) => e.action));
    for (const action of ['context.create', 'context.delete', 'context.variable.put', 'context.variable.delete', 'context.restriction.add', 'context.restriction.delete', 'project.envvar.put', 'project.envvar.delete']) {
      expect([action, actions.has(action)]).toEqual([action, true]);
    }
    const put = events.find((e) => e.action === 'context.variable.put' && e.result === 'success');
    expect(put).toMatchObject({ target_type: 'context', org: 'acme', detail: { variable: expect.any(String), context: expect.any(String) } });
    expect(events.some((e) => e.action === 'context.variable.put' && e.result === 'denied')).toBe(true);

    const everything = [...answers, JSON.stringify(events), ...logLines].join('\n');
    expect(answers.length).toBeGreaterThan(50);
    for (const [what, value] of Object.entries(SECRETS)) {
      if (value.length <= 4) continue;
      expect([what, everything.includes(value)]).toEqual([what, false]);
    }
    // Nor is any value in the database in clear: only ciphertexts and the last four characters.
    const rows = await store.query<Record<string, unknown>>('SELECT * FROM context_variables UNION ALL SELECT * FROM project_variables');
    const stored = Buffer.concat(rows.flatMap((r) => Object.values(r).map((v) => (v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(String(v))))));
    for (const value of Object.values(SECRETS)) if (value.length > 4) expect([value, stored.includes(Buffer.from(value))]).toEqual([value, false]);
  });
});
