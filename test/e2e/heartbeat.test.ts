import { startTestGyre, testStores, type TestGyre } from '../support/gyre';

describe.each(testStores())('leases on %s', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    // A lease of 2.5 s: a step that runs for several times that only survives if heartbeats extend
    // it (600 ms, then 1 s, could be lost on a loaded CI machine to a pause of the server's own
    // event loop, which this test's server shares with the agent).
    g = await startTestGyre({ store, env: { GYRE_LEASE_TTL_MS: '2500', GYRE_MAX_ATTEMPTS: '1' } });
  });
  afterAll(() => g?.stop());

  it('keeps a job that outlives its lease TTL on its first attempt through heartbeats', async () => {
    await g.addProject('gh/acme/long', {
      '.circleci/config.yml': 'version: 2.1\njobs:\n  long:\n    docker: [{image: x}]\n    steps:\n      - run: sleep 8; echo survived\nworkflows:\n  w:\n    jobs: [long]\n',
    });
    const { id } = await g.trigger('gh/acme/long');
    const { jobs } = await g.waitForPipeline(id);
    expect(jobs.long.status).toBe('success');
    const steps = (await g.api('GET', `/api/v2/project/gh/acme/long/job/${jobs.long.job_number}/steps`)).items;
    expect(steps).toEqual([expect.objectContaining({ attempt: 1, status: 'success', exit_code: 0 })]);
    expect(steps[0].duration_ms).toBeGreaterThan(7500);
  });
});
