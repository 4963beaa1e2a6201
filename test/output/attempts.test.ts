import { createAgentClient } from '../../runtime/agent/http-reporter';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { startTestGyre, testStores, type TestGyre } from '../support/gyre';
import { claimTasks, configOnClass, runnerClass } from '../support/runner-tasks';

/**
 * File steps write under their lease: rows carry the attempt that wrote them, a write from an
 * attempt that lost its task is refused and stores nothing, and the API shows the artifacts and
 * test results of each node's latest attempt only.
 */
const CLASS = 'acme/attempts';

async function* bytes(text: string): AsyncIterable<Uint8Array> {
  yield Buffer.from(text);
}

describe.each(testStores())('file steps across attempts on %s', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    // A short lease, so the first attempt can be lost quickly.
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0', GYRE_LEASE_TTL_MS: '1000', GYRE_MAX_ATTEMPTS: '3' } });
  });
  afterAll(() => g?.stop());

  it("shows the latest attempt's artifacts and test results, and refuses the lost attempt's late writes", async () => {
    const token = await runnerClass(g, CLASS);
    await g.addProject('acme/retried', { '.circleci/config.yml': configOnClass(CLASS) });
    const { id } = await g.trigger('acme/retried');
    const jobNumber = await g.firstJobNumber(id);

    const [first] = await claimTasks(g.url, token, 1);
    const firstOutput = createAgentClient({ url: g.url, token: first.token, taskId: first.task.taskId }).output();
    await firstOutput.uploadArtifact(first.task, 'from-attempt-1.txt', bytes('one'));
    await firstOutput.storeTestResults(first.task, [{ name: 't', classname: 'c', file: 'f', result: 'failure', message: 'first', run_time: 1 }]);
    // The first attempt goes silent; its lease lapses and the task is claimed again.
    const [second] = await claimTasks(g.url, token, 1, 'second-runner');
    expect(second.task.taskId).toBe(first.task.taskId);
    const secondOutput = createAgentClient({ url: g.url, token: second.token, taskId: second.task.taskId }).output();
    await secondOutput.uploadArtifact(second.task, 'from-attempt-2.txt', bytes('two'));
    await secondOutput.storeTestResults(second.task, [{ name: 't', classname: 'c', file: 'f', result: 'success', message: '', run_time: 1 }]);
    // The first attempt wakes up and writes again: refused, nothing stored.
    await expect(firstOutput.uploadArtifact(first.task, 'late-from-attempt-1.txt', bytes('late'))).rejects.toBeInstanceOf(StaleLeaseError);

    const rows = await g.gyre.store.query<{ path: string; attempt: number }>('SELECT path, attempt FROM artifacts WHERE job_id = $1 ORDER BY path', [first.task.jobId]);
    expect(rows).toEqual([
      { path: 'from-attempt-1.txt', attempt: 1 },
      { path: 'from-attempt-2.txt', attempt: 2 },
    ]);
    const artifacts = await g.api('GET', `/api/v2/project/gh/acme/retried/${jobNumber}/artifacts`);
    expect(artifacts.items.map((a: { path: string }) => a.path)).toEqual(['from-attempt-2.txt']);
    const tests = await g.api('GET', `/api/v2/project/gh/acme/retried/${jobNumber}/tests`);
    expect(tests.items).toEqual([expect.objectContaining({ name: 't', result: 'success' })]);
  }, 60_000);
});
