import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

const CONTINUED = `version: 2.1
parameters:
  target:
    type: string
    default: nowhere
jobs:
  generated:
    docker: [{ image: x }]
    steps:
      - run: echo "continued for << pipeline.parameters.target >>"
workflows:
  real-work:
    jobs: [generated]
`;

/** A setup job's script that continues the pipeline itself, as the continuation orb does. */
function continueScript(apiUrl: string, keyFile: string): string {
  return `const fs = require('fs');
fs.writeFileSync(${JSON.stringify(keyFile)}, process.env.CIRCLE_CONTINUATION_KEY);
fetch(${JSON.stringify(`${apiUrl}/api/v2/pipeline/continue`)}, {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({
    'continuation-key': process.env.CIRCLE_CONTINUATION_KEY,
    configuration: fs.readFileSync('continue.yml', 'utf8'),
    parameters: JSON.stringify({ target: 'production' }),
  }),
}).then((r) => {
  console.log('continue answered', r.status);
  if (!r.ok) process.exitCode = 1;
});
`;
}

const SETUP = `version: 2.1
setup: true
jobs:
  generate:
    docker: [{ image: x }]
    steps:
      - checkout
      - run:
          name: Continue the pipeline
          command: node continue.js
workflows:
  setup:
    jobs: [generate]
`;

describe.each(flowStore())('setup workflows and continuation on %s', (store) => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ store });
  });
  afterAll(() => g?.stop());

  it('continues a setup pipeline once with the generated config; later attempts are refused', async () => {
    const keyFile = `${g.dataDir}/continuation-key`;
    await g.addProject('gh/acme/dynamic', { '.circleci/config.yml': SETUP, 'continue.yml': CONTINUED, 'continue.js': continueScript(g.url, keyFile) });
    const { id } = await g.trigger('gh/acme/dynamic');

    let workflows: any[] = [];
    for (let i = 0; i < 300; i++) {
      workflows = (await g.api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
      if (workflows.length === 2 && workflows.every((w) => ['success', 'failed'].includes(w.status))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(workflows.map((w) => [w.name, w.status])).toEqual([
      ['setup', 'success'],
      ['real-work', 'success'],
    ]);
    // As CircleCI marks them: the setup configuration's workflow is tagged `setup`, the continued one not.
    expect(workflows.map((w) => w.tag ?? null)).toEqual(['setup', null]);
    expect((await g.api('GET', `/api/v2/workflow/${workflows[0].id}`)).tag).toBe('setup');
    const jobs = (await g.api('GET', `/api/v2/workflow/${workflows[1].id}/job`)).items;
    const steps = (await g.api('GET', `/api/v2/project/gh/acme/dynamic/job/${jobs[0].job_number}/steps`)).items;
    const output = await fetch(`${g.url}/api/v2/project/gh/acme/dynamic/job/${jobs[0].job_number}/output?step=${steps[0].index}`, {
      headers: { 'Circle-Token': g.token },
    });
    expect(await output.text()).toBe('continued for production\n');

    const config = await g.api('GET', `/api/v2/pipeline/${id}/config`);
    expect(config['setup-config']).toMatch(/setup: true/);
    expect(config.source).toBe(CONTINUED);

    const { readFileSync } = await import('node:fs');
    const key = readFileSync(keyFile, 'utf8');
    const again = await g.raw('POST', '/api/v2/pipeline/continue', {
      body: JSON.stringify({ 'continuation-key': key, configuration: CONTINUED }),
      headers: { 'Circle-Token': '' },
    });
    expect(again.status).toBe(409);
    expect(again.body.message).toMatch(/already been continued/);
  });

  it('refuses a wrong key, a missing configuration, an invalid one and a second setup config', async () => {
    const wrong = await g.raw('POST', '/api/v2/pipeline/continue', { body: JSON.stringify({ 'continuation-key': 'nope', configuration: CONTINUED }) });
    expect(wrong.status).toBe(401);
    expect(wrong.body.message).toMatch(/continuation key is not valid/);

    // A setup pipeline whose job does not continue: its key stays usable for these checks.
    const keyFile = `${g.dataDir}/key-2`;
    await g.addProject('gh/acme/manual', {
      '.circleci/config.yml': `version: 2.1\nsetup: true\njobs:\n  generate:\n    docker: [{ image: x }]\n    steps:\n      - run: printf %s "$CIRCLE_CONTINUATION_KEY" > ${keyFile}\nworkflows:\n  setup:\n    jobs: [generate]\n`,
    });
    const { id } = await g.trigger('gh/acme/manual');
    await g.waitForPipeline(id);
    const { readFileSync } = await import('node:fs');
    const key = readFileSync(keyFile, 'utf8');
    expect(key.length).toBeGreaterThan(30);

    const missing = await g.raw('POST', '/api/v2/pipeline/continue', { body: JSON.stringify({ 'continuation-key': key }) });
    expect(missing.status).toBe(400);
    expect(missing.body.message).toMatch(/configuration is required/);
    const invalid = await g.raw('POST', '/api/v2/pipeline/continue', {
      body: JSON.stringify({ 'continuation-key': key, configuration: 'version: 2.1\nworkflows:\n  w:\n    jobs: [ghost]\n' }),
    });
    expect(invalid.status).toBe(400);
    expect(invalid.body.message).toMatch(/ghost/);
    const nested = await g.raw('POST', '/api/v2/pipeline/continue', {
      body: JSON.stringify({ 'continuation-key': key, configuration: `setup: true\n${CONTINUED}` }),
    });
    expect(nested.status).toBe(400);
    expect(nested.body.message).toMatch(/cannot itself be a setup configuration/);
    // None of the refused attempts used up the one continuation.
    const ok = await g.raw('POST', '/api/v2/pipeline/continue', { body: JSON.stringify({ 'continuation-key': key, configuration: CONTINUED }) });
    expect(ok.status).toBe(200);
  });
});

describe('continuation time limit', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_CONTINUATION_TTL_MS: '1000' } });
  });
  afterAll(() => g?.stop());

  it('refuses to continue after the key has expired', async () => {
    const keyFile = `${g.dataDir}/key`;
    await g.addProject('gh/acme/late', {
      '.circleci/config.yml': `version: 2.1\nsetup: true\njobs:\n  generate:\n    docker: [{ image: x }]\n    steps:\n      - run: printf %s "$CIRCLE_CONTINUATION_KEY" > ${keyFile}\nworkflows:\n  setup:\n    jobs: [generate]\n`,
    });
    const { id } = await g.trigger('gh/acme/late');
    await g.waitForPipeline(id);
    const { readFileSync } = await import('node:fs');
    const key = readFileSync(keyFile, 'utf8');
    await new Promise((r) => setTimeout(r, 1200));
    const late = await g.raw('POST', '/api/v2/pipeline/continue', { body: JSON.stringify({ 'continuation-key': key, configuration: CONTINUED }) });
    expect(late.status).toBe(409);
    expect(late.body.message).toMatch(/expired/);
  });
});
