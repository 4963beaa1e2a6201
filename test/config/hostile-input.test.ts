import { compileSafeRegex } from '../../runtime/config/safe-regex';
import { compile, DOCKER } from './helpers';

/**
 * Each hostile input is refused (or answered) with a clear message at a linear cost: tens of
 * milliseconds here. The bound each test asserts, BLOW_UP_MS, is far above that and far below what
 * a quadratic or exponential path costs on these inputs (tens of seconds to forever), so it
 * catches a blow-up without failing on a busy machine (a CI run once measured 299 ms of CPU for
 * a case that takes 20).
 */
const BLOW_UP_MS = 2000;
/**
 * The CPU time one compilation costs this process (best of three after a warm-up). CPU time, not
 * wall time: the suite runs test files in parallel on two cores, so wall time measures the
 * neighbours; CPU time still catches a blow-up, which costs CPU whatever else runs.
 */
async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  let value = await fn();
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const before = process.cpuUsage();
    value = await fn();
    const used = process.cpuUsage(before);
    best = Math.min(best, (used.user + used.system) / 1000);
  }
  return { value, ms: best };
}

describe('hostile input', () => {
  it('an alias bomb (billion laughs) is an error', async () => {
    let yaml = 'version: 2.1\na0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n';
    for (let i = 1; i < 10; i++) yaml += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(',')}]\n`;
    yaml += `jobs: {j: {${DOCKER}, steps: [{run: {command: x, environment: {X: *a9}}}]}}\nworkflows: {w: {jobs: [j]}}\n`;
    const { value, ms } = await timed(() => compile(yaml));
    expect(value.ok).toBe(false);
    expect(!value.ok && value.problems[0].message).toMatch(/aliases expand to more than \d+ nodes/);
    expect(ms).toBeLessThan(BLOW_UP_MS);
  });

  it('10,000-deep nesting is an error (flow and block)', async () => {
    for (const yaml of ['x: ' + '['.repeat(10_000) + ']'.repeat(10_000), 'x:\n' + '- '.repeat(10_000) + 'a\n', 'x: ' + '{a: '.repeat(10_000) + '1' + '}'.repeat(10_000)]) {
      const { value, ms } = await timed(() => compile(yaml));
      expect(value.ok).toBe(false);
      expect(!value.ok && value.problems[0].message).toMatch(/nesting|indentation/);
      expect(ms).toBeLessThan(BLOW_UP_MS);
    }
  });

  it('a 20 MB scalar is an error', async () => {
    const yaml = `version: 2.1\nx: "${'a'.repeat(20 * 1024 * 1024)}"\n`;
    const { value, ms } = await timed(() => compile(yaml));
    expect(value.ok).toBe(false);
    expect(!value.ok && value.problems[0].message).toMatch(/characters; the limit is/);
    expect(ms).toBeLessThan(BLOW_UP_MS);
  });

  it('/(a+)+$/ against a 100,000-character branch name answers without backtracking', async () => {
    const yaml = `version: 2.1
jobs: {j: {${DOCKER}, steps: [checkout]}}
workflows:
  w:
    jobs:
      - j: {filters: {branches: {only: /(a+)+$/}}}
`;
    const hostile = await timed(() => compile(yaml, { branch: 'a'.repeat(100_000) + 'b' }));
    expect(hostile.value.ok && hostile.value.plan.workflows).toEqual([]); // no match: the job is filtered out
    expect(hostile.ms).toBeLessThan(BLOW_UP_MS);
    const matching = await timed(() => compile(yaml, { branch: 'a'.repeat(100_000) }));
    expect(matching.value.ok && matching.value.plan.workflows[0].jobs.map((j) => j.name)).toEqual(['j']);
    expect(matching.ms).toBeLessThan(BLOW_UP_MS);
  });

  it('the same pattern in a matches statement, and huge repetition counts, stay bounded', async () => {
    const yaml = `version: 2.1
jobs: {j: {${DOCKER}, steps: [checkout]}}
workflows:
  w:
    when: {matches: {pattern: "(x+x+)+y", value: "${'x'.repeat(50_000)}"}}
    jobs: [j]
`;
    const { value, ms } = await timed(() => compile(yaml));
    expect(value.ok && value.plan.workflows).toEqual([]);
    expect(ms).toBeLessThan(BLOW_UP_MS);
    expect(() => compileSafeRegex('((a{1000}){1000}){1000}')).toThrow(/pattern is too large/);
  });

  it('many unclosed mustache sections in one string stay linear', async () => {
    const command = '<<# parameters.f >>x'.repeat(20_000); // 400 KB: quadratic rescanning would take seconds
    const yaml = `version: 2.1
jobs:
  j:
    parameters: {f: {type: boolean, default: true}}
    ${DOCKER}
    steps: [{run: "<</ parameters.f >>${command}"}]
workflows: {w: {jobs: [j]}}
`;
    const { value, ms } = await timed(() => compile(yaml));
    expect(value.ok && value.plan.workflows[0].jobs[0].spec!.steps[0]).toMatchObject({ type: 'run' });
    expect(ms).toBeLessThan(BLOW_UP_MS);
  });

  it('a command that invokes itself is an error, not a stack overflow', async () => {
    const r = await compile(`version: 2.1
commands:
  loop: {steps: [loop]}
jobs: {j: {${DOCKER}, steps: [loop]}}
workflows: {w: {jobs: [j]}}
`);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problems[0].message).toMatch(/does a command invoke itself/);
  });

  it('commands fanning out into commands (exponential steps) are an error', async () => {
    let commands = 'c0: {steps: [{run: x}]}\n';
    for (let i = 1; i <= 12; i++) commands += `  c${i}: {steps: [${Array(10).fill(`c${i - 1}`).join(', ')}]}\n`;
    const yaml = `version: 2.1\ncommands:\n  ${commands}jobs: {j: {${DOCKER}, steps: [c12]}}\nworkflows: {w: {jobs: [j]}}\n`;
    const { value, ms } = await timed(() => compile(yaml));
    expect(value.ok).toBe(false);
    expect(!value.ok && value.problems[0].message).toMatch(/expands to more than 10000 steps/);
    expect(ms).toBeLessThan(BLOW_UP_MS);
  });

  it('a large workflow repeated through aliases is bounded', async () => {
    const values = `[${Array.from({ length: 40 }, (_, i) => i).join(',')}]`;
    const many = Array.from({ length: 30 }, (_, i) => `  w${i}: *wf`).join('\n');
    const yaml = `version: 2.1
jobs: {j: {parameters: {a: {type: integer}, b: {type: integer}}, ${DOCKER}, steps: [checkout]}}
workflows:
  w: &wf {jobs: [{j: {matrix: {parameters: {a: ${values}, b: ${values}}}}}]}
${many}
`;
    const { value: r, ms } = await timed(() => compile(yaml));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problems[0].message).toMatch(/more than 5000 jobs across its workflows/);
    expect(ms).toBeLessThan(BLOW_UP_MS);
  });

  it('a matrix product too large to run is an error', async () => {
    const values = `[${Array.from({ length: 50 }, (_, i) => i).join(',')}]`;
    const r = await compile(`version: 2.1
jobs: {j: {parameters: {a: {type: integer}, b: {type: integer}}, ${DOCKER}, steps: [checkout]}}
workflows: {w: {jobs: [{j: {matrix: {parameters: {a: ${values}, b: ${values}}}}}]}}
`);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problems[0].message).toMatch(/matrix expands to more than 2000 jobs/);
  });
});

describe('the backtracking-free regex engine', () => {
  const m = (re: string, s: string) => compileSafeRegex(re).matchesWhole(s);
  it('matches whole values with classes, groups, alternation, counted repetition and anchors', () => {
    expect(m('v\\d+\\.\\d+\\.\\d+', 'v1.22.3')).toBe(true);
    expect(m('v\\d+\\.\\d+\\.\\d+', 'v1.22.3-rc1')).toBe(false);
    expect(m('^(release|hotfix)/[a-z0-9._-]+$', 'hotfix/1.2_x')).toBe(true);
    expect(m('[^/]+', 'a/b')).toBe(false);
    expect(m('a{2,3}', 'aaa')).toBe(true);
    expect(m('a{2,3}', 'aaaa')).toBe(false);
    expect(m('(?:ab)*c?', 'ababc')).toBe(true);
    expect(m('.*-ui\\b.*', 'nomad-ui')).toBe(true);
    expect(m('(?i)MAIN', 'main')).toBe(true);
    expect(m('pull\\/[0-9]+', 'pull/123')).toBe(true);
  });
  it('refuses what it cannot run in linear time, with a reason', () => {
    expect(() => compileSafeRegex('(a)\\1')).toThrow(/backreferences are not supported/);
    expect(() => compileSafeRegex('(?=a)a')).toThrow(/lookaround/);
    expect(() => compileSafeRegex('a(')).toThrow(/missing \)/);
  });
});
