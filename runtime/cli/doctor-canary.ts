import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The canary pipeline `gyre doctor` triggers. One workflow per place a job can run, switched on by
 * pipeline parameters: `runner_class` (a self-hosted runner's class), `nomad_class` (a class whose
 * driver is nomad) and `default_class` (jobs that name no class). In each, `write` stores an
 * artifact and saves a cache holding a nonce doctor chose, and `read` (after it, on the same class)
 * restores the cache and checks the nonce; doctor then downloads the artifact through the API. So
 * a green canary has written and read back the database (pipeline, jobs, steps, output) and the
 * blob store (artifact, cache) on every path a build uses.
 *
 * `machine: true` runs the steps in the agent's own shell: the canary needs no image pulled.
 */
export const CANARY_CONFIG = `# The canary pipeline of \`gyre doctor\` (docs/deploying.md#checking-an-install-gyre-doctor).
# gyre doctor triggers it with pipeline parameters; it rewrites this file in repositories it made.
version: 2.1
parameters:
  nonce: {type: string, default: ""}
  runner_class: {type: string, default: ""}
  nomad_class: {type: string, default: ""}
  default_class: {type: boolean, default: false}
commands:
  write:
    parameters: {target: {type: string}}
    steps:
      - run:
          name: Write the canary file
          command: mkdir -p canary && printf 'gyre-doctor %s\\n' '<< pipeline.parameters.nonce >>' > canary/canary.txt && cat canary/canary.txt
      - store_artifacts: {path: canary/canary.txt, destination: canary.txt}
      - save_cache: {key: 'gyre-doctor-<< parameters.target >>-<< pipeline.parameters.nonce >>', paths: [canary]}
  read:
    parameters: {target: {type: string}}
    steps:
      - restore_cache: {key: 'gyre-doctor-<< parameters.target >>-<< pipeline.parameters.nonce >>'}
      - run:
          name: Check the restored cache
          command: grep -qx 'gyre-doctor << pipeline.parameters.nonce >>' canary/canary.txt || { echo 'the cache the write job saved did not restore canary/canary.txt'; exit 1; }
jobs:
  write:
    parameters: {class: {type: string}, target: {type: string}}
    machine: true
    resource_class: << parameters.class >>
    steps: [{write: {target: << parameters.target >>}}]
  read:
    parameters: {class: {type: string}, target: {type: string}}
    machine: true
    resource_class: << parameters.class >>
    steps: [{read: {target: << parameters.target >>}}]
  write-default:
    machine: true
    steps: [{write: {target: default}}]
  read-default:
    machine: true
    steps: [{read: {target: default}}]
workflows:
  canary-runner:
    when: << pipeline.parameters.runner_class >>
    jobs:
      - write: {name: runner-write, class: << pipeline.parameters.runner_class >>, target: runner}
      - read: {name: runner-read, class: << pipeline.parameters.runner_class >>, target: runner, requires: [runner-write]}
  canary-nomad:
    when: << pipeline.parameters.nomad_class >>
    jobs:
      - write: {name: nomad-write, class: << pipeline.parameters.nomad_class >>, target: nomad}
      - read: {name: nomad-read, class: << pipeline.parameters.nomad_class >>, target: nomad, requires: [nomad-write]}
  canary-default:
    when: << pipeline.parameters.default_class >>
    jobs:
      - write-default
      - read-default: {requires: [write-default]}
`;

/** Where a canary runs, and the names its workflow and jobs have in the canary config. */
export interface CanaryTarget {
  readonly kind: 'runner' | 'nomad' | 'default';
  /** The resource class (undefined for the default one). */
  readonly resourceClass?: string;
  readonly workflow: string;
  readonly writeJob: string;
  readonly readJob: string;
}

export function canaryTargets(options: { runnerClass?: string; nomadClass?: string }): CanaryTarget[] {
  const targets: CanaryTarget[] = [];
  if (options.runnerClass) targets.push({ kind: 'runner', resourceClass: options.runnerClass, workflow: 'canary-runner', writeJob: 'runner-write', readJob: 'runner-read' });
  if (options.nomadClass) targets.push({ kind: 'nomad', resourceClass: options.nomadClass, workflow: 'canary-nomad', writeJob: 'nomad-write', readJob: 'nomad-read' });
  if (!targets.length) targets.push({ kind: 'default', workflow: 'canary-default', writeJob: 'write-default', readJob: 'read-default' });
  return targets;
}

export function canaryParameters(targets: readonly CanaryTarget[], nonce: string): Record<string, string | boolean> {
  return {
    nonce,
    runner_class: targets.find((t) => t.kind === 'runner')?.resourceClass ?? '',
    nomad_class: targets.find((t) => t.kind === 'nomad')?.resourceClass ?? '',
    default_class: targets.some((t) => t.kind === 'default'),
  };
}

/**
 * Makes (or brings up to date) a git repository at `dir` whose `main` branch holds the canary
 * config. Returns whether it changed anything.
 */
export function writeCanaryRepository(dir: string): 'created' | 'updated' | 'current' {
  const git = (...args: string[]) =>
    execFileSync('git', ['-c', 'user.name=gyre doctor', '-c', 'user.email=doctor@gyre.invalid', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, stdio: 'pipe' });
  const configFile = join(dir, '.circleci', 'config.yml');
  const fresh = !existsSync(join(dir, '.git'));
  if (fresh) {
    mkdirSync(join(dir, '.circleci'), { recursive: true });
    git('init', '--quiet', '--initial-branch=main');
  } else if (existsSync(configFile) && readFileSync(configFile, 'utf8') === CANARY_CONFIG) {
    return 'current';
  }
  mkdirSync(join(dir, '.circleci'), { recursive: true });
  writeFileSync(configFile, CANARY_CONFIG);
  git('add', '.circleci/config.yml');
  git('commit', '--quiet', '-m', 'gyre doctor canary pipeline');
  return fresh ? 'created' : 'updated';
}
