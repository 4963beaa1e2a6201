import { startS3rver } from '../support/s3rver';
import { startTestGyre, type TestGyre } from '../support/gyre';

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="3" failures="1">
  <testsuite name="math" tests="3" failures="1" time="0.5">
    <testcase classname="math adds" name="adds &amp; carries" time="0.012" file="src/math.test.js"/>
    <testcase classname="math divides" name="by zero" time="0.3" file="src/math.test.js">
      <failure message="expected Infinity">Error: expected Infinity
    at Object.&lt;anonymous&gt;</failure>
    </testcase>
    <testcase classname="math skips" name="later" time="0"><skipped/></testcase>
  </testsuite>
</testsuites>
`;

const CONFIG = `version: 2.1
jobs:
  produce:
    docker: [{ image: cimg/base:stable }]
    steps:
      - checkout
      - run: |
          mkdir -p out/site reports deps
          printf '<script>alert(1)</script>' > out/site/index.html
          head -c 300000 /dev/urandom > out/blob.bin
          cp out/blob.bin blob.copy
          printf 'cached-v1' > deps/lib.txt
      - store_artifacts: { path: out, destination: build }
      - store_artifacts: { path: blob.copy }
      - restore_cache: { keys: ['deps-{{ .Branch }}-{{ checksum "lock.txt" }}', 'deps-'] }
      - run: cat deps/restored.txt 2>/dev/null || echo 'no restored cache'
      - run: printf 'from-run-%s' "$CIRCLE_BUILD_NUM" > deps/restored.txt
      - save_cache: { key: 'deps-{{ .Branch }}-{{ checksum "lock.txt" }}-{{ .BuildNum }}', paths: [deps] }
      - run: printf '%s' "$(cat lock.txt)" > /dev/null; cp report.xml reports/junit.xml
      - store_test_results: { path: reports }
      - run: mkdir -p ws/a && echo one > ws/a/one.txt && echo first > ws/shared.txt && echo skip > ws/a/skip.log
      - persist_to_workspace: { root: ws, paths: ['a/*.txt', shared.txt] }
  middle:
    docker: [{ image: cimg/base:stable }]
    steps:
      - attach_workspace: { at: ws }
      - run: |
          test ! -e ws/a/skip.log
          echo two > ws/two.txt && echo second > ws/shared.txt
      - persist_to_workspace: { root: ws, paths: [two.txt, shared.txt] }
  last:
    docker: [{ image: cimg/base:stable }]
    steps:
      - attach_workspace: { at: /tmp/gyre-ws-PLACEHOLDER }
      - run: cat /tmp/gyre-ws-PLACEHOLDER/a/one.txt /tmp/gyre-ws-PLACEHOLDER/two.txt /tmp/gyre-ws-PLACEHOLDER/shared.txt; rm -rf /tmp/gyre-ws-PLACEHOLDER
workflows:
  main:
    jobs:
      - produce
      - middle: { requires: [produce] }
      - last: { requires: [middle] }
`;

async function stepOutputs(g: TestGyre, slug: string, number: number): Promise<string[]> {
  const steps = (await g.api('GET', `/api/v2/project/${slug}/job/${number}/steps`)).items;
  const out: string[] = [];
  for (const s of steps) out.push((await g.raw('GET', `/api/v2/project/${slug}/job/${number}/output?step=${s.index}`)).text);
  return out;
}

describe.each(['local', 's3'] as const)('output on %s blob storage', (kind) => {
  let g: TestGyre;
  let s3: Awaited<ReturnType<typeof startS3rver>> | undefined;
  const slug = 'gh/acme/outputs';
  const wsDir = `/tmp/gyre-ws-${process.pid}-${kind}`;

  beforeAll(async () => {
    s3 = kind === 's3' ? await startS3rver() : undefined;
    g = await startTestGyre({ env: s3?.env ?? {} });
    await g.addProject('acme/outputs', {
      '.circleci/config.yml': CONFIG.replace(/\/tmp\/gyre-ws-PLACEHOLDER/g, wsDir),
      'lock.txt': 'lock-1',
      'report.xml': JUNIT,
    });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await s3?.stop();
  });

  test('artifacts download, a cache restores by prefix in the next pipeline, a workspace crosses three jobs, JUnit results read back', async () => {
    const first = await g.waitForPipeline((await g.trigger(slug)).id, 60_000);
    expect(Object.fromEntries(Object.entries(first.jobs).map(([n, j]) => [n, j.status]))).toEqual({ produce: 'success', middle: 'success', last: 'success' });
    const produce = first.jobs.produce.job_number;

    // Artifacts: listed with the destination prefix, downloadable without a token, served as a sandboxed attachment.
    const artifacts = await g.api('GET', `/api/v2/project/${slug}/${produce}/artifacts`);
    expect(artifacts.items.map((a: any) => a.path).sort()).toEqual(['blob.copy', 'build/blob.bin', 'build/site/index.html']);
    const html = artifacts.items.find((a: any) => a.path === 'build/site/index.html');
    const res = await fetch(html.url);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('<script>alert(1)</script>');
    expect(res.headers.get('content-disposition')).toMatch(/^attachment/);
    expect(res.headers.get('content-security-policy')).toMatch(/sandbox/);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const bin = Buffer.from(await (await fetch(artifacts.items.find((a: any) => a.path === 'build/blob.bin').url)).arrayBuffer());
    const copy = Buffer.from(await (await fetch(artifacts.items.find((a: any) => a.path === 'blob.copy').url)).arrayBuffer());
    expect(bin.length).toBe(300000);
    expect(bin.equals(copy)).toBe(true);
    expect((await fetch(html.url.replace(/\/output\/artifact\/([^/]+)\/[^/]+\//, '/output/artifact/$1/forged/'))).status).toBe(404);

    // Test results.
    const tests = await g.api('GET', `/api/v2/project/${slug}/${produce}/tests`);
    expect(tests.items).toEqual([
      { name: 'adds & carries', classname: 'math adds', file: 'src/math.test.js', result: 'success', message: '', run_time: 0.012, source: '' },
      { name: 'by zero', classname: 'math divides', file: 'src/math.test.js', result: 'failure', message: 'expected Infinity', run_time: 0.3, source: '' },
      { name: 'later', classname: 'math skips', file: '', result: 'skipped', message: '', run_time: 0, source: '' },
    ]);

    // Workspace: layered, later jobs overwrite earlier ones, globs respected.
    const lastOut = (await stepOutputs(g, slug, first.jobs.last.job_number)).join('');
    expect(lastOut).toContain('one\ntwo\nsecond\n');

    // First run: no cache yet.
    expect((await stepOutputs(g, slug, produce)).join('')).toContain('no restored cache');

    // Second pipeline: the exact key includes the build number, so only the prefix finds it.
    const second = await g.waitForPipeline((await g.trigger(slug)).id, 60_000);
    expect(second.jobs.produce.status).toBe('success');
    const out = (await stepOutputs(g, slug, second.jobs.produce.job_number)).join('');
    expect(out).toContain(`from-run-${produce}`);
    expect(out).toContain(`Found a cache from key deps-main-`);
  }, 120_000);
});
