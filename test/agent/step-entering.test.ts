import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Executor } from '../../runtime/agent/executor';
import { detectIsolation, type Isolation } from '../../runtime/agent/sandbox/isolation';
import { createShellExecutor } from '../../runtime/agent/shell-executor';

/**
 * How a step starts in its working directory, as the build: by its own shell when that is a POSIX
 * shell with quiet options (the work put before the script's first line), else by the wrapper's
 * `sh`. What a user would notice if either were wrong: a step in the wrong directory or with the
 * server's umask, stderr missing or out of order, line numbers in error messages off by one, a
 * trace (`-x`) showing Gyre's own commands, a `BASH_ENV` sourced somewhere else, and (the attack)
 * a working directory from a branch's config whose name runs a command.
 */
const root = process.getuid?.() === 0;
(root ? describe : describe.skip)('a step entering its working directory (build uids, as root)', () => {
  let workRoot: string;
  let isolation: Isolation;
  let tasks = 0;
  beforeAll(() => {
    workRoot = mkdtempSync(join(tmpdir(), 'gyre-entering-work-'));
    chmodSync(workRoot, 0o711);
    isolation = detectIsolation({ mode: 'sandbox', buildUids: { first: 912300, last: 912303 } });
  });
  afterAll(async () => {
    await isolation?.close();
    rmSync(workRoot, { recursive: true, force: true });
  });

  /** Runs one step in a fresh task; its merged output and exit code. */
  const step = async (script: string, options: { shell?: string; cwd?: string; env?: Record<string, string>; before?: (executor: Executor, taskDir: string) => Promise<void> } = {}) => {
    const taskDir = join(workRoot, `task-${++tasks}`);
    const executor = await createShellExecutor({ taskDir, isolation });
    try {
      await options.before?.(executor, taskDir);
      let out = '';
      const run = executor.start(
        { script, shell: options.shell ?? '/bin/bash -eo pipefail', env: { PATH: '/usr/bin:/bin', HOME: executor.home, ...options.env }, cwd: options.cwd ?? '~/project' },
        (chunk) => {
          out += Buffer.from(chunk).toString();
        },
        new AbortController().signal,
      );
      const { exitCode } = await run.done;
      return { out, exitCode, home: executor.home, uid: statSync(taskDir).uid };
    } finally {
      await executor.cleanup();
    }
  };

  it('runs the default shell in its working directory, made as the build, with umask 022 and stderr in order', async () => {
    const { out, exitCode, home, uid } = await step('pwd; umask; echo one; echo two >&2; echo three; stat -c %u .');
    expect(exitCode).toBe(0);
    expect(out).toBe(`${home}/project\n0022\none\ntwo\nthree\n${uid}\n`);
  });

  it('keeps the script\'s line numbers as written', async () => {
    const { out, exitCode } = await step('echo "at $LINENO"\nno-such-command-here\necho never');
    expect(exitCode).toBe(127);
    expect(out).toMatch(/^at 1\n.*line 2: no-such-command-here: command not found\n$/);
  });

  // (bash quotes the line in its message: there the entering line shows, as docs/execution.md says.)
  it('a syntax error on the first line is in the log and fails the step, as the shell reports it', async () => {
    const { out, exitCode } = await step('echo )\necho never');
    expect(exitCode).toBe(2);
    expect(out).toMatch(/line 1: syntax error near unexpected token `\)'/);
    expect(out).not.toContain('never');
  });

  it('a working directory whose name is shell code is only a name (the attack: a branch\'s working_directory)', async () => {
    const marker = join(workRoot, `injected-${process.pid}`);
    const name = `a'; touch ${marker}; echo 'b $(touch ${marker}) "c`;
    const { out, exitCode, home } = await step('pwd', { cwd: `~/${name}` });
    expect(exitCode).toBe(0);
    expect(out).toBe(`${home}/${name}\n`);
    expect(existsSync(marker)).toBe(false);
  });

  it('a working directory that cannot be entered fails the step before its command runs', async () => {
    const { out, exitCode } = await step('echo ran', {
      cwd: '~/locked/inner',
      before: async (_executor, taskDir) => {
        // Root's, 0700, in the task's home: the build may not enter it.
        const locked = join(taskDir, 'locked');
        mkdirSync(locked, { mode: 0o700 });
        chmodSync(locked, 0o700);
      },
    });
    expect(exitCode).not.toBe(0);
    expect(out).not.toContain('ran');
    expect(out).toMatch(/Permission denied|cannot/i);
  });

  it('a traced shell (-x) shows the script\'s commands and none of Gyre\'s', async () => {
    const { out, exitCode, home } = await step('pwd', { shell: '/bin/bash -eo pipefail -x' });
    expect(exitCode).toBe(0);
    expect(out).toBe(`+ pwd\n${home}/project\n`);
  });

  it('BASH_ENV from the job\'s environment is read in the working directory, before the script', async () => {
    const { out, exitCode, home } = await step('echo "script sees: $FROM_ENV_FILE"', {
      // Relative: found from the working directory, as when the wrapper has entered it first.
      env: { BASH_ENV: 'env-file.sh' },
      before: async (executor, taskDir) => {
        await executor.makeWorkingDirectory!('~/project');
        writeFileSync(join(taskDir, 'project', 'env-file.sh'), 'FROM_ENV_FILE="read in $PWD"\n', { mode: 0o644 });
        chmodSync(join(taskDir, 'project', 'env-file.sh'), 0o644);
      },
    });
    expect(exitCode).toBe(0);
    expect(out).toBe(`script sees: read in ${home}/project\n`);
  });

  it('a shell that is not a POSIX one (perl) is started by the wrapper, in its working directory, stderr merged', async () => {
    if (!existsSync('/usr/bin/perl')) return void console.warn('skipped: /usr/bin/perl is not installed');
    const { out, exitCode, home } = await step('use Cwd; $| = 1; print getcwd(), "\\n"; print STDERR "to stderr\\n"; printf "%04o\\n", umask;', { shell: '/usr/bin/perl' });
    expect(exitCode).toBe(0);
    expect(out).toBe(`${home}/project\nto stderr\n0022\n`);
  });

  it('/bin/sh steps enter their directory too', async () => {
    const { out, exitCode, home } = await step('pwd; echo err >&2', { shell: '/bin/sh -e' });
    expect(exitCode).toBe(0);
    expect(out).toBe(`${home}/project\nerr\n`);
  });

  it('the script file the build runs is the one Gyre wrote, in a place the build cannot write', async () => {
    const { out, exitCode } = await step('f=$(readlink -f "$0"); stat -c "%U %a" "$f" "$(dirname "$f")"; { echo x >> "$f"; } 2>/dev/null && echo WROTE || echo refused');
    expect(exitCode).toBe(0);
    expect(out).toMatch(/^root 6[04]0\nroot 7[15][015]\nrefused\n$/);
  });
});
