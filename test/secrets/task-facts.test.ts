import { randomUUID } from 'node:crypto';
import type { JobSpec } from '../../runtime/config/plan';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { createDispatcher } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { readTaskFacts } from '../../runtime/secrets/task-secrets';
import type { Store } from '../../runtime/store/store';
import { openTestStore, testStores } from '../support/database';
import { queueJobs } from '../support/queued-jobs';

/**
 * The built-in runner's secrets are decided by what its claim read (TASK_FACTS), not read again
 * under the lease: what the claim carries must be what a runner's request under the lease reads,
 * field for field, for every input the secrets depend on (the job's contexts, the project and its
 * organisation, the ref, who started the workflow, a fork, the event for context expressions).
 */
const spec: JobSpec = {
  executor: { kind: 'shell' },
  steps: [
    { type: 'checkout', name: 'Checkout code' },
    { type: 'run', name: 'hello', command: 'echo hi', when: 'on_success' },
  ],
  environment: {},
  workingDirectory: '~/project',
  parallelism: 1,
};

describe.each(testStores())('the facts a claim carries for the secrets, on %s', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  const log = createLogger({ level: 'silent' });

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
  });
  afterAll(async () => {
    await store.close();
    await drop?.();
  });

  it('are what the lease reads, and a stale lease reads none', async () => {
    const dispatcher = createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    const [actor, rerunner, orgId] = [randomUUID(), randomUUID(), randomUUID()];
    await store.query(`INSERT INTO users (id, login, name) VALUES ($1, $2, 'a'), ($3, $4, 'b')`, [actor, `a-${actor}`, rerunner, `b-${rerunner}`]);
    const [jobId] = await queueJobs(store, dispatcher, [spec]);
    const org = `org-${orgId.slice(0, 8)}`;
    await store.query(`INSERT INTO organizations (id, name) VALUES ($1, $2)`, [orgId, org]);
    await store.query(`UPDATE projects SET org = $2, repo_url = 'git@example.com:o/r.git' WHERE id = (SELECT project_id FROM jobs WHERE id = $1)`, [jobId, org]);
    await store.query(`UPDATE jobs SET contexts = '["deploy-creds", "release"]'::jsonb WHERE id = $1`, [jobId]);
    await store.query(
      `UPDATE pipelines SET branch = 'feature/x', tag = NULL, actor_id = $2, from_fork = true, trigger_type = 'webhook', event = '{"name": "pull_request", "action": "opened"}'::jsonb
        WHERE id = (SELECT w.pipeline_id FROM jobs j JOIN workflows w ON w.id = j.workflow_id WHERE j.id = $1)`,
      [jobId, actor],
    );
    await store.query(`UPDATE workflows SET started_by = $2 WHERE id = (SELECT workflow_id FROM jobs WHERE id = $1)`, [jobId, rerunner]);

    const claimed = (await dispatcher.claim('agent-a', ['*']))!;
    expect(claimed.task.jobId).toBe(jobId);
    const read = await readTaskFacts(store, claimed.lease);
    expect(claimed.facts).toEqual(read.facts);
    expect(claimed.facts).toMatchObject({
      job_id: jobId,
      contexts: ['deploy-creds', 'release'],
      org_id: orgId,
      repo_url: 'git@example.com:o/r.git',
      branch: 'feature/x',
      tag: null,
      // A rerun's actor is who asked for it.
      actor_id: rerunner,
      from_fork: true,
      trigger_type: 'webhook',
      event: { name: 'pull_request', action: 'opened' },
      // The project's row as the contexts' checks need it: not read again for the secrets.
      project_org: org,
      project_slug: expect.stringMatching(/^gh\/o\//),
      forks_receive_secret_env_vars: false,
    });
    // The steps the SSH keys are chosen by: the claimed spec's, as the lease reads them.
    expect(claimed.task.spec.steps).toEqual(read.steps);

    await expect(readTaskFacts(store, { ...claimed.lease, leaseId: randomUUID() })).rejects.toBeInstanceOf(StaleLeaseError);
    await dispatcher.completeTask(claimed.lease, 'success');
    await expect(readTaskFacts(store, claimed.lease)).rejects.toBeInstanceOf(StaleLeaseError);
  });
});
