import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { packOrbDirectory } from '../../runtime/config/orb-pack';
import { compileConfig, createOrbDocumentCache } from '../../runtime/config/compiler';
import { createMemoryOrbSource, pickVersion } from '../../runtime/config/orb-registry';
import { DOCKER } from './helpers';
import { makeOrbSourceTree } from '../support/orb-tree';

describe('Orbs', () => {
  const orbs = createMemoryOrbSource();
  orbs.publish('gyre/base', '1.0.0', `version: 2.1
executors:
  default: {parameters: {tag: {type: string, default: stable}}, docker: [{image: "cimg/base:<< parameters.tag >>"}]}
commands:
  hello: {parameters: {to: {type: string, default: you}}, steps: [{run: "echo hello << parameters.to >>"}]}
`);
  orbs.publish('gyre/app', '2.3.1', `version: 2.1
orbs: {base: gyre/base@1}
commands:
  setup: {steps: [checkout, {base/hello: {to: app}}]}
jobs:
  build:
    parameters: {extra: {type: steps, default: []}}
    executor: {name: base/default, tag: "2024.01"}
    steps: [setup, {steps: << parameters.extra >>}]
`);
  const compile = (yaml: string) => compileConfig(yaml, { trigger: { branch: 'main' }, orbs });

  it('orbs use their own commands, executors and the orbs they import; steps arguments use the caller’s commands', async () => {
    const r = await compile(`version: 2.1
orbs: {app: gyre/app@2.3}
commands:
  mine: {steps: [{run: echo mine}]}
workflows:
  w:
    jobs:
      - app/build: {extra: [mine]}
`);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    const j = r.plan.workflows[0].jobs[0];
    expect(j.name).toBe('app/build');
    expect(j.spec!.executor).toEqual({ kind: 'docker', images: [{ image: 'cimg/base:2024.01' }] });
    expect(j.spec!.steps.map((s) => s.name)).toEqual(['Checkout code', 'echo hello app', 'echo mine']);
  });

  it('inline orbs work like imported ones', async () => {
    const r = await compile(`version: 2.1
orbs:
  local:
    executors: {e: {${DOCKER}}}
    jobs: {j: {executor: e, steps: [{run: echo inline}]}}
workflows: {w: {jobs: [local/j]}}
`);
    expect(r.ok && r.plan.workflows[0].jobs[0].spec!.steps[0]).toMatchObject({ command: 'echo inline' });
  });

  it('an unknown orb, version or element is a problem naming it', async () => {
    const r = await compile(`version: 2.1
orbs: {x: gyre/nothing@1.0.0, y: gyre/base@9, z: gyre/base@1}
jobs: {a: {executor: z/nope, steps: [z/hello, z/missing]}}
workflows: {w: {jobs: [a]}}
`);
    expect(r.ok).toBe(false);
    const text = r.ok ? '' : r.problems.map((p) => `${p.path}: ${p.message}`).join('\n');
    expect(text).toMatch(/orbs\.x: orb gyre\/nothing@1\.0\.0 is not in the orb registry/);
    expect(text).toMatch(/orbs\.y: orb gyre\/base@9 is not in the orb registry/);
    expect(text).toMatch(/executor 'z\/nope': orb gyre\/base@1\.0\.0 has no executor 'nope'/);
    expect(text).toMatch(/command 'z\/missing': orb gyre\/base@1\.0\.0 has no command 'missing'/);
  });

  it('pipeline parameters are not visible inside orbs', async () => {
    const o = createMemoryOrbSource();
    o.publish('gyre/leaky', '1.0.0', 'version: 2.1\ncommands:\n  c: {steps: [{run: "echo << pipeline.parameters.secret >> << pipeline.git.branch >>"}]}\n');
    const r = await compileConfig(
      `version: 2.1
parameters: {secret: {type: string, default: s}}
orbs: {l: gyre/leaky@1}
jobs: {a: {${DOCKER}, steps: [l/c]}}
workflows: {w: {jobs: [a]}}
`,
      { trigger: { branch: 'main' }, orbs: o },
    );
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problems[0].message).toMatch(/no pipeline parameter 'secret'.*not visible inside orbs/);
  });

  it('version references resolve to the newest match', () => {
    const versions = ['1.0.0', '1.2.0', '1.2.9', '1.10.1', '2.0.0', 'dev:alpha'];
    expect(pickVersion(versions, '1')).toBe('1.10.1');
    expect(pickVersion(versions, '1.2')).toBe('1.2.9');
    expect(pickVersion(versions, '1.2.0')).toBe('1.2.0');
    expect(pickVersion(versions, 'volatile')).toBe('2.0.0');
    expect(pickVersion(versions, 'dev:alpha')).toBe('dev:alpha');
    expect(pickVersion(versions, '3')).toBeUndefined();
    expect(pickVersion(versions, '1.x')).toBeUndefined();
  });

  it('packs an orb source tree, inlining <<include()>> files', () => {
    const tree = makeOrbSourceTree();
    const packed = packOrbDirectory(tree);
    expect(packed).toMatch(/^version: 2.1/m);
    expect(packed).toMatch(/^commands:\n {2}notify:/m);
    expect(packed).toContain('echo "notifying: $TEXT"');
    expect(packed).not.toMatch(/<<include\(/);
    const dir = mkdtempSync(path.join(tmpdir(), 'orb-'));
    mkdirSync(path.join(dir, 'commands'));
    writeFileSync(path.join(dir, '@orb.yml'), 'version: 2.1\n');
    writeFileSync(path.join(dir, 'commands', 'x.yml'), 'steps: [{run: "<<include(../../etc/passwd)>>"}]\n');
    expect(() => packOrbDirectory(dir)).toThrow(/outside the orb source tree/);
  });

  it('an orb document cache gives the same plans and the same positioned problems on a hit', async () => {
    const o = createMemoryOrbSource();
    o.publish('gyre/c', '1.0.0', 'version: 2.1\ncommands:\n  ok: {steps: [{run: echo ok}]}\n  bad:\n    steps:\n      - run: "echo << parameters.nope >>"\n');
    const orbCache = createOrbDocumentCache();
    const good = `version: 2.1\norbs: {c: gyre/c@1}\njobs: {a: {${DOCKER}, steps: [c/ok]}}\nworkflows: {w: {jobs: [a]}}\n`;
    const bad = good.replace('c/ok', 'c/bad');
    const first = await compileConfig(good, { trigger: { branch: 'main' }, orbs: o, orbCache });
    const second = await compileConfig(good, { trigger: { branch: 'main' }, orbs: o, orbCache });
    expect(second).toEqual(first);
    const misses = await compileConfig(bad, { trigger: { branch: 'main' }, orbs: o });
    const hits = await compileConfig(bad, { trigger: { branch: 'main' }, orbs: o, orbCache });
    expect(hits).toEqual(misses);
    expect(!hits.ok && hits.problems[0]).toMatchObject({ path: 'orbs.c.commands.bad.steps[0].run', line: 6, message: expect.stringMatching(/declares no parameter 'nope'/) });
  });

  it('override-with replaces a job by the orb job of that name, and falls back when the orb has none', async () => {
    const yaml = (ref: string) => `version: 2.1
orbs: {base: gyre/app@2}
jobs: {build: {${DOCKER}, steps: [{run: echo local}]}}
workflows: {w: {jobs: [{build: {override-with: ${ref}}}]}}
`;
    const replaced = await compile(yaml('base/build'));
    expect(replaced.ok && replaced.plan.workflows[0].jobs[0].spec!.steps.map((s) => s.name)).toEqual(['Checkout code', 'echo hello app']);
    const fallback = await compile(yaml('base/nothing'));
    expect(fallback.ok && fallback.plan.workflows[0].jobs[0].spec!.steps.map((s) => s.name)).toEqual(['echo local']);
  });
});
