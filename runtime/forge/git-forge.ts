import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { InputError, NotFoundError } from '../domain/errors';
import type { Forge, Revision } from './forge';
import { createCatFile, type CatFile } from './cat-file';

const run = promisify(execFile);

/** How long one git command may take (a clone of a large repository included). */
const GIT_TIMEOUT_MS = 10 * 60_000;

/**
 * The environment git runs with: what it needs to find itself, its configuration and a proxy,
 * and nothing of the server's own (tokens, DATABASE_URL, keys never reach a child).
 */
function gitEnv(): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'TMPDIR', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'GIT_SSL_CAINFO', 'HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY', 'https_proxy', 'http_proxy', 'no_proxy', 'SSH_AUTH_SOCK'];
  const env: NodeJS.ProcessEnv = { GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' };
  for (const name of keep) if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

/** Runs git with umask 077 (what it writes in a mirror is Gyre's user's alone), a clean environment and a timeout. */
async function git(args: string[], cwd?: string): Promise<string> {
  const { stdout } = await run('/bin/sh', ['-c', 'umask 077 && exec git "$@"', 'git', ...args], {
    cwd,
    maxBuffer: 64 * 1024 * 1024,
    env: gitEnv(),
    timeout: GIT_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  return stdout;
}

/**
 * Reads repositories. A repository on this machine's disk is read in place (it is always current,
 * and a fetch would cost more than the rest of a trigger). Any other URL is read through a bare
 * mirror per repository under `cacheDir`, fetched before each resolve, so a branch always resolves
 * to what the repository has now. Calls for one repository are serialised: two fetches into one
 * mirror at once would fight over its lock files.
 */
/** Files kept in memory by commit and path (least recently read go first), and the largest kept. */
const CACHED_FILES = 64;
const CACHED_FILE_MAX_CHARS = 256 * 1024;
/** A commit named by its full id (SHA-1 or SHA-256): what it holds cannot change. */
const FULL_SHA = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** What a commit's message begins with, as `git log --format=%s` gives it: its first paragraph on one line. */
export function subjectOf(commit: Buffer): string {
  const text = commit.toString('utf8');
  const body = text.indexOf('\n\n');
  if (body < 0) return '';
  const message = text.slice(body + 2).replace(/^\n+/, '');
  const end = message.indexOf('\n\n');
  return (end < 0 ? message : message.slice(0, end)).split('\n').map((l) => l.trim()).join(' ').trim();
}

export function createGitForge({ cacheDir }: { cacheDir: string }): Forge & { close(): void } {
  const queues = new Map<string, Promise<unknown>>();
  const files = new Map<string, string>();
  /** A resident reader per git directory (runtime/forge/cat-file.ts). */
  const readers = new Map<string, CatFile>();
  const readerOf = (dir: string) => {
    let reader = readers.get(dir);
    if (!reader) readers.set(dir, (reader = createCatFile({ gitDir: dir, env: gitEnv() })));
    return reader;
  };
  const serial = <T>(repoUrl: string, fn: () => Promise<T>): Promise<T> => {
    const prev = queues.get(repoUrl) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    queues.set(repoUrl, next.catch(() => undefined));
    return next;
  };

  const mirrorOf = (repoUrl: string) =>
    join(cacheDir, createHash('sha256').update(repoUrl).digest('hex').slice(0, 24) + '.git');

  async function fetchMirror(repoUrl: string): Promise<string> {
    const local = localGitDir(repoUrl);
    if (local) return local;
    const dir = mirrorOf(repoUrl);
    try {
      if (!existsSync(dir)) {
        mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
        // --no-local: a repository given by a relative path is copied, not hard-linked (a link
        // would share the source's files, and their modes).
        await git(['clone', '--mirror', '--quiet', '--no-local', '--', repoUrl, dir]);
      } else {
        await git(['fetch', '--quiet', '--prune', '--force', 'origin', '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'], dir);
      }
    } catch (error) {
      throw new InputError(`cannot read git repository ${repoUrl}: ${firstLine((error as { stderr?: string }).stderr ?? String(error))}`, 'repo');
    }
    return dir;
  }

  return {
    defaultBranch: (repoUrl) =>
      serial(repoUrl, async () => {
        const dir = await fetchMirror(repoUrl);
        const head = (await git(['symbolic-ref', '--quiet', 'HEAD'], dir).catch(() => '')).trim();
        return head.replace(/^refs\/heads\//, '') || 'main';
      }),

    resolve: (repoUrl, ref) =>
      serial(repoUrl, async (): Promise<Revision> => {
        const dir = await fetchMirror(repoUrl);
        const name = ref.tag ? `refs/tags/${ref.tag}` : `refs/heads/${ref.branch}`;
        if (!ref.tag && !ref.branch) throw new InputError('a branch or a tag is required', 'branch');
        const commit = await readerOf(dir).read(`${name}^{commit}`);
        if (!commit || commit.type !== 'commit') throw new NotFoundError(ref.tag ? 'tag' : 'branch', ref.tag ?? ref.branch ?? '');
        return { sha: commit.oid, subject: subjectOf(commit.content) };
      }),

    readFile: (repoUrl, sha, path) => {
      // A file at a commit never changes: the config of a commit triggered again (a schedule on a
      // quiet branch, a rerun, a button pressed twice) is read from memory, not from a git process.
      const key = FULL_SHA.test(sha) ? `${repoUrl}\0${sha}\0${path}` : undefined;
      const known = key === undefined ? undefined : files.get(key);
      if (known !== undefined) {
        files.delete(key!);
        files.set(key!, known);
        return Promise.resolve(known);
      }
      return serial(repoUrl, async () => {
        const dir = localGitDir(repoUrl) ?? (existsSync(mirrorOf(repoUrl)) ? mirrorOf(repoUrl) : await fetchMirror(repoUrl));
        const blob = await readerOf(dir).read(`${sha}:${path}`);
        if (!blob || blob.type !== 'blob') return undefined;
        const text = blob.content.toString('utf8');
        if (key !== undefined && text.length <= CACHED_FILE_MAX_CHARS) {
          files.set(key, text);
          if (files.size > CACHED_FILES) files.delete(files.keys().next().value!);
        }
        return text;
      });
    },

    close() {
      for (const reader of readers.values()) reader.close();
      readers.clear();
    },
  };
}

/** The git directory of a repository given as a local path (work tree or bare), if it is one. */
function localGitDir(repoUrl: string): string | undefined {
  const path = repoUrl.startsWith('file://') ? repoUrl.slice(7) : repoUrl;
  if (!path.startsWith('/')) return undefined;
  if (existsSync(join(path, '.git'))) return join(path, '.git');
  if (existsSync(join(path, 'HEAD')) && existsSync(join(path, 'objects'))) return path;
  return undefined;
}

function firstLine(text: string): string {
  return text.trim().split('\n').filter(Boolean).pop() ?? text;
}
