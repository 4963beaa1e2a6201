import { randomUUID } from 'node:crypto';
import { createGitHubRoleSource, SYNC_ACTION, type GitHubRoleSource } from '../../runtime/identity/github-roles';
import { createIdentity, type Identity } from '../../runtime/identity/identity';
import { dropSourcedRole, keepSourcedRole } from '../../runtime/identity/sql/github-roles';
import type { Store } from '../../runtime/store/store';
import { flowStore, openTestStore } from '../support/database';
import { githubResponseCheck, startGitHubStandIn, type GitHubStandIn } from '../support/github-standin';

/**
 * Project roles kept in line with GitHub repository permissions, as an admin sees them: people who
 * signed in with GitHub get the role their repository permission gives on its project, lose it
 * when GitHub takes it away, and keep whatever role was set in Gyre itself. Each change is in the
 * audit log; a GitHub that fails leaves every role as it was and the failure is reported.
 */

const ACCOUNTS = {
  alice: { id: 101, login: 'alice' },
  bob: { id: 102, login: 'bob' },
  carol: { id: 103, login: 'carol' },
  dave: { id: 104, login: 'dave' },
  erin: { id: 105, login: 'erin' },
  frank: { id: 106, login: 'frank' },
  grace: { id: 107, login: 'grace' },
};

describe.each(flowStore())('GitHub repository roles (%s)', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let identity: Identity;
  let gh: GitHubStandIn;
  let source: GitHubRoleSource;
  let n = 0;

  /** A Gyre user for this test (logins are unique across tests), linked to a GitHub account unless `github` is null. */
  const person = async (who: keyof typeof ACCOUNTS, github: { id: number; login: string } | null = ACCOUNTS[who]) => {
    const { user } = await identity.users.add({ login: `${who}-${n}` });
    if (github) await store.query('INSERT INTO user_identities (provider, subject, user_id, login) VALUES ($1, $2, $3, $4)', ['github', String(github.id), user.id, github.login]);
    return user;
  };
  const project = async (slug: string) => {
    const [, org, name] = slug.split('/');
    const id = randomUUID();
    await store.query('INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, $2, $3, $4, $5)', [id, slug, org, name, `https://ghe.example.com/${org}/${name}.git`]);
    return { id, slug };
  };
  /** A project's members as `login:role:source`, without the per-test suffix. */
  const members = async (p: { id: string }) =>
    (await identity.orgs.projectMembers(p.id)).map((m) => `${m.login.replace(/-\d+$/, '')}:${m.role}:${m.source}`);
  const syncs = async () =>
    (
      await store.query<{ actor_login: string; action: string; target_id: string; org: string; project: string; result: string; detail: Record<string, unknown> }>(
        'SELECT actor_login, action, target_id, org, project, result, detail FROM audit_events WHERE action = $1 ORDER BY id',
        [SYNC_ACTION],
      )
    ).map((r) => ({ ...r, target_id: r.target_id.replace(/-\d+$/, '') }));
  const permissionRequests = () => gh.requests.filter((r) => r.path.endsWith('/permission'));

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
    identity = createIdentity({ store });
    gh = await startGitHubStandIn({ accounts: Object.values(ACCOUNTS) });
    // A generous time budget for calls that answer (a 300 ms one lost to a stalled event loop
    // under load); the case about silence makes its own hasty source.
    source = createGitHubRoleSource({ store, apiUrl: gh.apiUrl, token: gh.serverToken, timeoutMs: 10_000, intervalMs: 60_000 });
  });
  afterAll(async () => {
    await gh?.stop();
    await store?.close();
    await drop?.();
  });
  beforeEach(async () => {
    n += 1;
    gh.fail(undefined);
    gh.override('repos/get-collaborator-permission-level', undefined);
    gh.requests.length = 0;
    await store.query('DELETE FROM projects');
    await store.query('DELETE FROM user_identities');
    await store.query('DELETE FROM audit_events WHERE action = $1', [SYNC_ACTION]);
  });

  it('maps repository permissions onto project roles, records each change, and changes nothing on the next run', async () => {
    const repo = `acme/web-${n}`;
    const web = await project(`gh/${repo}`);
    const elsewhere = await project(`gh/acme/not-on-github-${n}`);
    for (const who of Object.keys(ACCOUNTS) as (keyof typeof ACCOUNTS)[]) await person(who);
    gh.grant(repo, 'alice', 'admin');
    gh.grant(repo, 'bob', 'maintain');
    gh.grant(repo, 'carol', 'triage');
    // dave: no role on the repository (permission none)
    gh.grant(repo, 'erin', { custom: 'security-manager', base: 'write' });
    gh.grant(repo, 'frank', 'write');
    gh.grant(repo, 'grace', 'read');

    const first = source.refresh();
    expect(source.refresh()).toBe(first); // one run at a time
    await first;

    expect(await members(web)).toEqual(['alice:admin:github', 'bob:write:github', 'carol:read:github', 'erin:write:github', 'frank:write:github', 'grace:read:github']);
    expect(await members(elsewhere)).toEqual([]);
    // Gyre asked with its own token, never a person's.
    expect(new Set(permissionRequests().map((r) => r.token))).toEqual(new Set([gh.serverToken]));

    const records = await syncs();
    expect(records).toHaveLength(6);
    expect(records[0]).toEqual({
      actor_login: 'gyre',
      action: 'project.member.sync',
      target_id: 'alice',
      org: 'acme',
      project: `gh/${repo}`,
      result: 'success',
      detail: { source: 'github', role: 'admin', github_login: 'alice' },
    });
    expect(records.map((r) => `${r.target_id}:${r.detail.role}`).sort()).toEqual(['alice:admin', 'bob:write', 'carol:read', 'erin:write', 'frank:write', 'grace:read']);

    await source.refresh();
    expect(await syncs()).toHaveLength(6);
  });

  it('a permission taken away on GitHub removes the role GitHub gave; a lowered one lowers it', async () => {
    const repo = `acme/api-${n}`;
    const api = await project(`gh/${repo}`);
    await person('alice');
    await person('bob');
    gh.grant(repo, 'alice', 'admin');
    gh.grant(repo, 'bob', 'write');
    await source.refresh();
    expect(await members(api)).toEqual(['alice:admin:github', 'bob:write:github']);

    gh.revoke(repo, 'alice');
    gh.grant(repo, 'bob', 'read');
    await source.refresh();
    expect(await members(api)).toEqual(['bob:read:github']);
    expect((await syncs()).slice(2).map((r) => [r.target_id, r.detail])).toEqual([
      ['alice', { source: 'github', role: null, was: 'admin', github_login: 'alice' }],
      ['bob', { source: 'github', role: 'read', was: 'write', github_login: 'bob' }],
    ]);
  });

  it('a role set in Gyre stays whatever GitHub says, and GitHub is not asked about it', async () => {
    const repo = `acme/ops-${n}`;
    const ops = await project(`gh/${repo}`);
    const carol = await person('carol');
    const frank = await person('frank');
    await identity.orgs.setProjectRole(ops, carol.login, 'read');
    await identity.orgs.setProjectRole(ops, frank.login, 'admin');
    gh.grant(repo, 'carol', 'admin');
    // frank has nothing on GitHub
    await source.refresh();
    expect(await members(ops)).toEqual(['carol:read:gyre', 'frank:admin:gyre']);
    expect(await syncs()).toEqual([]);
    expect(permissionRequests()).toEqual([]);
    // Even a write racing a Gyre change (the row appeared after it looked) leaves the Gyre role.
    expect(await store.transaction((tx) => keepSourcedRole(tx, ops.id, carol.id, 'admin', 'github'))).toBe(false);
    expect(await store.transaction((tx) => dropSourcedRole(tx, ops.id, frank.id, 'github'))).toBeUndefined();
    expect(await members(ops)).toEqual(['carol:read:gyre', 'frank:admin:gyre']);
  });

  it('refreshUser, run after a GitHub sign-in, refreshes only that user', async () => {
    const repo = `acme/docs-${n}`;
    const docs = await project(`gh/${repo}`);
    const alice = await person('alice');
    await person('bob');
    gh.grant(repo, 'alice', 'write');
    gh.grant(repo, 'bob', 'admin');
    await source.refreshUser(alice.id);
    expect(await members(docs)).toEqual(['alice:write:github']);
    expect(permissionRequests().map((r) => r.path)).toEqual([`/api/v3/repos/${repo}/collaborators/alice/permission`]);
    await source.refreshUser('not-a-user-id');
    expect(permissionRequests()).toHaveLength(1);
  });

  it('a user no longer linked to GitHub loses the roles GitHub gave, not the ones set in Gyre', async () => {
    const repo = `acme/lib-${n}`;
    const lib = await project(`gh/${repo}`);
    const other = await project(`gh/acme/other-${n}`);
    const alice = await person('alice');
    gh.grant(repo, 'alice', 'admin');
    await source.refresh();
    await identity.orgs.setProjectRole(other, alice.login, 'read');
    await store.query('DELETE FROM user_identities WHERE user_id = $1', [alice.id]);
    await source.refresh();
    expect(await members(lib)).toEqual([]);
    expect(await members(other)).toEqual(['alice:read:gyre']);
    expect((await syncs()).at(-1)?.detail).toEqual({ source: 'github', role: null, was: 'admin', reason: 'no GitHub account linked' });
  });

  it('GitHub answering 500 leaves every role as it was, and the refresh reports it', async () => {
    const repo = `acme/svc-${n}`;
    const svc = await project(`gh/${repo}`);
    await person('alice');
    await person('bob');
    gh.grant(repo, 'alice', 'admin');
    gh.grant(repo, 'bob', 'read');
    await source.refresh();
    const before = await members(svc);
    gh.revoke(repo, 'alice');
    gh.revoke(repo, 'bob');
    gh.fail({ status: 500 });
    await expect(source.refresh()).rejects.toThrow(/GitHub role refresh: 2 of 2 permission checks failed, those roles were left as they were: .*HTTP 500/);
    expect(await members(svc)).toEqual(before);
    expect(await syncs()).toHaveLength(2);
  });

  it('GitHub not answering stops the refresh at the timeout, leaves roles alone, and says where it stopped', async () => {
    const repo = `acme/slow-${n}`;
    const slow = await project(`gh/${repo}`);
    await project(`gh/acme/slow-too-${n}`);
    await person('alice');
    await person('bob');
    gh.grant(repo, 'alice', 'admin');
    await source.refresh();
    gh.revoke(repo, 'alice');
    gh.fail('hang');
    gh.requests.length = 0;
    const hasty = createGitHubRoleSource({ store, apiUrl: gh.apiUrl, token: gh.serverToken, timeoutMs: 300, intervalMs: 60_000 });
    const started = Date.now();
    await expect(hasty.refresh()).rejects.toThrow(/GitHub role refresh stopped at .*did not answer within 300 ms; roles not yet refreshed were left as they were/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await members(slow)).toEqual(['alice:admin:github']);
    // It gave up after the first silence instead of waiting on every project and user.
    expect(permissionRequests()).toHaveLength(1);

    // The rejection is the report: the identity role logs a role source's failure with its name.
    await expect(hasty.refresh()).rejects.toThrow(/stopped at gh\/acme\/slow-\d+ for alice/);
    expect(await members(slow)).toEqual(['alice:admin:github']);
  });

  it('a token GitHub refuses stops the refresh at the first answer; bad settings name the setting', async () => {
    const repo = `acme/tok-${n}`;
    await project(`gh/${repo}`);
    await project(`gh/acme/tok-too-${n}`);
    await person('alice');
    await person('bob');
    gh.grant(repo, 'alice', 'admin');
    const revoked = createGitHubRoleSource({ store, apiUrl: gh.apiUrl, token: 'ghs_revoked', timeoutMs: 10_000, intervalMs: 60_000 });
    await expect(revoked.refresh()).rejects.toThrow(/stopped at gh\/acme\/tok-\d+ for alice: GitHub answered HTTP 401: Bad credentials/);
    expect(permissionRequests()).toHaveLength(1);
    expect(await syncs()).toEqual([]);

    const make = (over: Partial<Parameters<typeof createGitHubRoleSource>[0]>) => () => createGitHubRoleSource({ store, apiUrl: gh.apiUrl, token: 't', intervalMs: 60_000, ...over });
    expect(make({ apiUrl: 'http://ghe.example.com/api/v3' })).toThrow(/GYRE_GITHUB_API_URL: http:\/\/ is allowed only for a loopback address/);
    expect(make({ token: ' ' })).toThrow(/GYRE_GITHUB_TOKEN: must be a GitHub App installation token or a machine user token/);
    expect(make({ intervalMs: 10 })).toThrow(/intervalMs: 10 must be a whole number of milliseconds, at least 1000/);
  });

  it('hostile data gives no role: a login now held by someone else, odd answers, repository names that would leave the path', async () => {
    const repo = `acme/sec-${n}`;
    const sec = await project(`gh/${repo}`);
    await project('gh/acme/..');
    await project('gh/../admin');
    // dave's link names GitHub login "grace" (a login renamed and taken since): on GitHub "grace" is account 107, not his 666.
    await person('dave', { id: 666, login: 'grace' });
    // A link whose login would walk the API path.
    await person('erin', { id: 105, login: '../../../user' });
    gh.grant(repo, 'grace', 'admin');
    await source.refresh();
    expect(await members(sec)).toEqual([]);
    expect(permissionRequests().map((r) => r.path)).toEqual([`/api/v3/repos/${repo}/collaborators/grace/permission`]);
    expect(gh.requests.every((r) => r.path.startsWith('/api/v3/repos/acme/sec-'))).toBe(true);

    // Answers GitHub does not give: a role name like an object key, an unknown permission, a string id.
    const carol = await person('carol');
    for (const answer of [
      { permission: 'admin', role_name: '__proto__', user: { id: 'x' } },
      { permission: 'constructor', role_name: 'toString', user: { id: 103 } },
      { permission: 'owner', role_name: 'owner', user: { id: 103 } },
      { permission: 'admin', role_name: 'admin', user: { id: '103' } },
      { permission: 'admin', role_name: 'admin', user: null },
      'admin',
    ]) {
      gh.override('repos/get-collaborator-permission-level', answer);
      await source.refreshUser(carol.id);
      expect({ answer, members: await members(sec) }).toEqual({ answer, members: [] });
    }
  });

  it("every answer the stand-in gave validates against GitHub's OpenAPI description", () => {
    const permission = gh.sent.filter((a) => a.operation === 'repos/get-collaborator-permission-level');
    expect(permission.some((a) => a.status === 200)).toBe(true);
    for (const answer of permission) {
      const check = githubResponseCheck(answer.operation, answer.status);
      if (check) expect({ status: answer.status, errors: check(answer.body) }).toEqual({ status: answer.status, errors: [] });
    }
  });
});
