import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

/**
 * One resident `git cat-file --batch` per repository: reads a ref, a commit or a file in a
 * fraction of a millisecond where a git process per read costs 10–30 ms (most of a trigger
 * request's time, docs/speed.md). Git's own reader, not ours: it knows loose and packed refs,
 * packs, alternates and SHA-256 repositories, and it looks at the disk on every read (refs are
 * read afresh, and an object it cannot find makes it look for new packs), so a branch pushed after
 * it started resolves to its new commit.
 *
 * Requests are answered in order over one pipe. The process ends after `idleMs` without a request
 * and is started again by the next one; one that dies fails what was asked of it and is replaced.
 * It is unreferenced while idle, so it never holds a process open.
 */
export interface GitObject {
  readonly oid: string;
  readonly type: 'commit' | 'tree' | 'blob' | 'tag';
  readonly content: Buffer;
}

export interface CatFile {
  /**
   * The object an expression names (`refs/heads/main^{commit}`, `<sha>:path/in/tree`), or
   * undefined when there is none. Expressions with a line break name nothing.
   */
  read(expression: string): Promise<GitObject | undefined>;
  close(): void;
}

export interface CatFileOptions {
  readonly gitDir: string;
  /** The environment git runs with (the forge's clean one). */
  readonly env: NodeJS.ProcessEnv;
  /** @default 60000 */
  readonly idleMs?: number;
}

interface Waiting {
  readonly resolve: (o: GitObject | undefined) => void;
  readonly reject: (e: Error) => void;
}

export function createCatFile({ gitDir, env, idleMs = 60_000 }: CatFileOptions): CatFile {
  let child: ChildProcessWithoutNullStreams | undefined;
  let waiting: Waiting[] = [];
  let buffered: Buffer = Buffer.alloc(0);
  let idle: NodeJS.Timeout | undefined;
  let stderr = '';

  const setReferenced = (on: boolean) => {
    if (!child) return;
    for (const handle of [child, child.stdin, child.stdout, child.stderr] as unknown as { ref?(): void; unref?(): void }[]) {
      if (on) handle.ref?.();
      else handle.unref?.();
    }
  };

  const stop = (reason: Error) => {
    const was = child;
    child = undefined;
    buffered = Buffer.alloc(0);
    if (idle) clearTimeout(idle);
    idle = undefined;
    const failed = waiting;
    waiting = [];
    for (const w of failed) w.reject(reason);
    if (was && was.exitCode === null && was.signalCode === null) {
      was.stdin.end();
      was.kill('SIGTERM');
    }
  };

  /** Takes every whole answer off the front of what git wrote. */
  const drain = () => {
    while (waiting.length > 0) {
      const eol = buffered.indexOf(10);
      if (eol < 0) return;
      const header = buffered.subarray(0, eol).toString('utf8');
      const parts = header.split(' ');
      if (parts.length === 2 && (parts[1] === 'missing' || parts[1] === 'ambiguous')) {
        buffered = buffered.subarray(eol + 1);
        waiting.shift()!.resolve(undefined);
        continue;
      }
      const size = Number(parts[2]);
      if (parts.length !== 3 || !Number.isSafeInteger(size)) {
        stop(new Error(`git cat-file in ${gitDir} answered '${header.slice(0, 200)}'`));
        return;
      }
      if (buffered.length < eol + 1 + size + 1) return;
      const content = Buffer.from(buffered.subarray(eol + 1, eol + 1 + size));
      buffered = buffered.subarray(eol + 1 + size + 1);
      waiting.shift()!.resolve({ oid: parts[0], type: parts[1] as GitObject['type'], content });
    }
  };

  const started = () => {
    if (child) return child;
    stderr = '';
    const proc = spawn('git', ['cat-file', '--batch'], { cwd: gitDir, env, stdio: ['pipe', 'pipe', 'pipe'] });
    child = proc;
    proc.stdout.on('data', (chunk: Buffer) => {
      if (child !== proc) return;
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      drain();
      if (waiting.length === 0) setReferenced(false);
    });
    proc.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString('utf8');
    });
    // A write after git has gone fails here; the exit below says why.
    proc.stdin.on('error', () => undefined);
    proc.on('error', (error) => {
      if (child === proc) stop(new Error(`cannot start git cat-file in ${gitDir}: ${error.message}`));
    });
    proc.on('exit', (code, signal) => {
      if (child === proc) stop(new Error(`git cat-file in ${gitDir} ended (${signal ?? `exit ${code}`})${stderr ? `: ${stderr.trim().split('\n')[0]}` : ''}`));
    });
    return proc;
  };

  return {
    read(expression) {
      if (/[\n\r\0]/.test(expression)) return Promise.resolve(undefined);
      const proc = started();
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => {
        if (waiting.length === 0) stop(new Error('idle'));
      }, idleMs);
      idle.unref();
      setReferenced(true);
      return new Promise<GitObject | undefined>((resolve, reject) => {
        waiting.push({ resolve, reject });
        proc.stdin.write(expression + '\n');
      });
    },
    close() {
      stop(new Error(`git cat-file in ${gitDir} was closed`));
    },
  };
}
