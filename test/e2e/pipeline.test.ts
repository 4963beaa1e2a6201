import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSse } from '../../runtime/cli/sse';
import { startTestGyre, testStores, type TestGyre } from '../support/gyre';

const FAN_OUT_FAN_IN = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    environment:
      GREETING: hello
    steps:
      - checkout
      - run:
          name: Show the checkout
          command: |
            cat message.txt
            echo "branch=$CIRCLE_BRANCH job=$CIRCLE_JOB num=$CIRCLE_BUILD_NUM node=$CIRCLE_NODE_INDEX/$CIRCLE_NODE_TOTAL"
            echo "user=$CIRCLE_PROJECT_USERNAME repo=$CIRCLE_PROJECT_REPONAME wd=$CIRCLE_WORKING_DIRECTORY ci=$CI circleci=$CIRCLECI"
            echo "sha-ok=$([ "$CIRCLE_SHA1" = "$(git rev-parse HEAD)" ] && echo yes || echo no) pwd-ok=$([ "$PWD" = "$HOME/project" ] && echo yes || echo no)"
            echo "$GREETING $STEP_VAR"
          environment:
            STEP_VAR: world
  left:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: printf 'line one\\nline two\\n'; printf 'to stderr\\n' >&2; printf 'no newline at end'
  right:
    machine: true
    working_directory: ~/elsewhere
    steps:
      - run:
          name: Where am I
          command: echo "in $(basename "$PWD")"
  join:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo joined
workflows:
  main:
    jobs:
      - build
      - left: { requires: [build] }
      - right: { requires: [build] }
      - join: { requires: [left, right] }
`;

const FAILING = `version: 2.1
jobs:
  first:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo ok
  breaks:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: Fails
          command: echo about to fail; exit 3
      - run:
          name: Skipped after failure
          command: echo should not run
      - run:
          name: Runs on failure
          command: echo cleaning up
          when: on_fail
      - run:
          name: Always runs
          command: echo always
          when: always
  after:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo never
  unrelated:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo fine
workflows:
  main:
    jobs:
      - first
      - breaks: { requires: [first] }
      - after: { requires: [breaks] }
      - unrelated: { requires: [first] }
`;

async function stepOutputs(g: TestGyre, slug: string, jobNumber: number) {
  const steps = (await g.api('GET', `/api/v2/project/${slug}/job/${jobNumber}/steps`)).items;
  const out: { name: string; status: string; exit_code: number | null; output: string }[] = [];
  for (const s of steps) {
    const res = await fetch(`${g.url}/api/v2/project/${slug}/job/${jobNumber}/output?node_index=0&step=${s.index}`, { headers: { 'Circle-Token': g.token } });
    out.push({ name: s.name, status: s.status, exit_code: s.exit_code, output: await res.text() });
  }
  return out;
}

describe.each(testStores())('pipelines end to end on %s', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ store });
  });
  afterAll(async () => {
    await g?.stop();
  });

  it('runs a fan-out/fan-in workflow and keeps each step output exactly as printed', async () => {
    await g.addProject('gh/acme/fan', { '.circleci/config.yml': FAN_OUT_FAN_IN, 'message.txt': 'checked out ok\n' });
    const { id, number } = await g.trigger('gh/acme/fan', { branch: 'main' });
    expect(number).toBe(1);
    const { pipeline, workflows, jobs } = await g.waitForPipeline(id);
    expect(pipeline.state).toBe('created');
    expect(pipeline.vcs.branch).toBe('main');
    expect(workflows.map((w) => [w.name, w.status])).toEqual([['main', 'success']]);
    expect(Object.fromEntries(Object.entries(jobs).map(([n, j]) => [n, j.status]))).toEqual({ build: 'success', left: 'success', right: 'success', join: 'success' });

    // The DAG was respected: join started after both branches stopped, and they after build.
    const t = (s: string) => new Date(s).getTime();
    expect(t(jobs.left.started_at)).toBeGreaterThanOrEqual(t(jobs.build.stopped_at));
    expect(t(jobs.right.started_at)).toBeGreaterThanOrEqual(t(jobs.build.stopped_at));
    expect(t(jobs.join.started_at)).toBeGreaterThanOrEqual(Math.max(t(jobs.left.stopped_at), t(jobs.right.stopped_at)));
    expect(jobs.join.dependencies.sort()).toEqual([jobs.left.id, jobs.right.id].sort());

    const build = await stepOutputs(g, 'gh/acme/fan', jobs.build.job_number);
    expect(build.map((s) => [s.name, s.status, s.exit_code])).toEqual([
      ['Checkout code', 'success', 0],
      ['Show the checkout', 'success', 0],
    ]);
    expect(build[1].output).toBe(
      [
        'checked out ok',
        `branch=main job=build num=${jobs.build.job_number} node=0/1`,
        'user=acme repo=fan wd=~/project ci=true circleci=true',
        'sha-ok=yes pwd-ok=yes',
        'hello world',
        '',
      ].join('\n'),
    );
    const left = await stepOutputs(g, 'gh/acme/fan', jobs.left.job_number);
    expect(left[0].output).toBe('line one\nline two\nto stderr\nno newline at end');
    const right = await stepOutputs(g, 'gh/acme/fan', jobs.right.job_number);
    expect(right[0].output).toBe('in elsewhere\n');

    const detail = await g.api('GET', `/api/v2/project/gh/acme/fan/job/${jobs.build.job_number}`);
    expect(detail).toMatchObject({ name: 'build', status: 'success', parallelism: 1, pipeline: { id }, latest_workflow: { name: 'main' } });
  });

  it('marks dependents of a failed job not_run and the workflow failed, running on_fail and always steps', async () => {
    await g.addProject('gh/acme/failing', { '.circleci/config.yml': FAILING });
    const { id } = await g.trigger('gh/acme/failing');
    const { workflows, jobs } = await g.waitForPipeline(id);
    expect(workflows[0].status).toBe('failed');
    expect(jobs.first.status).toBe('success');
    expect(jobs.breaks.status).toBe('failed');
    expect(jobs.after.status).toBe('not_run');
    expect(jobs.after.job_number).toBeUndefined();
    expect(jobs.unrelated.status).toBe('success');
    const steps = await stepOutputs(g, 'gh/acme/failing', jobs.breaks.job_number);
    expect(steps.map((s) => [s.name, s.status, s.exit_code, s.output])).toEqual([
      ['Fails', 'failed', 3, 'about to fail\n'],
      ['Runs on failure', 'success', 0, 'cleaning up\n'],
      ['Always runs', 'success', 0, 'always\n'],
    ]);
  });

  it('makes a pipeline with an invalid config errored, with the reason in the API', async () => {
    await g.addProject('gh/acme/broken', { '.circleci/config.yml': 'version: 2.1\njobs:\n  build:\n    docker: [{ image: x }]\nworkflows:\n  w:\n    jobs: [nosuchjob]\n' });
    const { id } = await g.trigger('gh/acme/broken');
    const { pipeline } = await g.waitForPipeline(id);
    expect(pipeline.state).toBe('errored');
    expect(pipeline.errors.map((e: any) => e.message).join('\n')).toMatch(/nosuchjob/);
  });

  it('makes a pipeline without a config errored', async () => {
    await g.addProject('gh/acme/noconfig', { 'README.md': 'nothing\n' });
    const { id } = await g.trigger('gh/acme/noconfig');
    const { pipeline } = await g.waitForPipeline(id);
    expect(pipeline.state).toBe('errored');
    expect(pipeline.errors[0].message).toMatch(/\.circleci\/config\.yml was not found/);
  });

  it('cancels a running workflow: the running job stops and ends canceled, the rest never run', async () => {
    await g.addProject('gh/acme/slow', {
      '.circleci/config.yml': `version: 2.1
jobs:
  slow:
    docker: [{ image: x }]
    steps:
      - run: echo started; sleep 30; echo never printed
  later:
    docker: [{ image: x }]
    steps:
      - run: echo later
workflows:
  w:
    jobs: [slow, { later: { requires: [slow] } }]
`,
    });
    const { id } = await g.trigger('gh/acme/slow');
    let workflowId = '';
    for (let i = 0; i < 600; i++) {
      const wf = (await g.api('GET', `/api/v2/pipeline/${id}/workflow`)).items[0];
      if (wf) {
        workflowId = wf.id;
        const jobs = (await g.api('GET', `/api/v2/workflow/${wf.id}/job`)).items;
        if (jobs.find((j: any) => j.name === 'slow')?.status === 'running') break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const started = Date.now();
    const res = await g.raw('POST', `/api/v2/workflow/${workflowId}/cancel`);
    expect(res.status).toBe(202);
    const { workflows, jobs } = await g.waitForPipeline(id, 20_000);
    // About 0.5 s when idle; the bound leaves room for a loaded machine, half the step's sleep.
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(workflows[0].status).toBe('canceled');
    expect(jobs.slow.status).toBe('canceled');
    expect(jobs.later.status).toBe('canceled');
    const again = await g.raw('POST', `/api/v2/workflow/${workflowId}/cancel`);
    expect(again.status).toBe(409);
  });

  it('answers errors with the right status and a message', async () => {
    const noToken = await fetch(`${g.url}/api/v2/me`);
    expect(noToken.status).toBe(401);
    expect(((await noToken.json()) as { message: string }).message).toMatch(/token/i);
    const badToken = await g.raw('GET', '/api/v2/me', { headers: { 'Circle-Token': 'nope' } });
    expect(badToken.status).toBe(401);
    const basic = await fetch(`${g.url}/api/v2/me`, { headers: { Authorization: `Basic ${Buffer.from(`${g.token}:`).toString('base64')}` } });
    expect(basic.status).toBe(200);
    expect(((await basic.json()) as { login: string }).login).toBe('admin');
    const missing = await g.raw('GET', '/api/v2/pipeline/00000000-0000-4000-8000-000000000000');
    expect(missing.status).toBe(404);
    expect(missing.body.message).toMatch(/pipeline not found/);
    expect((await g.raw('GET', '/api/v2/pipeline/not-a-uuid')).status).toBe(404);
    expect((await g.raw('GET', '/api/v2/project/gh/acme/nope/pipeline')).status).toBe(404);
    const badJson = await g.raw('POST', '/api/v2/project/gh/acme/fan/pipeline', { body: '{nope' });
    expect(badJson.status).toBe(400);
    expect(badJson.body.message).toMatch(/not valid JSON/);
    const badBranch = await g.raw('POST', '/api/v2/project/gh/acme/fan/pipeline', { body: JSON.stringify({ branch: 'no-such-branch' }) });
    expect(badBranch.status).toBe(400);
    expect(badBranch.body.message).toMatch(/no-such-branch/);
    const badParams = await g.raw('POST', '/api/v2/project/gh/acme/fan/pipeline', { body: JSON.stringify({ parameters: [1] }) });
    expect(badParams.status).toBe(400);
  });

  it('pages through pipelines with next_page_token', async () => {
    await g.addProject('gh/acme/paged', { '.circleci/config.yml': 'version: 2.1\njobs:\n  a:\n    docker: [{image: x}]\n    steps: [{run: "true"}]\nworkflows:\n  w:\n    jobs: [a]\n' });
    for (let i = 0; i < 23; i++) await g.trigger('gh/acme/paged');
    const first = await g.api('GET', '/api/v2/project/gh/acme/paged/pipeline');
    expect(first.items).toHaveLength(20);
    expect(first.items[0].number).toBe(23);
    expect(first.next_page_token).toEqual(expect.any(String));
    const second = await g.api('GET', `/api/v2/project/gh/acme/paged/pipeline?page-token=${first.next_page_token}`);
    expect(second.items.map((p: any) => p.number)).toEqual([3, 2, 1]);
    expect(second.next_page_token).toBeNull();
    expect((await g.raw('GET', '/api/v2/project/gh/acme/paged/pipeline?page-token=garbage')).status).toBe(400);
  });

  it('follows a running step live over SSE and reads back large multi-byte output byte-identical', async () => {
    // The ticks wait for a gate the test opens once the stream has begun: a stream that connected
    // late on a loaded machine would otherwise get the early ticks all at once.
    const gateDir = mkdtempSync(join(tmpdir(), 'gyre-sse-gate-'));
    const gate = join(gateDir, 'open');
    await g.addProject('gh/acme/live', {
      '.circleci/config.yml': `version: 2.1
jobs:
  talk:
    docker: [{ image: x }]
    steps:
      - run:
          name: Slow lines
          command: while [ ! -f "${gate}" ]; do sleep 0.05; done; for i in 1 2 3 4 5; do echo "tick $i"; sleep 0.2; done
      - run:
          name: Lots of unicode
          command: for i in $(seq 1 20000); do echo "línea $i ✓ ünïcödé"; done
workflows:
  w:
    jobs: [talk]
`,
    });
    const { id } = await g.trigger('gh/acme/live');
    const jobNumber = await g.firstJobNumber(id);
    const res = await fetch(`${g.url}/api/v2/project/gh/acme/live/job/${jobNumber}/output/stream`, { headers: { 'Circle-Token': g.token } });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events: { event: string; data: any; at: number }[] = [];
    try {
      for await (const e of readSse(res.body as any as AsyncIterable<Uint8Array>)) {
        events.push({ event: e.event, data: JSON.parse(e.data), at: e.receivedAt });
        if (events.length === 1) writeFileSync(gate, '');
      }
    } finally {
      rmSync(gateDir, { recursive: true, force: true });
    }
    const text = (step: number) => events.filter((e) => e.event === 'output' && e.data.step === step).map((e) => e.data.text).join('');
    expect(text(0)).toBe('tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n');
    // Live, not after the fact: the ticks arrived spread over the step's run time.
    const ticks = events.filter((e) => e.event === 'output' && e.data.step === 0);
    expect(ticks.length).toBeGreaterThan(2);
    expect(ticks[ticks.length - 1].at - ticks[0].at).toBeGreaterThan(300);
    const expected = Array.from({ length: 20000 }, (_, i) => `línea ${i + 1} ✓ ünïcödé\n`).join('');
    expect(text(1)).toBe(expected);
    expect(events.filter((e) => e.event === 'step').map((e) => [e.data.index, e.data.status])).toEqual([
      [0, 'running'],
      [0, 'success'],
      [1, 'running'],
      [1, 'success'],
    ]);
    expect(events[events.length - 1]).toMatchObject({ event: 'end', data: { status: 'success' } });
    const raw = await fetch(`${g.url}/api/v2/project/gh/acme/live/job/${jobNumber}/output?step=1`, { headers: { 'Circle-Token': g.token } });
    expect(Buffer.from(await raw.arrayBuffer()).equals(Buffer.from(expected, 'utf8'))).toBe(true);
  });
});
