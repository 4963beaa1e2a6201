import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { killGroup, startRunnerProcess, until } from '../support/processes';
import { runnerClass } from '../support/runner-tasks';

/**
 * A runner's token is read once and kept from its steps: not in a step's environment, not in the
 * runner's /proc/<pid>/environ (a step of a runner without isolation runs as the runner's user
 * and could read it), and, when given with --token, not in what `ps` shows once started.
 */
const config = `version: 2.1
jobs:
  look:
    machine: true
    resource_class: acme/tokens
    steps:
      - run: |
          runner=$PPID
          while [ "$(cat /proc/$runner/comm)" != "node" ] && [ "$(cat /proc/$runner/comm)" != "gyre runner" ]; do runner=$(awk '{print $4}' /proc/$runner/stat); done
          echo "runner $(tr '\\0' ' ' < /proc/$runner/cmdline)"
          env | grep -q "$TOKEN_PREFIX" && echo "LEAK: in the step's environment"
          tr '\\0' '\\n' < /proc/$runner/environ | grep -q "$TOKEN_PREFIX" && echo "LEAK: in the runner's environment"
          tr '\\0' ' ' < /proc/$runner/cmdline | grep -q "$TOKEN_PREFIX" && echo "LEAK: in the runner's command line"
          echo looked
workflows:
  w:
    jobs: [look]
`;

describe('a runner token', () => {
  let g: TestGyre;
  let token: string;
  const dirs: string[] = [];
  beforeAll(async () => {
    g = await startTestGyre();
    token = await runnerClass(g, 'acme/tokens');
  });
  afterAll(async () => {
    await g.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const ways: [string, (dir: string) => { args: string[]; env: Record<string, string> }][] = [
    ['GYRE_RUNNER_TOKEN', () => ({ args: [], env: {} })],
    ['--token-file', (dir) => (writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 }), { args: ['--token-file', join(dir, 'token')], env: { GYRE_RUNNER_TOKEN: '' } })],
    ['--token', () => ({ args: ['--token', token], env: { GYRE_RUNNER_TOKEN: '' } })],
  ];

  it.each(ways)('given as %s is out of reach of the steps', async (way, make) => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-token-'));
    dirs.push(dir);
    const slug = `acme/tok-${way.replace(/\W/g, '')}`;
    // The step looks for the token's secret part, which it is told only through this variable's value.
    await g.addProject(slug, { '.circleci/config.yml': config.replaceAll('$TOKEN_PREFIX', token.slice(-16)) });
    const { args, env } = make(dir);
    const runner = startRunnerProcess(g.url, token, ['--work-dir', dir, ...args], env);
    try {
      const { id } = await g.trigger(slug);
      const { jobs } = await g.waitForPipeline(id, 60_000);
      const output = (await g.raw('GET', `/api/v2/project/gh/${slug}/job/${jobs.look.job_number}/output?step=0`)).text;
      expect(output).toContain('looked');
      expect(output).toMatch(/^runner /);
      expect(output).not.toContain('LEAK');
      if (way === '--token') await until('the warning', async () => runner.output().includes('--token is visible to every user of this host'), 5000);
      else expect(runner.output()).not.toContain('--token is visible');
    } finally {
      await killGroup(runner);
    }
  }, 90_000);
});
