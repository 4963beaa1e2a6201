import { job, plan, problems, shape, DOCKER } from './helpers';

const jobs = (...names: string[]) => `jobs:\n${names.map((n) => `  ${n}: {${DOCKER}, steps: [{run: echo ${n}}]}`).join('\n')}\n`;

describe('Workflows', () => {
  it('requires with statuses', async () => {
    const j = await job(
      `version: 2.1
${jobs('a', 'b', 'c', 'd')}
workflows:
  w:
    jobs:
      - a
      - b
      - c
      - d:
          requires: [a, {b: failed}, {c: [success, canceled]}]
`,
      'd',
    );
    expect(j.requires).toEqual([
      { job: 'a', statuses: ['success'] },
      { job: 'b', statuses: ['failed'] },
      { job: 'c', statuses: ['success', 'canceled'] },
    ]);
  });

  it('rejects unknown requirements, bad statuses and cycles', async () => {
    const ps = await problems(`version: 2.1
${jobs('a', 'b')}
workflows:
  w:
    jobs:
      - a: {requires: [b]}
      - b: {requires: [a, {nope: success}, {a: maybe}]}
`);
    const text = ps.map((p) => p.message).join('\n');
    expect(text).toMatch(/requires 'nope', which is not a job in workflow w/);
    expect(text).toMatch(/requires status 'maybe' is not allowed/);
    expect(text).toMatch(/cycle in requires: a -> b -> a/);
  });

  it('branch filters: only/ignore, strings or lists, /regex/ matching the whole name', async () => {
    const yaml = `version: 2.1
${jobs('a', 'b', 'c', 'd')}
workflows:
  w:
    jobs:
      - a: {filters: {branches: {only: main}}}
      - b: {filters: {branches: {only: [/release\\/.*/, dev]}}}
      - c: {filters: {branches: {ignore: /feat.*/}}}
      - d: {filters: {branches: {only: /rel/}}}
`;
    expect(await shape(yaml, { branch: 'main' })).toEqual({ w: ['a', 'c'] });
    expect(await shape(yaml, { branch: 'release/1' })).toEqual({ w: ['b', 'c'] });
    expect(await shape(yaml, { branch: 'feature/x' })).toEqual({});
  });

  it('a tag runs only jobs whose tags filter admits it, and every job upstream must too', async () => {
    const yaml = `version: 2.1
${jobs('build', 'test', 'lint', 'deploy', 'publish')}
workflows:
  w:
    jobs:
      - build: {filters: {tags: {only: /^v.*/}}}
      - lint
      - test: {requires: [build], filters: {tags: {only: /.*/}}}
      - deploy: {requires: [test], filters: {tags: {only: /^v.*/}, branches: {ignore: /.*/}}}
      - publish: {requires: [lint, test], filters: {tags: {only: /^v.*/}}}
`;
    expect(await shape(yaml, { tag: 'v1.0.0' })).toEqual({ w: ['build', 'test <- build', 'deploy <- test'] });
    expect(await shape(yaml, { tag: 'nightly' })).toEqual({});
    expect(await shape(yaml, { branch: 'main' })).toEqual({ w: ['build', 'lint', 'test <- build', 'publish <- lint,test'] });
  });

  it('filtered-out requirements are dropped; a job whose requirements were all filtered out does not run (cascade)', async () => {
    const yaml = `version: 2.1
${jobs('a', 'b', 'c', 'd', 'e')}
workflows:
  w:
    jobs:
      - a: {filters: {branches: {only: main}}}
      - b
      - c: {requires: [a, b]}
      - d: {requires: [a]}
      - e: {requires: [d]}
`;
    expect(await shape(yaml, { branch: 'main' })).toEqual({ w: ['a', 'b', 'c <- a,b', 'd <- a', 'e <- d'] });
    expect(await shape(yaml, { branch: 'dev' })).toEqual({ w: ['b', 'c <- b'] });
  });

  it('approval jobs need no definition and hold their dependants', async () => {
    const r = await plan(`version: 2.1
${jobs('build', 'deploy')}
workflows:
  w:
    jobs:
      - build
      - hold: {type: approval, requires: [build]}
      - deploy: {requires: [hold]}
`);
    expect(r.plan.workflows[0].jobs.map((j) => [j.name, j.type, j.spec ? 'spec' : 'no spec'])).toEqual([
      ['build', 'build', 'spec'],
      ['hold', 'approval', 'no spec'],
      ['deploy', 'build', 'spec'],
    ]);
  });

  it('matrix: generated names, exclude, alias waiting for the whole matrix, << matrix.x >> in names', async () => {
    const yaml = `version: 2.1
jobs:
  test:
    parameters: {node: {type: string}, os: {type: string}}
    docker: [{image: "cimg/node:<< parameters.node >>"}]
    steps: [{run: "echo << parameters.os >>"}]
  report: {${DOCKER}, steps: [checkout]}
workflows:
  w:
    jobs:
      - test:
          matrix:
            parameters: {node: [14.17.6, "20"], os: [docker, linux]}
            exclude: [{node: "20", os: linux}]
      - test:
          name: lint-<< matrix.node >>
          matrix: {alias: lint, parameters: {node: ["22"], os: [docker]}}
      - report: {requires: [test, lint]}
`;
    expect(await shape(yaml)).toEqual({
      w: ['test-14.17.6-docker', 'test-14.17.6-linux', 'test-20-docker', 'lint-22', 'report <- test-14.17.6-docker,test-14.17.6-linux,test-20-docker,lint-22'],
    });
    expect((await job(yaml, 'test-20-docker')).spec!.executor).toEqual({ kind: 'docker', images: [{ image: 'cimg/node:20' }] });
  });

  it('invoking a job twice without a name gives name-1, name-2, and requires on the name waits for both', async () => {
    expect(
      await shape(`version: 2.1
jobs:
  t: {parameters: {n: {type: integer, default: 0}}, ${DOCKER}, steps: [checkout]}
  after: {${DOCKER}, steps: [checkout]}
workflows:
  w:
    jobs:
      - t: {n: 1}
      - t: {n: 2}
      - after: {requires: [t]}
`),
    ).toEqual({ w: ['t-1', 't-2', 'after <- t-1,t-2'] });
  });

  it('duplicate explicit names are rejected', async () => {
    const ps = await problems(`version: 2.1
${jobs('a')}
workflows: {w: {jobs: [{a: {name: x}}, {a: {name: x}}]}}
`);
    expect(ps[0].message).toMatch(/job name 'x' is used twice in workflow w/);
  });

  it('contexts, serial-group, pre-steps and post-steps', async () => {
    const j = await job(
      `version: 2.1
${jobs('a')}
workflows:
  w:
    jobs:
      - a:
          context: [org-secrets, aws]
          serial-group: deploys
          pre-steps: [{run: echo pre}]
          post-steps: [{run: echo post}]
`,
      'a',
    );
    expect(j.contexts).toEqual(['org-secrets', 'aws']);
    expect(j.serialGroup).toBe('deploys');
    expect(j.spec!.steps.map((s) => s.name)).toEqual(['echo pre', 'echo a', 'echo post']);
  });

  it('legacy scheduled workflows run on their schedule, not on pushes', async () => {
    const yaml = `version: 2.1
${jobs('nightly', 'build')}
workflows:
  push: {jobs: [build]}
  cron:
    triggers: [{schedule: {cron: "0 0 * * *", filters: {branches: {only: main}}}}]
    jobs: [nightly]
`;
    expect(await shape(yaml, { branch: 'main' })).toEqual({ push: ['build'] });
    expect(await shape(yaml, { branch: 'main', pipeline: { triggerSource: 'schedule' } })).toEqual({ cron: ['nightly'] });
    expect(await shape(yaml, { branch: 'dev', pipeline: { triggerSource: 'schedule' } })).toEqual({});
  });

  it('expression-string filters', async () => {
    const yaml = `version: 2.1
${jobs('a', 'b')}
workflows:
  w:
    jobs:
      - a: {filters: 'pipeline.git.branch == "main"'}
      - b
`;
    expect(await shape(yaml, { branch: 'main' })).toEqual({ w: ['a', 'b'] });
    expect(await shape(yaml, { branch: 'dev' })).toEqual({ w: ['b'] });
  });

  it('a workflow has no parameters and a matrix value exists only in a matrix entry', async () => {
    const ps = await problems(`version: 2.1
${jobs('a')}
workflows:
  w:
    jobs:
      - a: {pre-steps: [{run: "echo << parameters.x >>"}], name: "a-<< matrix.os >>"}
`);
    expect(ps.map((p) => p.message)).toEqual([
      expect.stringMatching(/<< parameters.x >> is not allowed here: there are no parameters in this scope/),
      expect.stringMatching(/<< matrix.os >>: the matrix has no parameter 'os'/),
    ]);
  });
});
