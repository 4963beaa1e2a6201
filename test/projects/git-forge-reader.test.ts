import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError } from '../../runtime/domain/errors';
import { createGitForge } from '../../runtime/forge/git-forge';
import { commitFiles, makeGitRepo } from '../support/gyre';

/**
 * The git forge reads refs, commits and files through one resident `git cat-file --batch` per
 * repository. What a user would notice if that went wrong: a push that does not show up in the
 * next pipeline, a config read from the wrong commit, a branch name that reaches something else
 * in the repository, or triggers that fail for good after git died once.
 */
describe('git forge reads through a resident git process', () => {
  const made: string[] = [];
  const forge = createGitForge({ cacheDir: mkdtempSync(join(tmpdir(), 'gyre-forge-')) });
  const git = (dir: string, ...args: string[]) =>
    execFileSync('git', args, { cwd: dir, stdio: 'pipe', env: { ...process.env, GIT_AUTHOR_NAME: 'T', GIT_AUTHOR_EMAIL: 't@x', GIT_COMMITTER_NAME: 'T', GIT_COMMITTER_EMAIL: 't@x' } }).toString().trim();
  const repo = (files: Record<string, string>) => {
    const dir = makeGitRepo(files);
    made.push(dir);
    return dir;
  };
  afterAll(() => {
    forge.close();
    for (const dir of made) rmSync(dir, { recursive: true, force: true });
  });

  it('sees commits, new branches and packed refs made after it started', async () => {
    const dir = repo({ '.circleci/config.yml': 'version: 2.1\n# one\n' });
    const first = await forge.resolve(dir, { branch: 'main' });
    expect(first).toEqual({ sha: git(dir, 'rev-parse', 'main'), subject: 'fixture' });

    commitFiles(dir, 'main', { '.circleci/config.yml': 'version: 2.1\n# two\n' }, 'second\n\nbody text');
    const second = await forge.resolve(dir, { branch: 'main' });
    expect(second).toEqual({ sha: git(dir, 'rev-parse', 'main'), subject: 'second' });
    expect(second.sha).not.toBe(first.sha);
    expect(await forge.readFile(dir, first.sha, '.circleci/config.yml')).toBe('version: 2.1\n# one\n');
    expect(await forge.readFile(dir, second.sha, '.circleci/config.yml')).toBe('version: 2.1\n# two\n');

    // A new branch, then everything packed (refs into packed-refs, objects into a pack) and a commit on top.
    commitFiles(dir, 'feature/x', { 'a.txt': 'a' }, 'on a branch');
    git(dir, 'gc', '--quiet', '--prune=now');
    commitFiles(dir, 'feature/x', { 'b.txt': 'b' }, 'after gc');
    expect(await forge.resolve(dir, { branch: 'feature/x' })).toEqual({ sha: git(dir, 'rev-parse', 'feature/x'), subject: 'after gc' });
    git(dir, 'tag', 'v1', 'main');
    expect((await forge.resolve(dir, { tag: 'v1' })).sha).toBe(second.sha);
  });

  it('finds nothing for names that are not a branch of the repository, whatever they hold', async () => {
    const dir = repo({ 'secret.txt': 'top secret\n' });
    const sha = git(dir, 'rev-parse', 'main');
    for (const branch of ['nope', `main:secret.txt`, 'main\nrefs/heads/main', '../../HEAD', `${sha}`, 'main^{tree}']) {
      await expect(forge.resolve(dir, { branch })).rejects.toBeInstanceOf(NotFoundError);
    }
    // A path that is a directory, or missing, is no file; a path with a line break reads nothing.
    expect(await forge.readFile(dir, sha, '.')).toBeUndefined();
    expect(await forge.readFile(dir, sha, 'missing.yml')).toBeUndefined();
    expect(await forge.readFile(dir, sha, 'secret.txt\nHEAD')).toBeUndefined();
    // The reader still answers after all of that.
    expect(await forge.readFile(dir, sha, 'secret.txt')).toBe('top secret\n');
  });

  it('starts git again when it has died, and answers many reads at once in order', async () => {
    const dir = repo({ 'x.txt': 'x' });
    const sha = git(dir, 'rev-parse', 'main');
    await forge.resolve(dir, { branch: 'main' });
    const pid = () => execFileSync('pgrep', ['-f', '-P', String(process.pid), 'cat-file --batch']).toString().trim().split('\n').map(Number);
    for (const p of pid()) process.kill(p, 'SIGKILL');
    // The read that meets the dying process may fail; the next one gets a new git.
    await forge.resolve(dir, { branch: 'main' }).catch(() => undefined);
    expect((await forge.resolve(dir, { branch: 'main' })).sha).toBe(sha);

    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? forge.readFile(dir, sha, 'x.txt') : forge.resolve(dir, { branch: 'main' }).then((r) => r.sha))));
    expect(many).toEqual(Array.from({ length: 50 }, (_, i) => (i % 2 ? 'x' : sha)));
  });
});
