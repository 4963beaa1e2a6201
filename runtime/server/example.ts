import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tightenTree } from '../data-dir';
import type { Logger } from '../logger';
import type { Projects } from '../projects/projects';
import type { Store } from '../store/store';
import type { Triggers } from '../triggers/triggers';

export const EXAMPLE_SLUG = 'gh/gyre/example';

/** The example project's config: a fan-out/fan-in workflow that runs on the built-in runner. */
export const EXAMPLE_CONFIG = `version: 2.1

jobs:
  build:
    docker:
      - image: cimg/base:stable
    steps:
      - checkout
      - run:
          name: Build
          command: |
            echo "Building $CIRCLE_PROJECT_REPONAME at \${CIRCLE_SHA1:0:7} on $CIRCLE_BRANCH"
            mkdir -p out && date -u > out/built-at.txt
            echo "built."
  unit-tests:
    docker:
      - image: cimg/base:stable
    steps:
      - checkout
      - run:
          name: Unit tests
          command: |
            for t in parser compiler runner; do
              printf '\\033[32m✓\\033[0m %s\\n' "$t"
              sleep 0.3
            done
  lint:
    docker:
      - image: cimg/base:stable
    steps:
      - checkout
      - run: grep -c "version" .circleci/config.yml
  deploy:
    docker:
      - image: cimg/base:stable
    steps:
      - run:
          name: Deploy
          command: echo "All checks passed for build $CIRCLE_BUILD_NUM; deploying (pretend)."

workflows:
  build-test-deploy:
    jobs:
      - build
      - unit-tests:
          requires: [build]
      - lint:
          requires: [build]
      - deploy:
          requires: [unit-tests, lint]
`;

/**
 * On a fresh install, makes a git repository with the example config, registers it and runs it,
 * so a new user sees a pipeline at once. Does nothing when any project exists already.
 */
export async function createExampleProject(deps: {
  store: Store;
  projects: Projects;
  triggers: Triggers;
  dataDir: string;
  webUrl: string;
  log: Logger;
}): Promise<{ slug: string; pipelineNumber: number; url: string } | undefined> {
  const [{ count }] = await deps.store.query<{ count: number }>('SELECT count(*)::int AS count FROM projects');
  if (count > 0) return undefined;
  const repo = join(deps.dataDir, 'example-repo');
  if (!existsSync(join(repo, '.git'))) {
    // In the data directory, so Gyre's user's alone (0600, directories 0700), as everything there.
    mkdirSync(join(repo, '.circleci'), { recursive: true, mode: 0o700 });
    writeFileSync(join(repo, '.circleci', 'config.yml'), EXAMPLE_CONFIG, { mode: 0o600 });
    writeFileSync(join(repo, 'README.md'), '# Example project\n\nCreated by Gyre on first start. Edit `.circleci/config.yml`, commit, and run `gyre trigger gh/gyre/example`.\n', { mode: 0o600 });
    const git = (...args: string[]) =>
      execFileSync('git', args, {
        cwd: repo,
        stdio: 'pipe',
        env: { ...process.env, GIT_AUTHOR_NAME: 'Gyre', GIT_AUTHOR_EMAIL: 'gyre@localhost', GIT_COMMITTER_NAME: 'Gyre', GIT_COMMITTER_EMAIL: 'gyre@localhost' },
      });
    git('init', '--quiet', '--initial-branch=main', '--shared=0600');
    git('add', '-A');
    git('commit', '--quiet', '-m', 'Example pipeline');
    await tightenTree(repo);
  }
  const project = await deps.projects.add({ org: 'gyre', name: 'example', repoUrl: repo });
  const pipeline = await deps.triggers.trigger({ slug: project.slug, type: 'explicit' });
  const url = `${deps.webUrl}/#/project/${project.slug}`;
  deps.log.info('example project created and triggered', { slug: project.slug, pipeline: pipeline.number });
  return { slug: project.slug, pipelineNumber: pipeline.number, url };
}
