import { job, plan, problems, DOCKER } from './helpers';

describe('Parameters and substitution', () => {
  it('a command does not see its caller’s parameters (lexical scope)', async () => {
    const ps = await problems(`version: 2.1
commands:
  greet:
    steps: [{run: echo << parameters.who >>}]
jobs:
  a:
    parameters: {who: {type: string, default: world}}
    ${DOCKER}
    steps: [greet]
workflows: {w: {jobs: [a]}}
`);
    expect(ps).toHaveLength(1);
    expect(ps[0].message).toMatch(/command greet declares no parameter 'who'/);
    expect(ps[0].path).toBe('commands.greet.steps[0].run');
  });

  it('names an undeclared parameter, a missing required one and an unexpected argument', async () => {
    const ps = await problems(`version: 2.1
jobs:
  a:
    parameters: {need: {type: string}}
    ${DOCKER}
    steps: [{run: "echo << parameters.nope >>"}]
workflows: {w: {jobs: [{a: {extra: 1}}]}}
`);
    const text = ps.map((p) => p.message).join('\n');
    expect(text).toMatch(/declares no parameter 'nope' \(declared: need\)/);
    expect(text).toMatch(/needs parameter 'need' \(string\), which has no default/);
    expect(text).toMatch(/has no parameter 'extra' \(declared: need\)/);
  });

  it('a whole-value reference keeps its type; inside a string it is text', async () => {
    const j = await job(
      `version: 2.1
jobs:
  a:
    parameters:
      n: {type: integer, default: 2}
      flag: {type: boolean, default: true}
    parallelism: << parameters.n >>
    ${DOCKER}
    steps:
      - run: {command: "echo << parameters.n >> << parameters.flag >>", background: << parameters.flag >>}
workflows: {w: {jobs: [a]}}
`,
      'a',
    );
    expect(j.spec!.parallelism).toBe(2);
    expect(j.spec!.steps[0]).toMatchObject({ command: 'echo 2 true', background: true });
  });

  it('checks types: enum values and defaults, integers, env_var_name', async () => {
    const ps = await problems(`version: 2.1
jobs:
  a:
    parameters:
      e: {type: enum, enum: [a, b], default: c}
      i: {type: integer, default: 1}
      v: {type: env_var_name, default: OK_NAME}
    ${DOCKER}
    steps: [checkout]
workflows: {w: {jobs: [{a: {i: "one", v: "1-bad"}}]}}
`);
    const text = ps.map((p) => p.message).join('\n');
    expect(text).toMatch(/default 'c' of enum parameter 'e' is not one of its values \(a, b\)/);
    expect(text).toMatch(/parameter 'i' of job a is integer; "one" is not an integer/);
    expect(text).toMatch(/parameter 'v' of job a is env_var_name/);
  });

  it('renders mustache sections and inverted sections', async () => {
    const yaml = (flag: boolean) => `version: 2.1
jobs:
  a:
    parameters: {debug: {type: boolean, default: ${flag}}}
    ${DOCKER}
    steps: [{run: "make<<# parameters.debug >> DEBUG=1<</ parameters.debug >><<^ parameters.debug >> -s<</ parameters.debug >>"}]
workflows: {w: {jobs: [a]}}
`;
    expect((await job(yaml(true), 'a')).spec!.steps[0]).toMatchObject({ command: 'make DEBUG=1' });
    expect((await job(yaml(false), 'a')).spec!.steps[0]).toMatchObject({ command: 'make -s' });
  });

  it('executor-typed parameters take a name or {name, …args} resolved in the caller’s scope', async () => {
    const j = await job(
      `version: 2.1
executors:
  node: {parameters: {v: {type: string, default: "18"}}, docker: [{image: "cimg/node:<< parameters.v >>"}]}
jobs:
  a:
    parameters: {e: {type: executor, default: node}}
    executor: << parameters.e >>
    steps: [checkout]
workflows: {w: {jobs: [{a: {e: {name: node, v: "22"}}}]}}
`,
      'a',
    );
    expect(j.spec!.executor).toEqual({ kind: 'docker', images: [{ image: 'cimg/node:22' }] });
  });

  it('pipeline parameters: defaults, supplied values (typed), pipeline values, and unknown ones rejected', async () => {
    const yaml = `version: 2.1
parameters:
  deploy: {type: boolean, default: false}
  image: {type: string, default: cimg/base:stable}
jobs:
  a:
    docker: [{image: << pipeline.parameters.image >>}]
    steps: [{run: "echo << pipeline.git.branch >> << pipeline.number >>"}]
workflows:
  w:
    when: << pipeline.parameters.deploy >>
    jobs: [a]
`;
    expect((await plan(yaml)).plan.workflows).toEqual([]);
    const r = await plan(yaml, { branch: 'dev', parameters: { deploy: 'yes' as unknown as boolean, image: 'x:1' }, pipeline: { number: 42 } });
    expect(r.plan.workflows[0].jobs[0].spec).toMatchObject({ executor: { images: [{ image: 'x:1' }] }, steps: [{ command: 'echo dev 42' }] });
    const ps = await problems(yaml, { branch: 'main', parameters: { nope: 1 } });
    expect(ps[0].message).toMatch(/pipeline parameter 'nope' was supplied but is not declared/);
  });

  it('a pipeline value that reads like a reference (a pull request title, a branch) is inserted as text, never read as config by a later pass', async () => {
    const yaml = `version: 2.1
jobs:
  a:
    parameters:
      x: {type: string, default: job-x}
    docker: [{image: cimg/base:stable}]
    steps:
      - run: "echo << pipeline.event.github.pull_request.title >> / << pipeline.git.branch >> / << parameters.x >>"
      - run:
          name: << pipeline.event.github.pull_request.title >>
          command: "true"
workflows:
  w:
    jobs: [a]
`;
    const title = 'Fix << parameters.x >> and <<pipeline.git.revision>> and <<# parameters.x >>on<</ parameters.x >>, cat << EOF';
    const r = await plan(yaml, { branch: 'x<<pipeline.id>>', pipeline: { event: { 'pipeline.event.github.pull_request.title': title } } });
    const steps = r.plan.workflows[0].jobs[0].spec!.steps as readonly { command?: string; name?: string }[];
    // Before, the job pass read the title's `<< parameters.x >>` (job-x) and its section, and an
    // unknown parameter in a title failed the pipeline.
    expect(steps[0].command).toBe(`echo ${title} / x<<pipeline.id>> / job-x`);
    expect(steps[1].name).toBe(title);
    expect(r.compiledYaml).toContain('x<<pipeline.id>>');
    expect(r.compiledYaml).not.toContain('\uE000');
    await expect(plan(yaml, { branch: 'main', pipeline: { event: { 'pipeline.event.github.pull_request.title': 'Fix << parameters.nope >>' } } })).resolves.toBeTruthy();
  });

  it('pipeline parameters must have defaults and a scalar type', async () => {
    const ps = await problems(`version: 2.1
parameters:
  a: {type: string}
  b: {type: steps, default: []}
jobs: {j: {${DOCKER}, steps: [checkout]}}
workflows: {w: {jobs: [j]}}
`);
    expect(ps.map((p) => p.message)).toEqual([expect.stringMatching(/'a' needs a default/), expect.stringMatching(/type 'steps' is not allowed/)]);
  });

  it('pipeline parameters are resolved before orbs are imported (they may pick the orb version)', async () => {
    const { orbs } = await import('./helpers');
    orbs.publish('gyre/tools', '1.4.0', 'version: 2.1\ncommands:\n  hi: {steps: [{run: echo v1}]}\n');
    orbs.publish('gyre/tools', '2.0.0', 'version: 2.1\ncommands:\n  hi: {steps: [{run: echo v2}]}\n');
    const j = await job(
      `version: 2.1
parameters: {tools: {type: string, default: "1"}}
orbs: {t: gyre/tools@<< pipeline.parameters.tools >>}
jobs: {a: {${DOCKER}, steps: [t/hi]}}
workflows: {w: {jobs: [a]}}
`,
      'a',
      { branch: 'main', parameters: { tools: '2' } },
    );
    expect(j.spec!.steps[0]).toMatchObject({ command: 'echo v2' });
  });
});
