import { job, problems, DOCKER } from './helpers';

describe('Jobs', () => {
  it('defaults working_directory to ~/project and parallelism to 1; the first docker image is primary', async () => {
    const j = await job(
      `version: 2.1
jobs:
  a:
    docker: [{image: cimg/node:20}, {image: postgres:16, name: db, environment: {POSTGRES_PASSWORD: x}}]
    steps: [checkout]
workflows: {w: {jobs: [a]}}
`,
      'a',
    );
    expect(j.spec).toMatchObject({ workingDirectory: '~/project', parallelism: 1 });
    expect(j.spec!.executor).toEqual({
      kind: 'docker',
      images: [{ image: 'cimg/node:20' }, { image: 'postgres:16', name: 'db', environment: { POSTGRES_PASSWORD: 'x' } }],
    });
    expect(j.spec!.shell).toBeUndefined();
  });

  it('merges a reusable executor under the job: job keys replace, environments merge with the job winning', async () => {
    const j = await job(
      `version: 2.1
executors:
  big:
    parameters: {tag: {type: string, default: "20"}}
    docker: [{image: "cimg/node:<< parameters.tag >>"}]
    resource_class: large
    working_directory: /exec
    environment: {FROM_EXECUTOR: e, BOTH: executor}
jobs:
  a:
    executor: {name: big, tag: "22"}
    working_directory: /job
    environment: {BOTH: job}
    parallelism: 3
    steps: [checkout]
workflows: {w: {jobs: [a]}}
`,
      'a',
    );
    expect(j.spec).toMatchObject({
      executor: { kind: 'docker', images: [{ image: 'cimg/node:22' }] },
      resourceClass: 'large',
      workingDirectory: '/job',
      parallelism: 3,
      environment: { FROM_EXECUTOR: 'e', BOTH: 'job' },
    });
  });

  it('supports machine and macos executors', async () => {
    const yaml = `version: 2.1
jobs:
  m: {machine: {image: ubuntu-2204:current, docker_layer_caching: true}, steps: [checkout]}
  x: {macos: {xcode: 15.4.0}, resource_class: macos.m1.medium.gen1, steps: [checkout]}
workflows: {w: {jobs: [m, x]}}
`;
    expect((await job(yaml, 'm')).spec!.executor).toEqual({ kind: 'machine', image: 'ubuntu-2204:current', dockerLayerCaching: true });
    expect((await job(yaml, 'x')).spec!.executor).toEqual({ kind: 'macos', xcode: '15.4.0' });
  });

  it('rejects a job without an executor, with two executors, or with a bad name', async () => {
    const ps = await problems(`version: 2.1
jobs:
  none: {steps: [checkout]}
  two: {${DOCKER}, machine: true, steps: [checkout]}
  "bad name": {${DOCKER}, steps: [checkout]}
workflows: {w: {jobs: [none, two]}}
`);
    const text = ps.map((p) => `${p.path}: ${p.message}`).join('\n');
    expect(text).toMatch(/jobs\.none: job none has no executor/);
    expect(text).toMatch(/jobs\.two: an executor has one of docker, machine, macos; found docker and machine/);
    expect(text).toMatch(/job name 'bad name' must start with a letter/);
  });

  it('keeps a parallelism given through a parameter an integer', async () => {
    const j = await job(
      `version: 2.1
jobs:
  a:
    parameters: {n: {type: integer, default: 4}}
    parallelism: << parameters.n >>
    ${DOCKER}
    steps: [checkout]
workflows: {w: {jobs: [a]}}
`,
      'a',
    );
    expect(j.spec!.parallelism).toBe(4);
  });
});
