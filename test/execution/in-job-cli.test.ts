import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { jobFiles, timingsText } from '../../runtime/agent/job-tools/job-dir';
import { parsePreviousTestResults } from '../../runtime/agent/http-reporter';
import { previousTestResults } from '../../runtime/output/previous-test-results';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';
import { commitFiles, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * The in-job CLI (`circleci tests glob|split|run`, `circleci-agent step halt`): the POSIX sh
 * script under every shell it must run with (busybox ash, as in the busybox image; dash), and
 * jobs that use it on the shell executor and in the busybox image through a container engine.
 */
const SCRIPT = resolve(__dirname, '../../runtime/agent/job-tools/circleci.sh');
// busybox ash is what the busybox image has (CI installs busybox-static to build it); dash is Debian's sh.
const FOUND = [['busybox', 'sh'], ['dash']].filter(([cmd]) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0);
if (process.env.CI && FOUND.length < 2) throw new Error('the in-job CLI tests need busybox and dash (apt-get install busybox-static dash)');
const SHELLS = FOUND.length > 0 ? FOUND : [['sh']];

function cli(shell: string[], args: string[], options: { cwd: string; env?: Record<string, string>; input?: string; as?: string }) {
  const argv0 = join(options.cwd, '.tools', options.as ?? 'circleci');
  mkdirSync(join(options.cwd, '.tools'), { recursive: true });
  if (!existsSync(argv0)) writeFileSync(argv0, readFileSync(SCRIPT), { mode: 0o755 });
  const r = spawnSync(shell[0], [...shell.slice(1), argv0, ...args], {
    cwd: options.cwd,
    input: options.input ?? '',
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GYRE_JOB_DIR: join(options.cwd, 'job'), ...options.env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const FILES = ['tests/a/b/seven.test', 'tests/a/one.test', 'tests/a/three.test', 'tests/b/four.test', 'tests/b/two.test', 'tests/five.test', 'tests/six.test'];
const SECONDS: Record<string, number> = { seven: 9, one: 8, two: 7, three: 3, four: 2, five: 1, six: 1 };
const secondsOf = (file: string) => SECONDS[file.replace(/^.*\/|\.test$/g, '')];

describe.each(SHELLS.map((s) => [s.join(' '), s] as const))('the in-job circleci script under %s', (_name, shell) => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-cli-'));
    for (const f of [...FILES, 'tests/notes.txt', 'other/x.test']) {
      mkdirSync(join(dir, f, '..'), { recursive: true });
      writeFileSync(join(dir, f), 'x'.repeat(secondsOf(f) ?? 1));
    }
    mkdirSync(join(dir, 'job'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const split = (args: string[], input: string, env: Record<string, string> = {}) => cli(shell, ['tests', 'split', ...args], { cwd: dir, input, env });

  it('globs with ** (zero or more directories), *, ?, [..] and {a,b}, sorted, each file once', () => {
    expect(cli(shell, ['tests', 'glob', 'tests/**/*.test'], { cwd: dir }).stdout.split('\n').filter(Boolean)).toEqual(FILES);
    expect(cli(shell, ['tests', 'glob', 'tests/{a,b}/*.test', 'tests/?i*.test', './tests/a/**/*.test'], { cwd: dir }).stdout).toBe(
      ['tests/a/b/seven.test', 'tests/a/one.test', 'tests/a/three.test', 'tests/b/four.test', 'tests/b/two.test', 'tests/five.test', 'tests/six.test'].join('\n') + '\n',
    );
    expect(cli(shell, ['tests', 'glob', 'tests/[ab]/t*.test'], { cwd: dir }).stdout).toBe('tests/a/three.test\ntests/b/two.test\n');
    expect(cli(shell, ['tests', 'glob', `${dir}/other/*.test`], { cwd: dir }).stdout).toBe(`${dir}/other/x.test\n`);
    expect(cli(shell, ['tests', 'glob', 'nowhere/**/*.test'], { cwd: dir })).toMatchObject({ status: 0, stdout: '' });
    expect(cli(shell, ['tests', 'glob'], { cwd: dir })).toMatchObject({ status: 1, stderr: expect.stringContaining('tests glob needs at least one pattern') });
  });

  it('splits by name: sorted, round-robin over CIRCLE_NODE_TOTAL nodes, every name on exactly one node', () => {
    const shuffled = [...FILES].reverse().join(' ') + '\n' + FILES[0];
    const shares = [0, 1, 2].map((i) => split([], shuffled, { CIRCLE_NODE_INDEX: String(i), CIRCLE_NODE_TOTAL: '3' }).stdout);
    expect(shares).toEqual([
      'tests/a/b/seven.test\ntests/b/four.test\ntests/six.test\n',
      'tests/a/one.test\ntests/b/two.test\n',
      'tests/a/three.test\ntests/five.test\n',
    ]);
    // --index/--total win over the variables; a file of names works as stdin does.
    writeFileSync(join(dir, 'names.txt'), FILES.join('\n'));
    expect(split(['--index=1', '--total', '2', 'names.txt'], '', { CIRCLE_NODE_INDEX: '0', CIRCLE_NODE_TOTAL: '3' }).stdout).toBe('tests/a/one.test\ntests/b/four.test\ntests/five.test\n');
    expect(split([], FILES.join('\n'), {}).stdout.split('\n').filter(Boolean)).toEqual(FILES);
  });

  it('splits by timings of the last run: heaviest first into the lightest node; unknown tests weigh the average', () => {
    const rows = FILES.map((f) => ({ file: `./${f}`, classname: `C.${secondsOf(f)}`, name: f, seconds: secondsOf(f) }));
    writeFileSync(join(dir, 'job', 'timings'), timingsText(rows));
    const shares = [0, 1, 2].map((i) => split(['--split-by=timings', '--show-counts'], FILES.join('\n'), { CIRCLE_NODE_INDEX: String(i), CIRCLE_NODE_TOTAL: '3' }));
    // seven 9 → 0, one 8 → 1, two 7 → 2, three 3 → 2, four 2 → 1, five 1 → 0, six 1 → 0 (a tie goes to fewer tests, then the lower index).
    expect(shares.map((s) => s.stdout)).toEqual(['tests/a/b/seven.test\ntests/five.test\ntests/six.test\n', 'tests/a/one.test\ntests/b/four.test\n', 'tests/a/three.test\ntests/b/two.test\n']);
    expect(shares[1].stderr).toContain('node 1 of 3: 2 tests, weight 10.000 (this node)');

    // A test with no timing weighs the average of the known ones (31/7 ≈ 4.43 s): fourth heaviest,
    // it goes to the lightest node (2); --time-default sets the weight instead (20 s: the heaviest).
    const withNew = [...FILES, 'tests/new.test'].join('\n');
    const node2 = split(['--split-by=timings', '--index=2', '--total=3'], withNew);
    expect(node2.stderr).toContain('No timing found for "tests/new.test"');
    expect(node2.stdout).toBe('tests/b/two.test\ntests/new.test\n');
    expect(split(['--split-by=timings', '--index=0', '--total=3'], withNew).stdout).toBe('tests/a/b/seven.test\ntests/b/four.test\ntests/five.test\n');
    expect(split(['--split-by=timings', '--time-default=20s', '--index=0', '--total=3'], withNew).stdout).toBe('tests/new.test\n');

    // By class name, explicitly or detected from the names given.
    const classes = 'C.9\nC.8\nC.7\nC.3\n';
    expect(split(['--split-by=timings', '--timings-type=classname', '--index=1', '--total=2'], classes).stdout).toBe('C.7\nC.8\n');
    expect(split(['--split-by=timings', '--index=0', '--total=2'], classes).stdout).toBe('C.3\nC.9\n');
    expect(split(['--split-by=timings', '--timings-type=testname', '--index=0', '--total=2'], 'tests/a/one.test tests/b/two.test').stdout).toBe('tests/a/one.test\n');
  });

  it('falls back to names, saying so as CircleCI does, when there are no timings', () => {
    const none = split(['--split-by=timings', '--index=0', '--total=3'], FILES.join('\n'));
    expect(none.stderr).toContain('Error auto-detecting timing type, falling back to weighting by name.');
    expect(none.stdout).toBe('tests/a/b/seven.test\ntests/b/four.test\ntests/six.test\n');
    writeFileSync(join(dir, 'job', 'timings'), timingsText([{ file: 'elsewhere.test', classname: 'X', name: 'x', seconds: 3 }]));
    const explicit = split(['--split-by=timings', '--timings-type=filename', '--index=0', '--total=3'], FILES.join('\n'));
    expect(explicit.stderr).toContain('Requested weighting by historical based timing, but they are not present. Falling back to weighting by name.');
    expect(explicit.stdout).toBe(none.stdout);
  });

  it('splits by file size, largest first, and refuses bad flags naming them', () => {
    expect([0, 1].map((i) => split(['--split-by=filesize', `--index=${i}`, '--total=2'], FILES.join(' ')).stdout)).toEqual([
      'tests/a/b/seven.test\ntests/a/three.test\ntests/b/four.test\ntests/five.test\n',
      'tests/a/one.test\ntests/b/two.test\ntests/six.test\n',
    ]);
    expect(split(['--split-by=size'], 'a')).toMatchObject({ status: 1, stderr: expect.stringContaining('--split-by=size is not one of name, filesize, timings') });
    expect(split(['--index=3', '--total=3'], 'a')).toMatchObject({ status: 1, stderr: expect.stringContaining('node index 3 (--index or CIRCLE_NODE_INDEX) must be below the node total 3') });
    expect(split(['--timings-type=bogus'], 'a')).toMatchObject({ status: 1, stderr: expect.stringContaining('--timings-type=bogus is not one of') });
    expect(split(['--time-default=soon'], 'a')).toMatchObject({ status: 1, stderr: expect.stringContaining('--time-default=soon is not a duration') });
    expect(split(['no-such-file'], '')).toMatchObject({ status: 1, stderr: expect.stringContaining("cannot read the file of names 'no-such-file'") });
    expect(cli(shell, ['config', 'validate'], { cwd: dir })).toMatchObject({ status: 1, stderr: expect.stringContaining("'config' is not available inside a Gyre job") });
  });

  it('tests run pipes this node’s share to the command (which uses xargs), and does not run it for an empty share', () => {
    const run = (args: string[], input: string) => cli(shell, ['tests', 'run', ...args], { cwd: dir, input });
    const r = run(['--command=xargs echo got >ran.txt', '--split-by=name', '--index=2', '--total=3', '--verbose'], FILES.join('\n'));
    expect(r.status).toBe(0);
    expect(readFileSync(join(dir, 'ran.txt'), 'utf8')).toBe('got tests/a/three.test tests/five.test\n');
    expect(r.stderr).toContain('node 2 of 3, split by name: 2 tests');
    expect(run(['--command', 'xargs false'], 'a')).toMatchObject({ status: 123 });
    rmSync(join(dir, 'ran.txt'));
    expect(run(['--command=xargs echo got >ran.txt', '--index=1', '--total=2'], 'only-one')).toMatchObject({ status: 0 });
    expect(existsSync(join(dir, 'ran.txt'))).toBe(false);
    expect(run([], 'a')).toMatchObject({ status: 1, stderr: expect.stringContaining('tests run needs --command') });
  });

  it('never evaluates the names it is given (hostile test names from a build or a fork)', () => {
    // Names are split on white space, as CircleCI splits them: these hold none.
    const hostile = ['$(touch${IFS}pwned1)', '`touch${IFS}pwned2`', ';touch${IFS}pwned3', '|touch${IFS}pwned4', '"$(touch${IFS}pwned5)"', '*', '-n', '--index=5'];
    writeFileSync(join(dir, 'job', 'timings'), timingsText(hostile.map((h, i) => ({ file: h, classname: h, name: h, seconds: i }))));
    for (const by of ['name', 'timings', 'filesize']) {
      const r = split([`--split-by=${by}`, '--index=0', '--total=1'], hostile.join('\n'));
      expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual([...hostile].sort());
    }
    cli(shell, ['tests', 'run', '--command=cat >/dev/null', '--index=0', '--total=1'], { cwd: dir, input: hostile.join('\n') });
    cli(shell, ['tests', 'glob', '$(touch pwned6)', '`touch pwned7`/*'], { cwd: dir });
    for (let i = 1; i <= 7; i++) expect(existsSync(join(dir, `pwned${i}`))).toBe(false);
  });

  it('step halt leaves the marker the agent looks for, under either name', () => {
    expect(cli(shell, ['step', 'halt'], { cwd: dir, as: 'circleci-agent' })).toMatchObject({ status: 0, stdout: '' });
    expect(existsSync(join(dir, 'job', 'halt'))).toBe(true);
    expect(cli(shell, ['step', 'stop'], { cwd: dir, as: 'circleci-agent' })).toMatchObject({ status: 1, stderr: expect.stringContaining("unknown step command 'stop' (allowed: halt)") });
  });
});

describe('the files the agent writes into a job', () => {
  it('keeps hostile test names to one line and four fields, and drops what is not a time', () => {
    const text = timingsText([
      { file: 'a\tb\nc', classname: 'x\r\ny', name: 'n\u0000', seconds: 1.5 },
      { file: 'f', classname: '', name: '', seconds: Number.NaN },
      { file: '', classname: '', name: '', seconds: 3 },
      { file: 'g', classname: 'G', name: 'g', seconds: -1 },
    ]);
    expect(text).toBe('a b c\tx  y\tn \t1.5\n');
    expect(jobFiles([]).map((f) => [f.path, f.mode.toString(8)])).toEqual([['bin/circleci', '755'], ['bin/circleci-agent', '755'], ['timings', '644']]);
    expect(parsePreviousTestResults({ items: [{ file: 'a', classname: 'b', name: 'c', run_time: 2 }, { file: 1 }, 'x'] })).toEqual([{ file: 'a', classname: 'b', name: 'c', seconds: 2 }]);
    expect(parsePreviousTestResults({ items: 'nope' })).toEqual([]);
  });
});

/** A job of `parallelism: 3` that splits the tests by timings and stores made-up times for its share. */
function splitConfig(image: string): string {
  const times = Object.entries(SECONDS).map(([k, v]) => `*/${k}.test) t=${v} ;;`).join(' ');
  return `version: 2.1
jobs:
  split:
    docker: [{ image: ${image} }]
    parallelism: 3
    steps:
      - run: |
          mkdir -p tests/a/b tests/b results
          for f in a/b/seven a/one a/three b/four b/two five six; do : > tests/$f.test; done
          : > tests/not-a-test.txt
      - run: |
          circleci tests glob "tests/**/*.test" | circleci tests split --split-by=timings > share
          sed 's/^/share: /' share
          { echo '<testsuite name="s">'
            while read -r f; do case $f in ${times} esac; echo "<testcase classname=\\"c\\" name=\\"$f\\" file=\\"$f\\" time=\\"$t\\"/>"; done < share
            echo '</testsuite>'; } > results/junit.xml
      - store_test_results: { path: results }
  halt:
    docker: [{ image: ${image} }]
    steps:
      - run: |
          echo before
          circleci-agent step halt
          echo rest-of-the-step-runs
      - run: echo step-two-ran
      - run: { command: echo always-ran, when: always }
workflows:
  w:
    jobs: [split, halt]
`;
}

async function sharesOf(g: TestGyre, slug: string, job: number): Promise<string[][]> {
  const shares: string[][] = [];
  for (const node of [0, 1, 2]) {
    const out = await g.raw('GET', `/api/v2/project/${slug}/job/${job}/output?node_index=${node}&step=1`);
    shares.push([...out.text.matchAll(/^share: (.*)$/gm)].map((m) => m[1]));
  }
  return shares;
}

const BY_NAME = [
  ['tests/a/b/seven.test', 'tests/b/four.test', 'tests/six.test'],
  ['tests/a/one.test', 'tests/b/two.test'],
  ['tests/a/three.test', 'tests/five.test'],
];
const BY_TIME = [
  ['tests/a/b/seven.test', 'tests/five.test', 'tests/six.test'],
  ['tests/a/one.test', 'tests/b/four.test'],
  ['tests/a/three.test', 'tests/b/two.test'],
];

async function checkSplitAndHalt(g: TestGyre, slug: string) {
  // First run: no earlier run, so by name; every file on exactly one node.
  const first = await g.waitForPipeline((await g.trigger(slug)).id, 90_000);
  expect(first.jobs.split.status).toBe('success');
  const byName = await sharesOf(g, slug, first.jobs.split.job_number);
  expect(byName).toEqual(BY_NAME);
  expect(byName.flat().sort()).toEqual(FILES);
  const err = await g.raw('GET', `/api/v2/project/${slug}/job/${first.jobs.split.job_number}/output?node_index=0&step=1`);
  expect(err.text).toContain('Error auto-detecting timing type, falling back to weighting by name.');

  // Second run: the first run's stored times decide.
  const second = await g.waitForPipeline((await g.trigger(slug)).id, 90_000);
  expect(second.jobs.split.status).toBe('success');
  const byTime = await sharesOf(g, slug, second.jobs.split.job_number);
  expect(byTime).toEqual(BY_TIME);
  expect(byTime.flat().sort()).toEqual(FILES);

  // step halt: the step itself goes on, no later step runs (not even `when: always`), success.
  expect(first.jobs.halt.status).toBe('success');
  const steps = (await g.api('GET', `/api/v2/project/${slug}/job/${first.jobs.halt.job_number}/steps`)).items;
  expect(steps.map((s: any) => [s.index, s.status])).toEqual([[0, 'success']]);
  const out = await g.raw('GET', `/api/v2/project/${slug}/job/${first.jobs.halt.job_number}/output?step=0`);
  expect(out.text).toContain('before\nrest-of-the-step-runs\n');
}

describe('jobs using the in-job CLI on the shell executor', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre();
  }, 60_000);
  afterAll(async () => g?.stop());

  it('split by timings across 3 nodes covers every file once, and step halt ends the job successfully', async () => {
    await g.addProject('gh/cli/shell', { '.circleci/config.yml': splitConfig('cimg/base:stable') });
    await checkSplitAndHalt(g, 'gh/cli/shell');
  }, 120_000);

  it("reads timings only from the task's own project, from the last run that succeeded before the job was queued", async () => {
    await g.addProject('gh/cli/other', { '.circleci/config.yml': splitConfig('cimg/base:stable') });
    const run = await g.waitForPipeline((await g.trigger('gh/cli/other')).id, 90_000);
    const [task] = await g.gyre.store.query<{ id: string }>('SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.id = (SELECT id FROM jobs WHERE number = $1 AND name = $2 AND project_id = (SELECT id FROM projects WHERE slug = $3))', [
      run.jobs.split.job_number,
      'split',
      'gh/cli/other',
    ]);
    // Its project's only run is itself: nothing, though gh/cli/shell has runs of a job of that name.
    expect(await previousTestResults(g.gyre.store, task.id)).toEqual({ jobNumber: null, items: [] });
    const again = await g.waitForPipeline((await g.trigger('gh/cli/other')).id, 90_000);
    const [next] = await g.gyre.store.query<{ id: string }>('SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.number = $1 AND j.project_id = (SELECT id FROM projects WHERE slug = $2)', [again.jobs.split.job_number, 'gh/cli/other']);
    const previous = await previousTestResults(g.gyre.store, next.id);
    expect(previous.jobNumber).toBe(run.jobs.split.job_number);
    expect(previous.items.map((i) => i.file).sort()).toEqual(FILES);
    expect(previous.items.find((i) => i.file === 'tests/a/one.test')?.run_time).toBe(8);
  }, 120_000);

  it('runs a corpus job that halts (matplotlib docs-python39: check-skip on a "[skip circle]" pull request)', async () => {
    // test/fixtures/corpus/matplotlib__matplotlib.yml: matplotlib/matplotlib's .circleci/config.yml as in ../shared/corpus.
    const config = readFileSync(resolve(__dirname, '../fixtures/corpus/matplotlib__matplotlib.yml'), 'utf8');
    const repo = await g.addProject('gh/matplotlib/matplotlib', { '.circleci/config.yml': config });
    commitFiles(repo, 'main', { 'README.md': 'docs typo\n' }, 'Fix a typo [skip circle]');
    // What a pull request's job sees (CircleCI sets it; here the project's variable stands in).
    await g.api('POST', '/api/v2/project/gh/matplotlib/matplotlib/envvar', { name: 'CIRCLE_PULL_REQUEST', value: 'https://github.com/matplotlib/matplotlib/pull/1' });
    const { jobs } = await g.waitForPipeline((await g.trigger('gh/matplotlib/matplotlib', { branch: 'main' })).id, 90_000);
    expect(jobs['docs-python39'].status).toBe('success');
    const steps = (await g.api('GET', `/api/v2/project/gh/matplotlib/matplotlib/job/${jobs['docs-python39'].job_number}/steps`)).items;
    expect(steps.map((s: any) => [s.name, s.status])).toEqual([
      ['Checkout code', 'success'],
      ['Check-skip', 'success'],
    ]);
    const out = await g.raw('GET', `/api/v2/project/gh/matplotlib/matplotlib/job/${jobs['docs-python39'].job_number}/output?step=1`);
    // The project variable is a secret, so its value is masked in the log.
    expect(out.text).toContain('Got commit message:\nFix a typo [skip circle]');
    expect(out.text).toContain('Skip detected, exiting job docs-python39 for PR ********.');
  }, 120_000);
});

const socket = containerSocket();
if (!socket) console.log('test/execution/in-job-cli: container tests skipped, no Docker Engine API socket (set GYRE_TEST_DOCKER_SOCKET or start `podman system service`)');
const withEngine = socket ? describe : describe.skip;

withEngine('jobs using the in-job CLI in the busybox image (no Node.js, no glibc)', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_EXECUTOR: 'docker', GYRE_DOCKER_SOCKET: socket!, GYRE_RUNNER_SLOTS: '3' } });
  }, 60_000);
  afterAll(async () => g?.stop());

  it('split by timings across 3 nodes covers every file once, and step halt ends the job successfully', async () => {
    await g.addProject('gh/cli/busybox', { '.circleci/config.yml': splitConfig(BUSYBOX_IMAGE) });
    await checkSplitAndHalt(g, 'gh/cli/busybox');
  }, 240_000);
});
