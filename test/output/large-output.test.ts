import { createHash } from 'node:crypto';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

const BYTES = 200_000_000;

describe.each(flowStore())('a step printing %s 200 MB', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ store });
  });
  afterAll(() => g?.stop());

  it('reads back byte-identical', async () => {
    // A repeating line of varied bytes; `head -c` cuts it at an exact size mid-line. (`yes | head`
    // would fail the step: under pipefail, `yes` dying of SIGPIPE fails the pipeline.)
    await g.addProject('gh/acme/loud', {
      '.circleci/config.yml': `version: 2.1\njobs:\n  loud:\n    docker: [{ image: x }]\n    steps:\n      - run: head -c ${BYTES} < <(yes 'the quick brown fox jumps over the lazy dog 0123456789 ✓ ünïcödé')\nworkflows:\n  w:\n    jobs: [loud]\n`,
    });
    const { id } = await g.trigger('gh/acme/loud');
    // What the step prints, hashed while it runs, in blocks of whole lines: hashing it line by line
    // after the run blocked this process (the server's too) for seconds on a loaded machine, and
    // the request after it went out on a kept-alive connection whose close was already due.
    const line = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789 ✓ ünïcödé\n');
    const block = Buffer.concat(Array.from({ length: 16_384 }, () => line));
    const expected = createHash('sha256');
    for (let written = 0; written < BYTES; written += block.length) expected.update(block.subarray(0, Math.min(block.length, BYTES - written)));
    const { jobs } = await g.waitForPipeline(id, 240_000);
    expect(jobs.loud.status).toBe('success');
    const res = await fetch(`${g.url}/api/v2/project/gh/acme/loud/job/${jobs.loud.job_number}/output?step=0`, { headers: { 'Circle-Token': g.token } });
    expect(res.status).toBe(200);
    const actual = createHash('sha256');
    let size = 0;
    for await (const chunk of res.body as any as AsyncIterable<Uint8Array>) {
      actual.update(chunk);
      size += chunk.byteLength;
    }
    expect(size).toBe(BYTES);
    expect(actual.digest('hex')).toBe(expected.digest('hex'));
  }, 300_000);
});
