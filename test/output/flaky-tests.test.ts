import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

// A test is flaky when it both passed and failed on the same revision. The job's command decides
// by a marker file outside the repository: the first run writes it and fails `sometimes`, the
// second run finds it and passes; `always` passes both times.
function config(marker: string): string {
  return `version: 2.1
jobs:
  unit:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: Run the tests
          command: |
            mkdir -p reports
            if [ -f "${marker}" ]; then
              sometimes='<testcase classname="net.retry" name="sometimes" time="0.2" file="test/retry.test.js"/>'
            else
              touch "${marker}"
              sometimes='<testcase classname="net.retry" name="sometimes" time="0.2" file="test/retry.test.js"><failure message="timed out"/></testcase>'
            fi
            printf '<testsuite name="unit"><testcase classname="math" name="always" time="0.01" file="test/math.test.js"/>%s</testsuite>\\n' "$sometimes" > reports/junit.xml
      - store_test_results: { path: reports }
workflows:
  main:
    jobs: [unit]
`;
}

describe.each(flowStore())('flaky tests on %s', (store) => {
  let gyre: TestGyre;
  let markerDir: string;

  beforeAll(async () => {
    markerDir = mkdtempSync(join(tmpdir(), 'gyre-flaky-'));
    gyre = await startTestGyre({ store });
    await gyre.addProject('gh/acme/flaky', { '.circleci/config.yml': config(join(markerDir, 'ran-once')) });
  }, 60_000);

  afterAll(async () => {
    await gyre?.stop();
    if (markerDir) rmSync(markerDir, { recursive: true, force: true });
  });

  async function runOnce(): Promise<{ revision: string; number: number; jobNumber: number; results: Record<string, string> }> {
    const { id } = await gyre.trigger('gh/acme/flaky');
    const { pipeline, jobs } = await gyre.waitForPipeline(id);
    expect(jobs.unit.status).toBe('success');
    const tests = (await gyre.api('GET', `/api/v2/project/gh/acme/flaky/${jobs.unit.job_number}/tests`)).items;
    return { revision: pipeline.vcs.revision, number: pipeline.number, jobNumber: jobs.unit.job_number, results: Object.fromEntries(tests.map((t: any) => [t.name, t.result])) };
  }

  test('a test that passed and failed on the same revision is reported, one that always passed is not', async () => {
    const first = await runOnce();
    expect(first.results).toEqual({ always: 'success', sometimes: 'failure' });
    // One failure alone is not flakiness.
    expect(await gyre.api('GET', '/api/v2/insights/gh/acme/flaky/flaky-tests')).toEqual({ 'flaky-tests': [], 'total-flaky-tests': 0 });

    const second = await runOnce();
    expect(second.results).toEqual({ always: 'success', sometimes: 'success' });
    expect(second.revision).toBe(first.revision);

    // CircleCI's shape: the test, with the latest run in which it failed (the first pipeline's).
    const flaky = await gyre.api('GET', '/api/v2/insights/gh/acme/flaky/flaky-tests');
    const firstPipeline = (await gyre.api('GET', '/api/v2/project/gh/acme/flaky/pipeline')).items.find((p: any) => p.number === first.number);
    const [workflow] = (await gyre.api('GET', `/api/v2/pipeline/${firstPipeline.id}/workflow`)).items;
    expect(flaky).toEqual({
      'flaky-tests': [
        {
          'test-name': 'sometimes',
          classname: 'net.retry',
          file: 'test/retry.test.js',
          source: '',
          'job-name': 'unit',
          'job-number': first.jobNumber,
          'workflow-id': workflow.id,
          'workflow-name': 'main',
          'workflow-created-at': workflow.created_at,
          'pipeline-number': first.number,
          'times-flaked': 1,
          'time-wasted': 0,
        },
      ],
      'total-flaky-tests': 1,
    });
  }, 90_000);
});
