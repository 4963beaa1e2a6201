import type { RouteInfo } from '../../runtime/api/http-app';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Every route × every kind of caller, with the routes read from the running server's router (its
 * onRoute table), so a route added later is covered without editing this file. What each caller
 * may do is written out here, independently of runtime/domain/permissions.ts: a route's declared
 * permission says which callers must get through, which must get a 403 (they can see the project
 * or organisation) and which a 404 (they cannot, and the answer must be the one a project that
 * does not exist gets). Audited routes must leave a record of every call: `success` inside the
 * change's transaction, `denied` for a refusal, `failed` for an error.
 */

type Who =
  | 'instance admin'
  | 'org admin'
  | 'org member'
  | 'org viewer'
  | 'project admin'
  | 'project write'
  | 'project read'
  | 'other org user'
  | 'project token (read)'
  | 'project token (trigger)'
  | 'no token';

const USERS: Who[] = ['instance admin', 'org admin', 'org member', 'org viewer', 'project admin', 'project write', 'project read', 'other org user'];
const TOKENS: Who[] = ['project token (read)', 'project token (trigger)'];
const EVERYONE: Who[] = [...USERS, ...TOKENS, 'no token'];

/** Who may call a route of each permission, on gh/acme/app (or organisation gh/acme). */
const ALLOWED: Record<string, Who[]> = {
  authenticated: [...USERS, ...TOKENS],
  'user:self': USERS,
  'instance:admin': ['instance admin'],
  'org:read': ['instance admin', 'org admin', 'org member', 'org viewer'],
  'org:admin': ['instance admin', 'org admin'],
  'project:read': ['instance admin', 'org admin', 'org member', 'org viewer', 'project admin', 'project write', 'project read', ...TOKENS],
  'project:trigger': ['instance admin', 'org admin', 'org member', 'project admin', 'project write', 'project token (trigger)'],
  'project:admin': ['instance admin', 'org admin', 'project admin'],
};
/** Who can see gh/acme and gh/acme/app at all (refused with 403 rather than 404). */
const SEES_ACME: Who[] = ['instance admin', 'org admin', 'org member', 'org viewer', 'project admin', 'project write', 'project read', ...TOKENS];

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo built
workflows:
  main:
    jobs:
      - build
      - hold:
          type: approval
`;

interface Call {
  readonly route: RouteInfo;
  readonly who: Who;
  readonly status: number;
  readonly message?: string;
}

describe.each(flowStore())('every route × every role (%s)', (store) => {
  let g: TestGyre;
  const tokens = new Map<Who, string>();
  const tokenIds = new Map<Who, string>();
  const fixtures: Record<string, string> = {};
  const calls: Call[] = [];

  const send = async (method: string, path: string, token: string | undefined, body?: unknown) => {
    const res = await fetch(g.url + path, {
      method,
      headers: { ...(token ? { 'Circle-Token': token } : {}), ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json };
  };
  const admin = async (method: string, path: string, body?: unknown) => {
    const r = await send(method, path, g.token, body);
    if (r.status >= 400) throw new Error(`${method} ${path} → ${r.status}: ${JSON.stringify(r.json)}`);
    return r.json;
  };

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RATE_LIMIT_TOKEN: '0', GYRE_RATE_LIMIT_ANONYMOUS: '0', GYRE_RUNNER_SLOTS: '2' } });
    await g.addProject('gh/acme/app', { '.circleci/config.yml': CONFIG });
    await g.addProject('gh/acme/other', { '.circleci/config.yml': CONFIG });
    await g.addProject('gh/rival/thing', { '.circleci/config.yml': CONFIG });
    tokens.set('instance admin', g.token);

    const logins: [Who, string][] = [
      ['org admin', 'org-admin'],
      ['org member', 'org-member'],
      ['org viewer', 'org-viewer'],
      ['project admin', 'proj-admin'],
      ['project write', 'proj-write'],
      ['project read', 'proj-read'],
      ['other org user', 'outsider'],
    ];
    for (const [who, login] of [...logins, ['no token' as Who, 'bystander'] as [Who, string]]) {
      const made = await admin('POST', '/api/v2/users', { login });
      if (who !== 'no token') tokens.set(who, made.token);
      if (login === 'bystander') fixtures.userId = made.id;
    }
    await admin('PUT', '/api/v2/organization/gh/acme/members/org-admin', { role: 'admin' });
    await admin('PUT', '/api/v2/organization/gh/acme/members/org-member', { role: 'member' });
    await admin('PUT', '/api/v2/organization/gh/acme/members/org-viewer', { role: 'viewer' });
    await admin('PUT', '/api/v2/project/gh/acme/app/members/proj-admin', { role: 'admin' });
    await admin('PUT', '/api/v2/project/gh/acme/app/members/proj-write', { role: 'write' });
    await admin('PUT', '/api/v2/project/gh/acme/app/members/proj-read', { role: 'read' });
    await admin('PUT', '/api/v2/organization/gh/rival/members/outsider', { role: 'admin' });
    await admin('PUT', '/api/v2/project/gh/rival/thing/members/outsider', { role: 'admin' });
    tokens.set('project token (read)', (await admin('POST', '/api/v2/project/gh/acme/app/tokens', { scope: 'read', label: 'ci read' })).token);
    tokens.set('project token (trigger)', (await admin('POST', '/api/v2/project/gh/acme/app/tokens', { scope: 'trigger', label: 'ci trigger' })).token);
    for (const [who, token] of tokens) {
      const own = await send('GET', '/api/v2/me/tokens', token);
      // A project token has no personal tokens to list: its id comes from the project's list.
      if (own.status === 200) tokenIds.set(who, own.json.items[0].id);
    }
    for (const t of (await admin('GET', '/api/v2/project/gh/acme/app/tokens')).items) tokenIds.set(t.scope === 'read' ? 'project token (read)' : 'project token (trigger)', t.id);
    // Tokens for the revoke routes to aim at, that no caller here uses.
    fixtures.meToken = (await admin('POST', '/api/v2/me/tokens', { label: 'spare' })).id;
    fixtures.projectToken = (await admin('POST', '/api/v2/project/gh/acme/app/tokens', { scope: 'read', label: 'spare' })).id;
    // A context of gh/acme for the /context/:id routes (runtime/secrets), when they are served.
    if (g.gyre.routes.some((r) => r.url === '/api/v2/context')) fixtures.context = (await admin('POST', '/api/v2/context', { name: 'matrix', owner: { slug: 'gh/acme' } })).id;
    // A schedule of gh/acme/app for the /schedule/:id routes (runtime/schedules), at an hour it does not fire in during the test.
    const SCHEDULE = { timetable: { 'per-hour': 1, 'hours-of-day': [(new Date().getUTCHours() + 12) % 24], 'days-of-week': ['MON'] }, 'attribution-actor': 'system', parameters: { branch: 'main' } };
    Object.assign(fixtures, { scheduleBody: JSON.stringify({ name: 'from the matrix', ...SCHEDULE }) });
    fixtures.schedule = (await admin('POST', '/api/v2/project/gh/acme/app/schedule', { name: 'matrix', ...SCHEDULE })).id;
    // The organisation and project by id, for the OIDC custom-claims routes.
    fixtures.orgId = (await admin('GET', '/api/v2/organization/gh/acme')).id;
    fixtures.projectId = (await admin('GET', '/api/v2/project/gh/acme/app')).id;
    // An outbound webhook of gh/acme/app for the /webhook/:id routes (runtime/notifications).
    if (g.gyre.routes.some((r) => r.url === '/api/v2/webhook')) {
      fixtures.webhook = (await admin('POST', '/api/v2/webhook', { name: 'matrix', events: ['workflow-completed'], url: 'https://hooks.example.com/matrix', 'verify-tls': true, 'signing-secret': 'matrix secret', scope: { id: fixtures.projectId, type: 'project' } })).id;
    }

    const { id } = await g.trigger('gh/acme/app');
    fixtures.pipeline = id;
    for (;;) {
      const wf = (await admin('GET', `/api/v2/pipeline/${id}/workflow`)).items[0];
      const jobs = wf ? (await admin('GET', `/api/v2/workflow/${wf.id}/job`)).items : [];
      const build = jobs.find((j: any) => j.name === 'build');
      const hold = jobs.find((j: any) => j.name === 'hold');
      if (build?.status === 'success' && hold?.status === 'on_hold') {
        Object.assign(fixtures, { workflow: wf.id, job: String(build.job_number), jobId: build.id, approval: hold.id });
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }, 120_000);

  afterAll(() => g?.stop());

  /** A value for each path parameter of a route; a parameter with none fails the test, naming it. */
  function pathOf(route: RouteInfo): string {
    return route.url
      .replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => {
        const value = paramValue(route, name);
        if (value === undefined) throw new Error(`no test value for :${name} of ${route.method} ${route.url}: add one to paramValue in ${__filename}`);
        return encodeURIComponent(value);
      })
      .replace(/\*$/, 'gh/acme/app');
  }

  function paramValue(route: RouteInfo, name: string): string | undefined {
    // Agent and public routes refuse an API token, or check their own key, whatever the path says.
    if (route.auth !== 'user') return name === 'id' ? '00000000-0000-4000-8000-000000000000' : name === 'index' ? '0' : 'x';
    switch (name) {
      case 'vcs':
        return 'gh';
      case 'org':
        return 'acme';
      case 'repo':
        return 'app';
      case 'number':
        return fixtures.job;
      case 'requestId':
        return fixtures.approval;
      case 'login':
        return 'bystander';
      case 'tokenId':
        return route.url.startsWith('/api/v2/me/') ? fixtures.meToken : fixtures.projectToken;
      case 'scope':
        return 'project';
      case 'name':
        return route.url.includes('/environment-variable/') ? 'MATRIX_VAR' : 'no-such-thing';
      case 'orgID':
        return fixtures.orgId;
      case 'fingerprint':
        return 'c9:0b:1c:4f:d5:65:56:b9:ad:88:f9:81:2b:37:74:2f';
      case 'restrictionId':
        return '00000000-0000-4000-8000-000000000000';
      case 'signature':
        return 'not-a-signature';
      // API v1.1 (runtime/api/v1-routes.ts): a branch's builds, a step's output on parallel run 0.
      case 'branch':
        return 'main';
      case 'step':
      case 'index':
        return '0';
      case 'id':
        if (route.of === 'pipeline') return fixtures.pipeline;
        if (route.of === 'workflow') return fixtures.workflow;
        if (route.of === 'job') return fixtures.jobId;
        if (route.of === 'context') return fixtures.context;
        if (route.of === 'schedule') return fixtures.schedule;
        if (route.of === 'webhook') return fixtures.webhook;
        if (route.of === 'org-id') return fixtures.orgId;
        if (route.of === 'project-id') return fixtures.projectId;
        if (route.url.startsWith('/api/v2/user/')) return fixtures.userId;
        if (route.url.startsWith('/api/v2/runner-tokens/')) return '00000000-0000-4000-8000-000000000000';
        return undefined;
      default:
        return undefined;
    }
  }

  /** A body that gets past validation where one is needed to reach the change; `{}` elsewhere. */
  function bodyOf(route: RouteInfo): unknown {
    if (route.method === 'GET' || route.method === 'DELETE') return undefined;
    if (/\/members\/:login$/.test(route.url)) return { role: route.url.includes('/organization/') ? 'viewer' : 'read' };
    if (route.url.endsWith('/tokens') && route.url.includes('/project/')) return { scope: 'read', label: 'from the matrix' };
    if (route.url === '/api/v2/project/:vcs/:org/:repo') return { repo_url: '/nowhere' };
    if (route.url.endsWith('/environment-variable/:name')) return { value: 'matrix value' };
    if (route.url.endsWith('/envvar')) return { name: 'MATRIX_VAR', value: 'matrix value' };
    if (route.url.endsWith('/restrictions')) return { restriction_type: 'group', restriction_value: 'matrix' };
    if (route.method === 'POST' && route.url.endsWith('/schedule')) return JSON.parse(fixtures.scheduleBody);
    // Reruns only the approval the workflow cancel before it left canceled: nothing runs.
    if (route.url.endsWith('/rerun')) return { from_failed: true };
    return {};
  }

  /** The 404 a target that does not exist answers: an invisible one must answer the same. */
  function notFoundMessage(route: RouteInfo): string | undefined {
    if (route.of === 'context') return `context not found: ${fixtures.context}`;
    if (route.of === 'schedule') return `schedule not found: ${fixtures.schedule}`;
    if (route.of === 'webhook') return `webhook not found: ${fixtures.webhook}`;
    if (route.of === 'org-id') return `organization not found: ${fixtures.orgId}`;
    if (route.of === 'project-id') return `project not found: ${fixtures.projectId}`;
    const scope = route.permission?.split(':')[0];
    if (scope === 'org') return 'organization not found: gh/acme';
    if (scope !== 'project') return undefined;
    if (route.of === 'pipeline') return `pipeline not found: ${fixtures.pipeline}`;
    if (route.of === 'workflow') return `workflow not found: ${fixtures.workflow}`;
    if (route.of === 'job') return `job not found: ${fixtures.jobId}`;
    return 'project not found: gh/acme/app';
  }

  it('reads the routes from the router, and every route declares who may call it', () => {
    const routes = g.gyre.routes;
    expect(routes.length).toBeGreaterThan(40);
    const undeclared = routes.filter((r) => r.auth === 'user' && !r.permission).map((r) => `${r.method} ${r.url}`);
    expect(undeclared).toEqual([]);
    // A route that is not a read says whether it changes something (its audit action) or not.
    const unsaid = routes.filter((r) => r.auth === 'user' && r.method !== 'GET' && r.action === undefined).map((r) => `${r.method} ${r.url}`);
    expect(unsaid).toEqual([]);
    expect(routes.filter((r) => r.auth === 'public').map((r) => `${r.method} ${r.url}`)).toEqual(
      expect.arrayContaining(['GET /healthz', 'GET /', 'GET /login', 'POST /api/v2/pipeline/continue', 'GET /output/artifact/:id/:signature/:name']),
    );
  });

  it('lets through exactly the callers each route permits: 403 for what they can see, 404 for what they cannot, 401 without a token', async () => {
    const problems: string[] = [];
    // Refusals first, then the calls that get through, so a change made by one caller cannot hide
    // another's refusal; the instance admin goes last.
    const order = [...EVERYONE].sort((a, b) => Number(a === 'instance admin') - Number(b === 'instance admin'));
    for (const route of g.gyre.routes) {
      const path = pathOf(route);
      for (const who of order) {
        const token = tokens.get(who);
        const res = await send(route.method, path, token, bodyOf(route));
        calls.push({ route, who, status: res.status, message: res.json?.message });
        // The context every /context/:id route aims at comes back after a caller deleted it, for the next caller.
        if (route.method === 'DELETE' && route.url === '/api/v2/context/:id' && res.status === 200) {
          await g.gyre.store.query(`INSERT INTO contexts (id, organization_id, name) SELECT $1, id, 'matrix' FROM organizations WHERE name = 'acme'`, [fixtures.context]);
        }
        // Likewise the schedule every /schedule/:id route aims at.
        if (route.method === 'DELETE' && route.url === '/api/v2/schedule/:id' && res.status === 200) {
          await g.gyre.store.query(
            `INSERT INTO schedules (id, project_id, name, timetable, attribution_actor, parameters) SELECT $1, id, 'matrix', $2, 'system', '{"branch": "main"}' FROM projects WHERE slug = 'gh/acme/app'`,
            [fixtures.schedule, JSON.stringify(JSON.parse(fixtures.scheduleBody).timetable)],
          );
        }
        // Likewise the webhook every /webhook/:id route aims at (its secret is not opened by these routes).
        if (route.method === 'DELETE' && route.url === '/api/v2/webhook/:id' && res.status === 200) {
          await g.gyre.store.query(
            `INSERT INTO webhooks (id, project_id, name, url, events, secret_hint, ciphertext, iv, tag, wrapped_key, key_id)
             SELECT $1, id, 'matrix', 'https://hooks.example.com/matrix', '{workflow-completed}', 'xxxx', '\\x00', '\\x00', '\\x00', '\\x00', 'none' FROM projects WHERE slug = 'gh/acme/app'`,
            [fixtures.webhook],
          );
        }
        const where = `${route.method} ${route.url} as ${who}: ${res.status} ${res.json?.message ?? ''}`;
        if (route.auth === 'public') {
          if (res.status === 401 || res.status === 403) problems.push(`${where} (a public route)`);
          continue;
        }
        if (route.auth !== 'user') {
          // Agent routes take task and runner tokens only: an API token is no credential there.
          if (res.status !== 401) problems.push(`${where} (an agent route; expected 401)`);
          continue;
        }
        if (who === 'no token') {
          if (res.status !== 401) problems.push(`${where} (expected 401)`);
          continue;
        }
        const permission = route.permission ?? 'undeclared';
        const allowed = (ALLOWED[permission] ?? ['instance admin']).includes(who);
        const scope = permission.split(':')[0];
        const visible = scope === 'org' || scope === 'project' ? SEES_ACME.includes(who) : true;
        if (allowed) {
          if (res.status === 401 || res.status === 403) problems.push(`${where} (expected to get through)`);
          if (res.status === 404 && res.json?.message === notFoundMessage(route)) problems.push(`${where} (expected to see the target)`);
        } else if (visible) {
          if (res.status !== 403) problems.push(`${where} (expected 403)`);
        } else if (res.status !== 404 || res.json?.message !== notFoundMessage(route)) {
          problems.push(`${where} (expected 404 '${notFoundMessage(route)}', as for one that does not exist)`);
        }
      }
    }
    expect(problems).toEqual([]);
  }, 300_000);

  it('records every call to an audited route: success in the change, denied for a refusal, failed for an error', async () => {
    expect(calls.length).toBeGreaterThan(0);
    const records: any[] = [];
    let pageToken: string | null = null;
    do {
      const page: any = await admin('GET', `/api/v2/audit?order=asc&limit=1000${pageToken ? `&page-token=${pageToken}` : ''}`);
      records.push(...page.items);
      pageToken = page.next_page_token;
    } while (pageToken);
    const problems: string[] = [];
    for (const call of calls) {
      const action = call.route.action;
      if (typeof action !== 'string' || call.who === 'no token' || call.route.auth !== 'user') continue;
      const tokenId = tokenIds.get(call.who);
      const expected = call.status < 400 ? 'success' : call.status === 403 || (call.status === 404 && call.message === notFoundMessage(call.route) && !(ALLOWED[call.route.permission!] ?? []).includes(call.who)) ? 'denied' : 'failed';
      const found = records.filter((r) => r.action === action && r.actor.token_id === tokenId && r.result === expected && (expected === 'success' || r.status === call.status));
      if (found.length === 0) problems.push(`${call.route.method} ${call.route.url} as ${call.who} (${call.status}): no '${expected}' record of ${action}`);
      if (expected === 'success' && found.some((r) => r.detail.recorded_after_answer)) problems.push(`${call.route.method} ${call.route.url}: its change was not recorded in its own transaction`);
    }
    expect(problems).toEqual([]);
    // Who, what, which target, from where: one record in full.
    const trigger = records.find((r) => r.action === 'pipeline.trigger' && r.result === 'success' && r.actor.token_id === tokenIds.get('project write'));
    expect(trigger).toMatchObject({
      actor: { login: 'proj-write', token_kind: 'personal' },
      target: { type: 'pipeline', id: expect.stringMatching(/^[0-9a-f-]{36}$/) },
      organization: 'acme',
      project: 'gh/acme/app',
      address: expect.stringMatching(/127\.0\.0\.1/),
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
  });
});
