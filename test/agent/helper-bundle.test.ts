import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * The file helper runs as one bundled JavaScript file (runtime/agent/sandbox/helper-bundle.ts),
 * not through the TypeScript loader, which compiled its sources again for every task. The bundle
 * is made in a process of its own here, as a server makes it (esbuild does not run inside Jest's
 * module system); it must do the helper's work with nothing of Gyre's code beside it, sit in a
 * directory only its user can enter, and go when that process ends.
 */
const ROOT = resolve(__dirname, '../..');

describe('the bundled file helper', () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'gyre-bundle-test-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('is one file in a private directory, archives a build tree on its own, and is removed at exit', () => {
    const tree = join(work, 'tree');
    execFileSync('mkdir', ['-p', tree]);
    writeFileSync(join(tree, 'report.txt'), 'hello from the build\n');
    const script = join(work, 'make.ts');
    writeFileSync(
      script,
      `import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { helperBundle } from ${JSON.stringify(join(ROOT, 'runtime/agent/sandbox/helper-bundle'))};
helperBundle().then((path) => {
  if (!path) throw new Error('no bundle');
  // Only the bundle, in a directory of its own; the helper run from it, away from Gyre's tree.
  const run = spawnSync(process.execPath, [path, 'archive', JSON.stringify({ root: ${JSON.stringify(tree)}, patterns: ['report.txt'] })], {
    cwd: '/', env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const out = { path, dirMode: (statSync(dirname(path)).mode & 0o777).toString(8), files: readdirSync(dirname(path)),
    answer: String(run.output[3]).trim(), tarHasFile: run.stdout.includes('hello from the build'), status: run.status, stderr: String(run.stderr) };
  console.log(JSON.stringify(out));
});
`,
    );
    const made = JSON.parse(execFileSync(process.execPath, [join(ROOT, 'bin/run-ts.js'), script], { encoding: 'utf8' }).trim());
    expect(made).toEqual({
      path: expect.stringMatching(/\/gyre-file-helper-[^/]+\/tree-helper\.js$/),
      dirMode: '700',
      files: ['tree-helper.js'],
      answer: '{"missing":[]}',
      tarHasFile: true,
      status: 0,
      stderr: '',
    });
    expect(() => execFileSync('test', ['-e', made.path])).toThrow();
  });
});
