import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { environmentText } from '../../runtime/agent/sandbox/isolation';

/**
 * A task's first step gets its environment after its shell has started (the text environmentText
 * makes, read at its gate). What a user would notice if that were wrong: a variable that arrives
 * changed, or a value that runs as a command in the shell (a secret is anyone's text).
 */
describe('the environment given to a shell at its gate', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-env-gate-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** What `shell`, started with no environment, has exported after reading `env`'s text: each variable as `env -0` prints it. */
  const exportedBy = (shell: string, env: Record<string, string>): Record<string, string> => {
    const text = environmentText(env);
    expect(text).toBeDefined();
    const file = join(dir, `env-${Math.random().toString(36).slice(2)}.sh`);
    writeFileSync(file, text!);
    const run = spawnSync(shell, ['-c', `. '${file}' && [ "\${_gyre_env-}" = in ] && unset _gyre_env && exec /usr/bin/env -0`], { env: {}, encoding: 'buffer' });
    expect(run.status).toBe(0);
    const seen: Record<string, string> = {};
    for (const entry of run.stdout.toString('utf8').split('\0').filter(Boolean)) {
      const at = entry.indexOf('=');
      seen[entry.slice(0, at)] = entry.slice(at + 1);
    }
    return seen;
  };

  const hostile: Record<string, string> = {
    QUOTES: `it's "quoted" '' and ''' three`,
    EXPANSIONS: '$HOME ${PATH} $(touch /tmp/gyre-env-gate-pwned) `touch /tmp/gyre-env-gate-pwned` $((1+1)) !! \\$ \\',
    NEWLINES: "first\nsecond\n\nexport PWNED=1\n'; touch /tmp/gyre-env-gate-pwned; '",
    EMPTY: '',
    SPACES: '  leading and trailing  ',
    UNICODE: 'smörgåsbord ✓ \t tab',
    GLOB: '* ? [a-z] ~',
  };

  it.each(['/bin/sh', '/bin/bash'])('reaches %s byte for byte, nothing in a value run', (shell) => {
    rmSync('/tmp/gyre-env-gate-pwned', { force: true });
    const seen = exportedBy(shell, hostile);
    for (const [name, value] of Object.entries(hostile)) expect(seen[name]).toBe(value);
    expect(seen.PWNED).toBeUndefined();
    expect(spawnSync('test', ['-e', '/tmp/gyre-env-gate-pwned']).status).not.toBe(0);
  });

  it.each([
    ['a variable a shell sets at its start', { SHLVL: '3' }],
    ['IFS, which a shell resets at its start', { IFS: ':' }],
    ['a file a shell runs at its start', { BASH_ENV: '/tmp/x' }],
    ['a name a shell cannot assign', { 'not-a-name': 'x' }],
    ["the gate's own", { _gyre_env: 'in' }],
    ['a NUL in a value', { OK: 'a\0b' }],
  ])('is not given for %s (the step is started with its environment instead)', (_what, env) => {
    expect(environmentText({ PATH: '/usr/bin:/bin', ...env })).toBeUndefined();
  });
});
