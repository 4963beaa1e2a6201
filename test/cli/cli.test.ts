import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { run, type CliIo } from '../../runtime/cli/main';
import { makeGitRepo, startTestGyre, type TestGyre } from '../support/gyre';

const ROOT = resolve(__dirname, '../..');

function capture(env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env };
  return { io, out: () => stdout, err: () => stderr };
}

const CONFIG = `version: 2.1
jobs:
  greet:
    docker: [{ image: x }]
    steps:
      - run:
          name: Greet
          command: echo "hello from $CIRCLE_BRANCH with $MESSAGE"
          environment:
            MESSAGE: << pipeline.parameters.message >>
parameters:
  message:
    type: string
    default: nothing
workflows:
  w:
    jobs: [greet]
`;

describe('the gyre CLI against a running server', () => {
  let g: TestGyre;
  let env: Record<string, string>;
  beforeAll(async () => {
    g = await startTestGyre();
    env = { GYRE_URL: g.url, GYRE_TOKEN: g.token };
  });
  afterAll(() => g.stop());

  it('adds a project, triggers it with a branch and parameters, lists pipelines and prints logs', async () => {
    const repo = makeGitRepo({ '.circleci/config.yml': CONFIG });
    const add = capture(env);
    expect(await run(['project', 'add', 'acme/cli', '--repo', repo], add.io)).toBe(0);
    expect(add.out()).toBe('gh/acme/cli\n');

    const trigger = capture(env);
    expect(await run(['trigger', 'gh/acme/cli', '--branch', 'main', '--param', 'message=hi there', '--wait'], trigger.io)).toBe(0);
    expect(trigger.out()).toMatch(/^pipeline 1 [0-9a-f-]{36}\nw: success\n$/);
    expect(trigger.err()).toMatch(/w › greet #1: success/);

    const list = capture(env);
    expect(await run(['pipelines', 'gh/acme/cli'], list.io)).toBe(0);
    expect(list.out()).toMatch(/^NUMBER\s+STATE\s+REF/);
    expect(list.out()).toMatch(/\n1\s+created\s+main\s+[0-9a-f]{7}\s+\S+\s+w=success\n/);

    const logs = capture(env);
    expect(await run(['logs', '1', '--project', 'gh/acme/cli'], logs.io)).toBe(0);
    expect(logs.out()).toBe('hello from main with hi there\n');
    expect(logs.err()).toMatch(/==> Greet \(success, exit 0\)/);

    const follow = capture(env);
    expect(await run(['logs', '1', '--project', 'gh/acme/cli', '--follow'], follow.io)).toBe(0);
    expect(follow.out()).toBe('hello from main with hi there\n');
    expect(follow.err()).toMatch(/job finished: success/);
  });

  it('exits non-zero with a clear message on errors', async () => {
    const unknown = capture(env);
    expect(await run(['pipelines', 'gh/acme/does-not-exist'], unknown.io)).toBe(1);
    expect(unknown.err()).toMatch(/404.*project not found: gh\/acme\/does-not-exist/);

    const badToken = capture({ ...env, GYRE_TOKEN: 'wrong' });
    expect(await run(['pipelines', 'gh/acme/cli'], badToken.io)).toBe(1);
    expect(badToken.err()).toMatch(/401.*not valid/);

    const down = capture({ GYRE_URL: 'http://127.0.0.1:9', GYRE_TOKEN: 'x' });
    expect(await run(['pipelines', 'gh/acme/cli'], down.io)).toBe(1);
    expect(down.err()).toMatch(/cannot reach Gyre at http:\/\/127\.0\.0\.1:9/);

    const usage = capture(env);
    expect(await run(['trigger'], usage.io)).toBe(2);
    expect(usage.err()).toMatch(/trigger needs a project slug/);

    const badParam = capture(env);
    expect(await run(['trigger', 'gh/acme/cli', '--param', 'novalue'], badParam.io)).toBe(2);
    expect(badParam.err()).toMatch(/--param 'novalue' must look like name=value/);

    const badFlag = capture(env);
    expect(await run(['pipelines', 'gh/acme/cli', '--bogus'], badFlag.io)).toBe(2);
    expect(badFlag.err()).toMatch(/bogus/);
  });
});

describe('gyre server start-up settings', () => {
  it.each([
    ['GYRE_PORT', 'eighty', /GYRE_PORT: 'eighty' is not a whole number/],
    ['GYRE_PORT', '70000', /GYRE_PORT: 70000 is out of range/],
    ['DATABASE_URL', 'mysql://x', /DATABASE_URL: 'mysql:\/\/x' must be a postgres:\/\//],
    ['GYRE_ADMIN_TOKEN', 'short', /GYRE_ADMIN_TOKEN: must be at least 16 characters/],
    ['GYRE_ROLES', 'api,nonsense', /GYRE_ROLES: unknown role 'nonsense'/],
  ])('refuses %s=%s and names the setting', (name, value, message) => {
    const result = spawnSync(process.execPath, [join(ROOT, 'bin/gyre.js'), 'server'], {
      env: { ...process.env, DATABASE_URL: '', GYRE_DATA_DIR: join(ROOT, '.tmp', 'never-created'), [name]: value },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(message);
  });
});
