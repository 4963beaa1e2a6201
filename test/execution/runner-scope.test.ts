import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';
import { claimTasks } from '../support/runner-tasks';

/**
 * Runner classes belong to an organisation: `<namespace>/<name>`, and their runners claim only
 * the jobs of projects in that organisation, whoever's config names the class. Runner tokens can
 * be listed (never shown again) and revoked, after which their next claim is refused.
 */
const config = (resourceClass: string) => `version: 2.1
jobs:
  work:
    machine: true
    resource_class: ${resourceClass}
    steps: [{ run: 'true' }]
workflows:
  w:
    jobs: [work]
`;

describe.each(flowStore())('runner scope on %s', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0' } });
  });
  afterAll(() => g?.stop());

  const claimOnce = async (token: string) => {
    const res = await fetch(`${g.url}/api/v2/agent/claim`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ wait_ms: 1500 }) });
    return { status: res.status, body: res.status === 200 ? ((await res.json()) as { task: { projectSlug: string } }) : undefined };
  };

  it('refuses a runner class that names no organisation', async () => {
    const res = await g.raw('POST', '/api/v2/resource-classes', { body: JSON.stringify({ name: 'linux-large', cpu: 2, memory_mb: 2048, driver: 'runner' }) });
    expect(res.status).toBe(400);
    expect(res.body.message).toMatch(/a runner resource class is named <namespace>\/<name>.*'linux-large' is not/);
  });

  it("claims only its organisation's jobs: another organisation's config naming the class waits", async () => {
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/scoped', cpu: 1, memory_mb: 512, driver: 'runner' });
    const token = (await g.api('POST', '/api/v2/resource-classes/acme%2Fscoped/tokens', { label: 'rack 1' })).token as string;
    await g.addProject('evil/borrow', { '.circleci/config.yml': config('acme/scoped') });
    await g.addProject('acme/own', { '.circleci/config.yml': config('acme/scoped') });
    const intruder = await g.trigger('evil/borrow');
    await g.firstJobNumber(intruder.id);
    // Only the intruder's task is queued: nothing for this runner.
    expect(await claimOnce(token)).toEqual({ status: 204, body: undefined });
    await g.trigger('acme/own');
    const [claimed] = await claimTasks(g.url, token, 1);
    expect(claimed.task.projectSlug).toBe('gh/acme/own');
    // The other organisation's job is still waiting.
    expect(await claimOnce(token)).toEqual({ status: 204, body: undefined });
    const [task] = await g.gyre.store.query<{ status: string }>(
      `SELECT t.status FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN projects p ON p.id = j.project_id WHERE p.slug = 'gh/evil/borrow'`,
    );
    expect(task.status).toBe('queued');
  });

  it('lists runner tokens without their secret, and a revoked one is refused at once', async () => {
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/revoke', cpu: 1, memory_mb: 512, driver: 'runner' });
    const token = (await g.api('POST', '/api/v2/resource-classes/acme%2Frevoke/tokens', { label: 'old host' })).token as string;
    expect((await claimOnce(token)).status).toBe(204);
    const { items } = await g.api('GET', '/api/v2/resource-classes/acme%2Frevoke/tokens');
    expect(items).toEqual([{ id: expect.stringMatching(/^[0-9a-f-]{36}$/), label: 'old host', created_at: expect.any(String), last_used_at: expect.any(String) }]);
    expect(JSON.stringify(items)).not.toContain(token.slice(-20));
    const revoked = await g.raw('DELETE', `/api/v2/runner-tokens/${items[0].id}`);
    expect(revoked.status).toBe(204);
    const after = await claimOnce(token);
    expect(after.status).toBe(401);
    expect((await g.api('GET', '/api/v2/resource-classes/acme%2Frevoke/tokens')).items).toEqual([]);
    expect((await g.raw('DELETE', `/api/v2/runner-tokens/${items[0].id}`)).status).toBe(404);
  });
});
