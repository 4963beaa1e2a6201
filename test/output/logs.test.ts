import { startTestGyre, type TestGyre } from '../support/gyre';

const CONFIG = `version: 2.1
jobs:
  capped:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: printf 'a%.0s' $(seq 1 3000); echo
      - run: echo never kept
workflows:
  main:
    jobs: [capped]
`;

describe('output cap', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_JOB_OUTPUT_LIMIT_BYTES: '2048' } });
    await g.addProject('acme/cap', { '.circleci/config.yml': CONFIG });
  });
  afterAll(() => g?.stop());

  test('output past the limit is cut with a marker; later steps keep nothing', async () => {
    const run = await g.waitForPipeline((await g.trigger('gh/acme/cap')).id);
    const n = run.jobs.capped.job_number;
    const first = (await g.raw('GET', `/api/v2/project/gh/acme/cap/job/${n}/output?step=0`)).text;
    expect(first.startsWith('a'.repeat(2048))).toBe(true);
    expect(first.slice(2048)).toMatch(/^\n\[gyre\] Output truncated: this job reached its output limit of 2048 bytes/);
    expect((await g.raw('GET', `/api/v2/project/gh/acme/cap/job/${n}/output?step=1`)).text).toBe('');
  });
});
