import { job, problems, DOCKER } from './helpers';

const wrap = (steps: string, extra = '') => `version: 2.1
${extra}
jobs:
  a:
    ${DOCKER}
    steps:
${steps}
workflows: {w: {jobs: [a]}}
`;

describe('Steps', () => {
  it('run shorthand is both name and command; the name defaults to the first line', async () => {
    const j = await job(
      wrap(`      - run: make test
      - run:
          command: |
            npm ci
            npm test
          no_output_timeout: 1h30m
          shell: /bin/sh -eo pipefail
          when: always
          background: true
          environment: {CI: true}
          description: real files carry this key`),
      'a',
    );
    expect(j.spec!.steps).toEqual([
      { type: 'run', name: 'make test', command: 'make test', when: 'on_success' },
      {
        type: 'run',
        name: 'npm ci',
        command: 'npm ci\nnpm test\n',
        shell: '/bin/sh -eo pipefail',
        environment: { CI: 'true' },
        background: true,
        noOutputTimeoutMs: 5_400_000,
        when: 'always',
      },
    ]);
  });

  it('names the built-in steps as CircleCI does', async () => {
    const j = await job(
      wrap(`      - checkout
      - setup_remote_docker: {version: default}
      - add_ssh_keys: {fingerprints: ["aa:bb"]}
      - restore_cache: {keys: [v1-a, v1-]}
      - save_cache: {key: v1-a, paths: [node_modules]}
      - store_artifacts: {path: out, destination: dist}
      - store_test_results: {path: reports}
      - persist_to_workspace: {root: ., paths: [build/*]}
      - attach_workspace: {at: /tmp/ws}`),
      'a',
    );
    expect(j.spec!.steps.map((s) => `${s.type}: ${s.name}`)).toEqual([
      'checkout: Checkout code',
      'setup_remote_docker: Setup a remote Docker engine',
      'add_ssh_keys: Add SSH keys',
      'restore_cache: Restoring Cache',
      'save_cache: Saving Cache',
      'store_artifacts: Uploading artifacts',
      'store_test_results: Uploading test results',
      'persist_to_workspace: Persisting to Workspace',
      'attach_workspace: Attaching Workspace',
    ]);
  });

  it('keeps cache-key templates as written for the agent to render, and restore_cache key becomes keys', async () => {
    const j = await job(
      wrap(`      - restore_cache:
          key: v1-{{ .Branch }}-{{ checksum "package-lock.json" }}
      - save_cache:
          key: v1-{{ .Environment.NODE }}-{{ .Revision }}-{{ epoch }}-{{ arch }}-{{ .BuildNum }}
          paths: [~/.npm]
          when: always`),
      'a',
    );
    expect(j.spec!.steps[0]).toMatchObject({ type: 'restore_cache', keys: ['v1-{{ .Branch }}-{{ checksum "package-lock.json" }}'] });
    expect(j.spec!.steps[1]).toMatchObject({ type: 'save_cache', key: 'v1-{{ .Environment.NODE }}-{{ .Revision }}-{{ epoch }}-{{ arch }}-{{ .BuildNum }}', when: 'always' });
  });

  it('resolves when/unless steps at compile time and splices steps-typed parameters flat', async () => {
    const j = await job(
      `version: 2.1
commands:
  around:
    parameters:
      inner: {type: steps}
      verbose: {type: boolean, default: false}
    steps:
      - run: echo before
      - steps: << parameters.inner >>
      - when: {condition: << parameters.verbose >>, steps: [{run: echo verbose}]}
      - unless: {condition: << parameters.verbose >>, steps: [{run: echo quiet}]}
jobs:
  a:
    ${DOCKER}
    steps:
      - around:
          inner: [{run: echo one}, {run: echo two}]
workflows: {w: {jobs: [a]}}
`,
      'a',
    );
    expect(j.spec!.steps.map((s) => s.name)).toEqual(['echo before', 'echo one', 'echo two', 'echo quiet']);
  });

  it('accepts the deprecated deploy step and hyphenated 2.0 spellings', async () => {
    const j = await job(wrap(`      - deploy: {command: ./deploy.sh}\n      - restore-cache: {key: v1}`), 'a');
    expect(j.spec!.steps.map((s) => s.type)).toEqual(['run', 'restore_cache']);
  });

  it('rejects a bad no_output_timeout and a step map with two keys', async () => {
    const ps = await problems(wrap(`      - run: {command: x, no_output_timeout: soon}\n      - {checkout: {}, run: x}`));
    expect(ps.map((p) => p.message)).toEqual([
      expect.stringMatching(/a step is a map with exactly one key/),
      expect.stringMatching(/no_output_timeout must be a duration/),
    ]);
  });
});
