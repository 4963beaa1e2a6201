import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileConfig } from '../../runtime/config/compiler';
import type { CompileResult, TriggerContext } from '../../runtime/config/plan';
import { CORPUS, CORPUS_PRESENT, corpusConfig, corpusFiles, corpusOrbSource } from './corpus';

/**
 * Every real config in the corpus compiles, and its plan is pinned for a push to the default
 * branch, to a feature branch and, where the file has tag filters, to a tag.
 * Orbs: circleci/node 7.x and circleci/slack come from the corpus source trees (packed by our
 * packer); every other orb is a small fixture in test/fixtures/orbs/ (see its README).
 */
if (!CORPUS_PRESENT) console.warn(`skipping the corpus configs: ${CORPUS} is absent`);
const orbs = CORPUS_PRESENT ? corpusOrbSource() : undefined;

function summary(r: CompileResult) {
  if (!r.ok) return { problems: r.problems };
  return {
    setup: r.plan.setup,
    workflows: r.plan.workflows.map((w) => ({
      name: w.name,
      jobs: w.jobs.map((j) => `${j.name} [${j.type}]${j.requires.length ? ` <- ${j.requires.map((q) => (q.statuses.join() === 'success' ? q.job : `${q.job}:${q.statuses.join('|')}`)).join(', ')}` : ''}`),
    })),
  };
}

function defaultBranch(text: string): string {
  return /\bmaster\b/.test(text) && !/\bmain\b/.test(text) ? 'master' : 'main';
}

/**
 * Without the corpus, the same tests are declared skipped, by the names its pinned plans carry:
 * Jest then keeps those snapshots rather than report them obsolete, which fails a run.
 */
function pinnedFiles(): string[] {
  const snap = readFileSync(join(__dirname, '__snapshots__', 'corpus.test.ts.snap'), 'utf8');
  const names = [...snap.matchAll(/^exports\[`(.+?) compiles for a (?:push to the default branch|push to a feature branch|tag) \d+`\]/gm)].map((m) => m[1]);
  return [...new Set(names)];
}

(CORPUS_PRESENT ? describe.each(corpusFiles()) : describe.skip.each(pinnedFiles()))('%s', (file) => {
  const text = CORPUS_PRESENT ? corpusConfig(file) : '';
  const compile = (trigger: TriggerContext) => compileConfig(text, { trigger, orbs });

  it('compiles for a push to the default branch', async () => {
    const r = await compile({ branch: defaultBranch(text) });
    expect(r.ok ? [] : r.problems).toEqual([]);
    expect(summary(r)).toMatchSnapshot();
  });

  it('compiles for a push to a feature branch', async () => {
    const r = await compile({ branch: 'feature/gyre-test' });
    expect(r.ok ? [] : r.problems).toEqual([]);
    expect(summary(r)).toMatchSnapshot();
  });

  if (CORPUS_PRESENT ? /^\s*tags:/m.test(text) : true) {
    it('compiles for a tag', async () => {
      const r = await compile({ tag: 'v1.2.3' });
      expect(r.ok ? [] : r.problems).toEqual([]);
      expect(summary(r)).toMatchSnapshot();
    });
  }

  it('compiles its own processed output to the same plan', async () => {
    const first = await compile({ branch: defaultBranch(text) });
    if (!first.ok) throw new Error('does not compile');
    expect(first.compiledYaml).toMatch(/^version: 2\n/);
    expect(first.compiledYaml).toContain('# Original config.yml file:');
    const again = await compileConfig(first.compiledYaml, { trigger: { branch: defaultBranch(text) }, orbs });
    expect(again.ok ? [] : again.problems).toEqual([]);
    if (again.ok) expect(summary(again)).toEqual(summary(first));
  });
});
