import { sweepAudit, type Audit } from '../../runtime/audit/audit-log';
import { run, type CliIo } from '../../runtime/cli/main';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createIdentity } from '../../runtime/identity/identity';
import { createLogger } from '../../runtime/logger';
import { createProjects } from '../../runtime/projects/projects';
import { auditRole } from '../../runtime/roles/audit';
import type { Core } from '../../runtime/roles/core';
import { readSettings } from '../../runtime/settings';
import { startTestGyre, testStores, type TestGyre } from '../support/gyre';

/**
 * The audit log as an admin reads it: every change with who, what, which target, when, from where
 * and its result; a change and its record commit together or not at all; refused and failed
 * attempts recorded; read through the API (paged, by time, per organisation), `gyre audit` and
 * kept for GYRE_AUDIT_RETENTION_DAYS.
 */

const CONFIG = 'version: 2.1\njobs:\n  a:\n    docker: [{image: x}]\n    steps: [{run: "true"}]\nworkflows:\n  w:\n    jobs: [a]\n';

function capture(env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env };
  return { io, out: () => stdout, err: () => stderr };
}

/** An audit record that cannot be written (the audit table refusing it). */
const BROKEN: Audit = {
  record: async (tx) => {
    await tx.query(`INSERT INTO audit_events (actor_login, action, result) VALUES ('x', 'x', 'not-a-result')`);
  },
};

describe.each(testStores())('the audit log (%s)', (store) => {
  let g: TestGyre;
  let viewer: string;
  const as = (token: string, method: string, path: string, body?: unknown) => g.raw(method, path, { headers: { 'Circle-Token': token }, body: body === undefined ? undefined : JSON.stringify(body) });
  const gyre = async (token: string, ...args: string[]) => {
    const c = capture({ GYRE_URL: g.url, GYRE_TOKEN: token });
    const code = await run(args, c.io);
    return { code, out: c.out(), err: c.err() };
  };

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0' } });
    await g.addProject('gh/acme/web', { '.circleci/config.yml': CONFIG });
    await g.addProject('gh/rival/site', { '.circleci/config.yml': CONFIG });
    viewer = (await g.api('POST', '/api/v2/users', { login: 'vera' })).token;
    await g.api('PUT', '/api/v2/organization/gh/acme/members/vera', { role: 'viewer' });
  });
  afterAll(() => g?.stop());

  it('a change and its record commit together: when the record cannot be written, the change is not made', async () => {
    const projects = createProjects({ store: g.gyre.store, forge: createGitForge({ cacheDir: `${g.dataDir}/git-mirrors` }) });
    await expect(projects.setProtectedBranches('gh/acme/web', ['release/*'], BROKEN)).rejects.toThrow(/audit_events/);
    expect((await projects.get('gh/acme/web')).protectedBranches).toEqual([]);
    const identity = createIdentity({ store: g.gyre.store });
    await expect(identity.users.add({ login: 'ghost' }, BROKEN)).rejects.toThrow(/audit_events/);
    await expect(identity.users.get('ghost')).rejects.toThrow(/user not found: ghost/);
    // And with a record that can be written, both are there.
    await g.api('PUT', '/api/v2/project/gh/acme/web/protected-branches', { patterns: ['release/*'] });
    const [record] = (await g.api('GET', '/api/v2/audit?limit=1')).items;
    expect(record).toMatchObject({ action: 'project.protected-branches', actor: { login: 'admin' }, target: { type: 'project', id: 'gh/acme/web' }, result: 'success', detail: { patterns: ['release/*'] } });
  });

  it('records who did what to which target, when and from where; refusals and failures too', async () => {
    const before = new Date().toISOString();
    const { id } = await g.trigger('gh/acme/web');
    expect((await as(viewer, 'POST', '/api/v2/project/gh/acme/web/pipeline', {})).status).toBe(403);
    expect((await as(viewer, 'POST', '/api/v2/project/gh/rival/site/pipeline', {})).status).toBe(404);
    expect((await g.raw('POST', '/api/v2/project/gh/acme/web/pipeline', { body: JSON.stringify({ branch: 'no-such-branch' }) })).status).toBe(400);
    // Reads are not recorded.
    await as(viewer, 'GET', '/api/v2/project/gh/acme/web/pipeline');

    const items = (await g.api('GET', `/api/v2/audit?since=${encodeURIComponent(before)}&order=asc`)).items;
    expect(items.map((e: any) => [e.action, e.actor.login, e.result, e.status])).toEqual([
      ['pipeline.trigger', 'admin', 'success', null],
      ['pipeline.trigger', 'vera', 'denied', 403],
      ['pipeline.trigger', 'vera', 'denied', 404],
      ['pipeline.trigger', 'admin', 'failed', 400],
    ]);
    expect(items[0]).toMatchObject({ target: { type: 'pipeline', id }, organization: 'acme', project: 'gh/acme/web', address: expect.stringContaining('127.0.0.1'), detail: { number: 1, branch: 'main' } });
    expect(Date.parse(items[0].time)).toBeGreaterThanOrEqual(Date.parse(before) - 1000);
    expect(items[1]).toMatchObject({ project: 'gh/acme/web', detail: { message: expect.stringMatching(/needs project:trigger/) } });
    expect(items[3].detail.message).toMatch(/no-such-branch/);
  });

  it('pages through the log by time, in either order, and shows an organisation admin only their organisation', async () => {
    const since = new Date().toISOString();
    for (const name of ['a', 'b', 'c', 'd', 'e']) await g.api('POST', '/api/v2/users', { login: `paged-${name}` });
    const seen: string[] = [];
    let token: string | null = null;
    do {
      const page: any = await g.api('GET', `/api/v2/audit?since=${encodeURIComponent(since)}&limit=2${token ? `&page-token=${token}` : ''}`);
      expect(page.items.length).toBeLessThanOrEqual(2);
      seen.push(...page.items.map((e: any) => e.target.id));
      token = page.next_page_token;
    } while (token);
    expect(seen).toEqual(['paged-e', 'paged-d', 'paged-c', 'paged-b', 'paged-a']);
    const oldest = await g.api('GET', `/api/v2/audit?since=${encodeURIComponent(since)}&order=asc&limit=1`);
    expect(oldest.items[0].target.id).toBe('paged-a');
    expect((await g.raw('GET', '/api/v2/audit?since=yesterday')).body.message).toMatch(/since 'yesterday' is not a time \(allowed: an ISO 8601 time .*24h/);

    // The whole log is for instance admins; an organisation's admins read its records.
    expect((await as(viewer, 'GET', '/api/v2/audit')).status).toBe(403);
    expect((await as(viewer, 'GET', '/api/v2/organization/gh/acme/audit')).status).toBe(403);
    const admin = (await g.api('POST', '/api/v2/users', { login: 'olga' })).token;
    await g.api('PUT', '/api/v2/organization/gh/acme/members/olga', { role: 'admin' });
    await g.trigger('gh/rival/site');
    const orgItems = (await as(admin, 'GET', '/api/v2/organization/gh/acme/audit?limit=1000')).body.items;
    expect(orgItems.length).toBeGreaterThan(0);
    expect(orgItems.every((e: any) => e.organization === 'acme')).toBe(true);
    expect((await as(admin, 'GET', '/api/v2/organization/gh/rival/audit')).status).toBe(404);
  });

  it('gyre audit prints the log from --since, oldest first, as a table or JSON lines', async () => {
    const since = new Date().toISOString();
    await g.api('POST', '/api/v2/organizations', { name: 'gh/umbrella' });
    await g.api('PUT', '/api/v2/organization/gh/umbrella/members/vera', { role: 'member' });
    const jsonl = await gyre(g.token, 'audit', '--since', since, '--format', 'jsonl');
    expect(jsonl.code).toBe(0);
    const lines = jsonl.out.trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((e) => e.action)).toEqual(['org.create', 'org.member.set']);
    expect(lines[1]).toMatchObject({ actor: { login: 'admin' }, target: { type: 'user', id: 'vera' }, organization: 'umbrella', result: 'success', detail: { role: 'member' } });

    const tableOut = await gyre(g.token, 'audit', '--since', since);
    expect(tableOut.out).toMatch(/^TIME\s+ACTOR\s+ACTION\s+TARGET\s+WHERE\s+ADDRESS\s+RESULT\n/);
    expect(tableOut.out).toMatch(/\n\S+Z\s+admin\s+org\.member\.set\s+user vera\s+gh\/umbrella\s+\S*127\.0\.0\.1\s+success\n$/);
    expect(await gyre(g.token, 'audit', '--since', 'last week')).toMatchObject({ code: 2, err: expect.stringMatching(/--since 'last week' is not a time/) });
    expect(await gyre(viewer, 'audit')).toMatchObject({ code: 1, err: expect.stringMatching(/403/) });
  });

  it('keeps records GYRE_AUDIT_RETENTION_DAYS: the audit role deletes older ones at start', async () => {
    const db = g.gyre.store;
    await db.query(`INSERT INTO audit_events (at, actor_login, action, result) VALUES (now() - interval '40 days', 'old', 'old.thing', 'success'), (now() - interval '20 days', 'recent', 'recent.thing', 'success')`);
    expect(await sweepAudit(db, 0)).toBe(0);
    const running = await auditRole.start({ settings: { auditRetentionDays: 30 }, store: db, log: createLogger({ level: 'silent' }) } as unknown as Core);
    await running.stop();
    const left = await db.query<{ action: string }>(`SELECT action FROM audit_events WHERE action IN ('old.thing', 'recent.thing')`);
    expect(left.map((r) => r.action)).toEqual(['recent.thing']);
    expect(() => readSettings({ GYRE_AUDIT_RETENTION_DAYS: 'forever' })).toThrow(/GYRE_AUDIT_RETENTION_DAYS: 'forever' is not a whole number \(allowed: 0 to 36500\)/);
    expect(readSettings({}).auditRetentionDays).toBe(365);
  });
});
