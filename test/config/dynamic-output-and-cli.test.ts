import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { runConfigCommand } from '../../runtime/config/cli';
import { plan, DOCKER } from './helpers';

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { stdout: (s: string) => out.push(s), stderr: (s: string) => err.push(s) } };
}

const dir = mkdtempSync(path.join(tmpdir(), 'gyre-config-'));
const write = (name: string, text: string) => {
  const p = path.join(dir, name);
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, text);
  return p;
};

describe('Dynamic configuration', () => {
  it('setup: true marks the plan as a setup plan', async () => {
    const r = await plan(`version: 2.1
setup: true
jobs: {generate: {${DOCKER}, steps: [{run: ./generate.sh}]}}
workflows: {setup: {jobs: [generate]}}
`);
    expect(r.plan.setup).toBe(true);
    expect(r.compiledYaml).toMatch(/^setup: true$/m);
    const plain = await plan(`version: 2.1\njobs: {a: {${DOCKER}, steps: [checkout]}}\nworkflows: {w: {jobs: [a]}}\n`);
    expect(plain.plan.setup).toBe(false);
  });
});

describe('Output (config process)', () => {
  it('is version 2 with commands, executors, parameters and matrix expanded, and the original appended as comments', async () => {
    const source = `version: 2.1
executors:
  e: {parameters: {v: {type: string, default: "1"}}, docker: [{image: "img:<< parameters.v >>"}]}
commands:
  say: {parameters: {w: {type: string}}, steps: [{run: "echo << parameters.w >>"}]}
jobs:
  t:
    parameters: {v: {type: string}}
    executor: {name: e, v: << parameters.v >>}
    steps: [{say: {w: "v<< parameters.v >>"}}]
workflows:
  w:
    jobs:
      - t: {matrix: {parameters: {v: ["1", "2"]}}}
`;
    const r = await plan(source);
    const [processed, original] = r.compiledYaml.split('# Original config.yml file:\n');
    expect(parse(processed)).toEqual({
      version: 2,
      jobs: {
        't-1': { docker: [{ image: 'img:1' }], steps: [{ run: 'echo v1' }] },
        't-2': { docker: [{ image: 'img:2' }], steps: [{ run: 'echo v2' }] },
      },
      workflows: { version: 2, w: { jobs: ['t-1', 't-2'] } },
    });
    expect(original.split('\n').slice(0, 2)).toEqual(['# version: 2.1', '# executors:']);
  });
});

describe('gyre config validate|process|plan', () => {
  const config = write(
    'config.yml',
    `version: 2.1
parameters: {deploy: {type: boolean, default: false}}
orbs: {tools: acme/tools@1}
jobs:
  build: {executor: tools/default, steps: [checkout]}
  ship: {${DOCKER}, steps: [{run: ./ship.sh}]}
workflows:
  main:
    jobs:
      - build: {filters: {tags: {only: /^v.*/}}}
      - hold: {type: approval, requires: [build], filters: {tags: {only: /^v.*/}}}
      - ship: {requires: [hold], filters: {branches: {only: main}, tags: {only: /^v.*/}}}
  deploy:
    when: << pipeline.parameters.deploy >>
    jobs: [ship]
`,
  );
  const orbDir = path.join(dir, 'orbs');
  write('orbs/acme/tools@1.0.0.yml', 'version: 2.1\nexecutors: {default: {docker: [{image: cimg/base:old}]}}\n');
  write('orbs/acme/tools@1.4.0/@orb.yml', 'version: 2.1\n');
  write('orbs/acme/tools@1.4.0/executors/default.yml', 'docker: [{image: cimg/base:new}]\n');

  it('validate: 0 for a valid file, 1 with every problem on stderr as file:line:column', async () => {
    const ok = io();
    expect(await runConfigCommand(['validate', config, '--orb-dir', orbDir], ok.io)).toBe(0);
    expect(ok.out.join('')).toMatch(/is valid/);
    const badFile = write('bad.yml', 'version: 2.1\njobs:\n  a: {docker: [{image: x}], steps: [nope]}\nworkflows: {w: {jobs: [a, b]}}\n');
    const bad = io();
    expect(await runConfigCommand(['validate', badFile], bad.io)).toBe(1);
    const text = bad.err.join('');
    expect(text).toContain(`${badFile}:3:`);
    expect(text).toMatch(/jobs\.a\.steps\[0\]: command 'nope' is not defined/);
    expect(text).toMatch(/workflows\.w\.jobs\[1\]\.b: job 'b' is not defined/);
    expect(text).toMatch(/2 problems/);
  });

  it('an orb missing from --orb-dir (or with no --orb-dir) is named', async () => {
    const none = io();
    expect(await runConfigCommand(['validate', config], none.io)).toBe(1);
    expect(none.err.join('')).toMatch(/orb acme\/tools@1 cannot be resolved: no orb registry/);
  });

  it('process prints the compiled config, with the newest matching orb from the directory (a source tree)', async () => {
    const p = io();
    expect(await runConfigCommand(['process', config, '--orb-dir', orbDir, '--pipeline-parameters', '{"deploy": true}'], p.io)).toBe(0);
    const processed = parse(p.out.join('').split('# Original')[0]);
    expect(processed.jobs.build.docker).toEqual([{ image: 'cimg/base:new' }]);
    expect(Object.keys(processed.workflows)).toEqual(['version', 'main', 'deploy']);
  });

  it('plan prints the workflows and jobs that run for a branch or a tag', async () => {
    const onMain = io();
    expect(await runConfigCommand(['plan', config, '--orb-dir', orbDir, '--branch', 'main'], onMain.io)).toBe(0);
    expect(JSON.parse(onMain.out.join(''))).toEqual({
      workflows: [
        {
          name: 'main',
          jobs: [
            { name: 'build', requires: [], type: 'build' },
            { name: 'hold', requires: ['build'], type: 'approval' },
            { name: 'ship', requires: ['hold'], type: 'build' },
          ],
        },
      ],
    });
    const onTag = io();
    expect(await runConfigCommand(['plan', config, '--orb-dir', orbDir, '--tag', 'v2.0.0', '--pipeline-parameters', '{"deploy": true}'], onTag.io)).toBe(0);
    expect(JSON.parse(onTag.out.join('')).workflows.map((w: { name: string; jobs: unknown[] }) => [w.name, w.jobs.length])).toEqual([['main', 3]]);
    const onFeature = io();
    expect(await runConfigCommand(['plan', config, '--orb-dir', orbDir, '--branch', 'feature', '--pipeline-parameters', '{"deploy": true}'], onFeature.io)).toBe(0);
    expect(JSON.parse(onFeature.out.join('')).workflows.map((w: { name: string; jobs: { name: string }[] }) => [w.name, w.jobs.map((j) => j.name)])).toEqual([
      ['main', ['build', 'hold']],
      ['deploy', ['ship']],
    ]);
  });

  it('usage: help on stdout with 0, an unknown verb on stderr with 2', async () => {
    const h = io();
    expect(await runConfigCommand(['--help'], h.io)).toBe(0);
    expect(h.out.join('')).toMatch(/gyre config plan <file> \(--branch <b> \| --tag <t>\)/);
    const u = io();
    expect(await runConfigCommand(['lint', config], u.io)).toBe(2);
    expect(u.err.join('')).toMatch(/unknown command: config lint/);
  });

  it('plan needs exactly one of --branch and --tag, and bad pipeline parameters are refused', async () => {
    const a = io();
    expect(await runConfigCommand(['plan', config], a.io)).toBe(2);
    expect(a.err.join('')).toMatch(/exactly one of --branch or --tag/);
    const b = io();
    expect(await runConfigCommand(['process', config, '--pipeline-parameters', '[1]'], b.io)).toBe(2);
    expect(b.err.join('')).toMatch(/must be a JSON object/);
  });
});
