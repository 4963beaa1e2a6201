import { compile, job, plan, problems, DOCKER } from './helpers';

describe('Documents and YAML', () => {
  it('expands anchors, aliases and << merge keys in step lists and jobs', async () => {
    const j = await job(
      `version: 2.1
defaults: &defaults
  ${DOCKER}
  working_directory: ~/repo
  environment: {A: "1"}
references:
  step: &step
    run: {name: shared, command: echo shared}
jobs:
  build:
    <<: *defaults
    environment: {B: "2"}
    steps: [checkout, *step]
workflows:
  w: {jobs: [build]}
`,
      'build',
    );
    expect(j.spec!.workingDirectory).toBe('~/repo');
    expect(j.spec!.environment).toEqual({ B: '2' }); // explicit key wins over the merged one
    expect(j.spec!.steps.map((s) => s.name)).toEqual(['Checkout code', 'shared']);
  });

  it('accepts unknown top-level keys as anchor holders and a version: 2 inside workflows', async () => {
    const r = await plan(`version: 2.1
aliases: [&img cimg/base:stable]
whatever: {x: 1}
jobs:
  a: {docker: [{image: *img}], steps: [checkout]}
workflows:
  version: 2
  w: {jobs: [a]}
`);
    expect(r.plan.workflows.map((w) => w.name)).toEqual(['w']);
  });

  it('reads yes/no/on/off as booleans for boolean parameters', async () => {
    const yaml = (v: string) => `version: 2.1
jobs:
  a:
    parameters: {flag: {type: boolean, default: false}}
    ${DOCKER}
    steps:
      - when: {condition: << parameters.flag >>, steps: [{run: echo on}]}
      - run: echo always
workflows:
  w: {jobs: [{a: {flag: ${v}}}]}
`;
    for (const v of ['yes', 'On', 'TRUE']) expect((await job(yaml(v), 'a')).spec!.steps).toHaveLength(2);
    for (const v of ['no', 'off', 'False']) expect((await job(yaml(v), 'a')).spec!.steps).toHaveLength(1);
  });

  it('reports every problem together, each with its YAML path and line:column', async () => {
    const ps = await problems(`version: 2.1
jobs:
  a:
    ${DOCKER}
    steps:
      - nosuchcommand
  b:
    ${DOCKER}
    steps:
      - run: {name: no command}
workflows:
  w:
    jobs: [a, b, c]
`);
    expect(ps).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ path: 'jobs.a.steps[0]', line: 6, message: expect.stringMatching(/command 'nosuchcommand' is not defined/) }),
        expect.objectContaining({ path: 'jobs.b.steps[0].run', line: 10, message: expect.stringMatching(/run needs a command/) }),
        expect.objectContaining({ path: 'workflows.w.jobs[2].c', line: 13, message: expect.stringMatching(/job 'c' is not defined/) }),
      ]),
    );
  });

  it('reports a YAML syntax error with its position', async () => {
    const ps = await problems('version: 2.1\njobs:\n  a: [unclosed\n');
    expect(ps[0].message).toMatch(/YAML syntax error/);
    expect(ps[0].line).toBeGreaterThan(0);
  });

  it('is lenient where CircleCI is: a redefined anchor and a tab inside a plain scalar', async () => {
    const r = await compile(`version: 2.1
x: &img cimg/base:stable
y: &img cimg/node:lts
jobs:
  a:
    docker: [{image: *img}]
    steps:
      - run: echo a\tb
workflows:
  w: {jobs: [a]}
`);
    expect(r.ok).toBe(true);
    if (r.ok) {
      const spec = r.plan.workflows[0].jobs[0].spec!;
      expect(spec.executor).toEqual({ kind: 'docker', images: [{ image: 'cimg/node:lts' }] }); // the latest definition wins
      expect(spec.steps[0]).toMatchObject({ command: 'echo a\tb' });
    }
  });

  it('reads the first document of a stream', async () => {
    const r = await plan(`version: 2.1
jobs:
  a: {${DOCKER}, steps: [checkout]}
workflows:
  w: {jobs: [a]}
---
not: a config
`);
    expect(r.plan.workflows[0].jobs[0].name).toBe('a');
  });
});
