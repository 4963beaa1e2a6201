import { existsSync } from 'node:fs';
import { compileConfig } from '../../runtime/config/compiler';
import { createMemoryOrbSource } from '../../runtime/config/orb-registry';
import { loadYaml, Positions } from '../../runtime/config/yaml-loader';
import { CONFIGS, corpusConfig, corpusFiles, corpusOrbSource } from './corpus';

/**
 * A config that names orbs the registry lacks gets one problem listing every missing orb with the
 * command that fetches them (`gyre orb pull … --out orbs.bundle`, then `gyre orb import orbs.bundle`),
 * beside one problem per import (with its line), and nothing else about those orbs.
 */

const trigger = { branch: 'main' };
const DOCKER = 'docker: [{image: cimg/base:2024.01}]';
const summaryOf = (problems: readonly { message: string }[]) => problems.filter((p) => /missing from Gyre's orb registry/.test(p.message));

describe('the missing-orb error', () => {
  it('lists every missing orb once, in the order written, with the one command that fetches them', async () => {
    const orbs = createMemoryOrbSource();
    orbs.publish('acme/here', '1.0.0', `version: 2.1\ncommands: {hi: {steps: [{run: echo hi}]}}\n`);
    const r = await compileConfig(
      `version: 2.1
orbs:
  node: circleci/node@5.2
  here: acme/here@1
  aws: circleci/aws-cli@4.1.1
  again: circleci/node@5.2
jobs:
  a:
    executor: node/default
    steps: [here/hi, aws/setup, node/install]
workflows:
  w:
    jobs: [a, node/test]
`,
      { trigger, orbs },
    );
    expect(r.ok).toBe(false);
    const problems = r.ok ? [] : r.problems;
    expect(problems.map((p) => `${p.line ?? '-'} ${p.path ?? '-'}: ${p.message}`)).toEqual([
      '3 orbs.node: orb circleci/node@5.2 is not in the orb registry',
      '5 orbs.aws: orb circleci/aws-cli@4.1.1 is not in the orb registry',
      '6 orbs.again: orb circleci/node@5.2 is not in the orb registry',
      "- -: 2 orbs are missing from Gyre's orb registry: circleci/node@5.2, circleci/aws-cli@4.1.1. " +
        'On a machine with internet access run `gyre orb pull circleci/node@5.2 circleci/aws-cli@4.1.1 --out orbs.bundle` (it also fetches the orbs they import), ' +
        'then on this install `gyre orb import orbs.bundle`',
    ]);
  });

  it('names an orb that an imported orb imports', async () => {
    const orbs = createMemoryOrbSource();
    orbs.publish('acme/tools', '2.0.0', `version: 2.1\norbs: {jq: circleci/jq@2.2.0}\ncommands: {t: {steps: [jq/install]}}\n`);
    const r = await compileConfig(`version: 2.1\norbs: {t: acme/tools@2}\njobs: {a: {${DOCKER}, steps: [t/t]}}\nworkflows: {w: {jobs: [a]}}\n`, { trigger, orbs });
    const problems = r.ok ? [] : r.problems;
    expect(summaryOf(problems).map((p) => p.message)).toEqual([expect.stringContaining('1 orb is missing from Gyre\'s orb registry: circleci/jq@2.2.0. On a machine with internet access run `gyre orb pull circleci/jq@2.2.0 --out orbs.bundle`')]);
    expect(problems.map((p) => p.message).join('\n')).not.toMatch(/no orb 'jq' is imported/);
  });

  it('other mistakes are still reported beside it', async () => {
    const r = await compileConfig(`version: 2.1\norbs: {n: circleci/node@5}\njobs: {a: {executor: n/default, steps: [nope/x]}}\nworkflows: {w: {jobs: [a, b]}}\n`, { trigger, orbs: createMemoryOrbSource() });
    const text = r.ok ? '' : r.problems.map((p) => p.message).join('\n');
    expect(text).toMatch(/1 orb is missing from Gyre's orb registry: circleci\/node@5\./);
    expect(text).toMatch(/command 'nope\/x': no orb 'nope' is imported/);
    expect(text).toMatch(/job 'b' is not defined/);
  });
});

// The corpus is shared data beside the repository; a clone without it skips this part.
const corpus = existsSync(CONFIGS) ? describe : describe.skip;

corpus('the corpus with an empty orb registry', () => {
  /** The `ns/orb@version` references in a config's own `orbs:` stanza. */
  const referencesOf = (text: string) => {
    const doc = loadYaml(text, new Positions()).value as { orbs?: Record<string, unknown> };
    return [...new Set(Object.values(doc?.orbs ?? {}).filter((v): v is string => typeof v === 'string').map((v) => v.trim()))];
  };

  it('fails only for want of orbs in 21 of the 39 configs, and each error lists every orb the config names', async () => {
    const files = corpusFiles();
    expect(files.length).toBe(39);
    const withOrbs = corpusOrbSource();
    const failing: string[] = [];
    for (const file of files) {
      const text = corpusConfig(file);
      const empty = await compileConfig(text, { trigger, orbs: createMemoryOrbSource() });
      if (empty.ok) continue;
      failing.push(file);
      // With the orbs present it compiles: the orbs were all it lacked.
      const full = await compileConfig(text, { trigger, orbs: withOrbs });
      expect({ file, problems: full.ok ? [] : full.problems }).toEqual({ file, problems: [] });
      // Every problem is about a missing orb, and the one summary names each orb the config imports.
      const [summary, ...more] = summaryOf(empty.problems);
      expect(more).toEqual([]);
      expect(empty.problems.filter((p) => p !== summary && !/^orb \S+ is not in the orb registry$/.test(p.message))).toEqual([]);
      const command = /`gyre orb pull (.+) --out orbs\.bundle`/.exec(summary.message)![1].split(' ');
      expect({ file, command }).toEqual({ file, command: referencesOf(text) });
    }
    expect(failing.length).toBe(21);
  });
});
