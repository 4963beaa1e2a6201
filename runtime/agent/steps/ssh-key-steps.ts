import type { AddSshKeysStep } from '../../config/plan';
import type { TaskSshKey, TaskSshKeys } from '../../agent-contract';
import { createTarWriter } from '../../output/tar';
import type { StepContext, StepHandler, StepResult } from './step-handler';

/**
 * SSH keys in the job, as CircleCI puts them there:
 *
 * - `add_ssh_keys` writes each selected additional key to `~/.ssh/id_rsa_<MD5 fingerprint without
 *   colons>` (mode 0600, whatever its type, as CircleCI names them) and adds a `Host` entry per key to
 *   `~/.ssh/config` (`Host <hostname>`, or `Host *` for a key of every host) with `IdentityFile` and
 *   `IdentitiesOnly no`, so ssh offers it there. No `fingerprints`: every additional key of the
 *   project; otherwise those, by MD5 or SHA256 fingerprint, and one the project lacks fails the step
 *   naming it.
 * - The checkout step writes the checkout key to `~/.ssh/id_rsa` (as CircleCI does) and reads the
 *   repository with `GIT_SSH_COMMAND` pointing at it (`checkoutSshEnvironment`).
 *
 * The files go in through the executor's tar extraction, never a command line or an environment.
 */

/** The file `add_ssh_keys` writes a key to, relative to $HOME. */
export function sshKeyFileOf(fingerprint: string): string {
  return `.ssh/id_rsa_${fingerprint.replace(/:/g, '')}`;
}

const MD5 = /^(?:MD5:)?([0-9a-f]{2}(?::[0-9a-f]{2}){15})$/i;
const SHA256 = /^SHA256:([A-Za-z0-9+/]{43})=?$/;

/** The keys a fingerprint of the config names (by MD5 or SHA256), or [] when none. */
function keysNamed(keys: readonly TaskSshKey[], fingerprint: string): TaskSshKey[] {
  const text = String(fingerprint).trim();
  const md5 = MD5.exec(text)?.[1].toLowerCase();
  const sha = SHA256.exec(text)?.[1];
  return keys.filter((k) => (md5 !== undefined && k.fingerprint === md5) || (sha !== undefined && k.fingerprintSha256 === `SHA256:${sha}`));
}

/** Adds files under `~` through the executor: each `[path relative to ~, text, mode]`, directories as needed. */
async function writeHomeFiles(ctx: StepContext, files: readonly (readonly [string, string, number])[], dirs: readonly string[]): Promise<void> {
  const writer = createTarWriter();
  const extracting = ctx.executor.extract('~', writer.tar);
  extracting.catch((error: Error) => writer.fail(error));
  const now = Date.now() / 1000;
  const writing = (async () => {
    for (const dir of dirs) await writer.add({ name: dir, type: 'directory', size: 0, mode: 0o700, mtime: now });
    for (const [name, text, mode] of files) {
      const bytes = Buffer.from(text, 'utf8');
      await writer.add({ name, type: 'file', size: bytes.length, mode, mtime: now }, bytes);
    }
    await writer.end();
  })().catch((error: Error) => writer.fail(error));
  await Promise.all([extracting, writing]);
}

/** Runs a short script of the agent's own in the job (as the build), as a step's command runs. */
async function runScript(script: string, ctx: StepContext): Promise<StepResult> {
  const result = await ctx.executor.start({ script, shell: '/bin/sh -e', env: ctx.env, cwd: '~', noOutputTimeoutMs: 60_000 }, (chunk) => ctx.write(chunk), ctx.signal).done;
  if (result.canceled) return { status: 'canceled', exitCode: result.exitCode };
  return { status: result.exitCode === 0 ? 'success' : 'failed', exitCode: result.exitCode };
}

/** Appends a config fragment (written beside it) to ~/.ssh/config and sets the modes ssh insists on. */
function appendConfigScript(fragment: string, keyFiles: readonly string[]): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    'umask 077',
    'chmod 700 "$HOME/.ssh"',
    ...keyFiles.map((f) => `chmod 600 "$HOME/"${q(f)}`),
    `cat "$HOME/"${q(fragment)} >> "$HOME/.ssh/config"`,
    `rm -f "$HOME/"${q(fragment)}`,
    'chmod 600 "$HOME/.ssh/config"',
    '',
  ].join('\n');
}

export const addSshKeysStep: StepHandler<AddSshKeysStep> = async (step, ctx) => {
  const given: TaskSshKeys | undefined = ctx.task.secrets?.sshKeys;
  if (given?.withheld) {
    ctx.write(`No SSH keys were added: ${given.withheld}.\n`);
    return { status: 'success', exitCode: 0 };
  }
  const keys = given?.additional ?? [];
  let selected: TaskSshKey[];
  if (step.fingerprints === undefined) {
    selected = [...keys];
  } else {
    const unknown: string[] = [];
    selected = [];
    for (const fingerprint of step.fingerprints) {
      const found = keysNamed(keys, fingerprint);
      if (found.length === 0) unknown.push(String(fingerprint));
      for (const key of found) if (!selected.includes(key)) selected.push(key);
    }
    if (unknown.length > 0) {
      ctx.write(
        `The project has no additional SSH key with fingerprint ${unknown.map((f) => JSON.stringify(f.slice(0, 100))).join(', ')}` +
          ` (it has ${keys.length === 0 ? 'none this job may use' : keys.map((k) => k.fingerprint).join(', ')}). Add it in the project's SSH keys (gyre ssh-key add), or fix the fingerprint.\n`,
      );
      return { status: 'failed', exitCode: null };
    }
  }
  if (selected.length === 0) {
    ctx.write('The project has no additional SSH keys; none were added.\n');
    return { status: 'success', exitCode: 0 };
  }
  const files = new Map<string, string>();
  const entries: string[] = [];
  for (const key of selected) {
    const file = sshKeyFileOf(key.fingerprint);
    files.set(file, key.privateKey);
    entries.push(`Host ${key.hostname || '*'}\n  IdentitiesOnly no\n  IdentityFile ~/${file}\n`);
  }
  const fragment = `.ssh/.gyre-config-${Date.now().toString(36)}`;
  try {
    await writeHomeFiles(ctx, [...[...files].map(([name, text]) => [name, text, 0o600] as const), [fragment, entries.join(''), 0o600]], ['.ssh']);
  } catch (error) {
    ctx.write(`Cannot write the SSH keys into the job: ${(error as Error).message}\n`);
    return { status: 'failed', exitCode: null };
  }
  for (const key of selected) ctx.write(`Added SSH key ${key.fingerprint} (${key.fingerprintSha256}) for ${key.hostname ? `host ${key.hostname}` : 'every host'}: ~/${sshKeyFileOf(key.fingerprint)}\n`);
  return runScript(appendConfigScript(fragment, [...files.keys()]), ctx);
};

/** Where the checkout key goes, relative to $HOME (CircleCI's place for it). */
export const CHECKOUT_KEY_FILE = '.ssh/id_rsa';
/** Host keys the checkout trusts besides those already in ~/.ssh/known_hosts: GitHub.com's published ones. */
export const GITHUB_KNOWN_HOSTS = [
  'github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
  'github.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=',
  'github.com ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCj7ndNxQowgcQnjshcLrqPEiiphnt+VTTvDP6mHBL9j1aNUkY4Ue1gvwnGLVlOhGeYrnZaMgRK6+PKCUXaDbC7qtbW8gIkhL7aGCsOr/C56SJMy/BCZfxd1nWzAOxSDPgVsmerOBYfNqltV9/hWCqBywINIR+5dIg6JTJ72pcEpEjcYgXkE2YEFXV1JHnsKgbLWNlhScqb2UmyRkQyytRLtL+38TGxkxCflmO+5Z8CSSNY7GidjMIZ7Q4zMjA2n1nGrlTDkzwDCsw+wqFPGQA179cnfGWOWRVruj16z6XyvxvjJwbz0wQZ75XK5tKSb7FNyeIEs4TT4jk+S4dhPeAUC5y+bDYirYgM4GC7uEnztnZyaVWQ7B381AK4Qdrwt51ZqExKbQpTUNn+EjqoTwvqNj4kqx5QUCI0ThS/YkOxJCXmPUWZbhjpCg56i+2aB6CmK2JGhn57K5mj0MNdBXA4/WnwH6XoPWJzK5Nyu2zB3nAZp+S5hpQs+p1vN1/wsjk=',
];

/**
 * Where the checkout step's ssh finds its key and host keys, and how git calls it: `GIT_SSH_COMMAND`
 * with the checkout key (`-i`, `IdentitiesOnly`), `~/.ssh/known_hosts` (GitHub.com's keys added),
 * and `StrictHostKeyChecking=accept-new`: a host already known must answer with its known key, a
 * host not known yet is trusted the first time (the job's $HOME is new, so that is every job; add
 * a host's keys to the image or an earlier step to pin them). Undefined for a checkout without a key.
 */
export function checkoutSshEnvironment(task: StepContext['task']): { files: [string, string, number][]; env: Record<string, string> } | undefined {
  const key = task.secrets?.sshKeys?.checkout;
  if (!key) return undefined;
  return {
    files: [[CHECKOUT_KEY_FILE, key.privateKey, 0o600]],
    env: {
      GIT_SSH_COMMAND: 'ssh -i "$HOME/.ssh/id_rsa" -o IdentitiesOnly=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts" -o StrictHostKeyChecking=accept-new -o BatchMode=yes',
    },
  };
}

/** Writes the checkout key (and GitHub.com's host keys, added to known_hosts) into the job before the checkout runs. */
export async function installCheckoutKey(ctx: StepContext, files: readonly (readonly [string, string, number])[]): Promise<void> {
  const hosts = `.ssh/.gyre-known-hosts-${Date.now().toString(36)}`;
  await writeHomeFiles(ctx, [...files, [hosts, `${GITHUB_KNOWN_HOSTS.join('\n')}\n`, 0o600]], ['.ssh']);
  const result = await runScript(
    [
      'umask 077',
      'chmod 700 "$HOME/.ssh"',
      `chmod 600 "$HOME/${CHECKOUT_KEY_FILE}"`,
      `touch "$HOME/.ssh/known_hosts"`,
      // Each host key line once, whatever was there before.
      `while IFS= read -r line; do grep -qxF "$line" "$HOME/.ssh/known_hosts" || printf '%s\\n' "$line" >> "$HOME/.ssh/known_hosts"; done < "$HOME/${hosts}"`,
      `rm -f "$HOME/${hosts}"`,
      '',
    ].join('\n'),
    ctx,
  );
  if (result.status !== 'success') throw new Error(`the checkout key could not be installed (${result.status}, exit code ${result.exitCode})`);
}

/**
 * The SSH keys of a secrets answer from the agent API, checked field by field: anything that is
 * not a key of the expected shape is left out (and the step that needs it says it is missing).
 */
export function parseTaskSshKeys(value: unknown): TaskSshKeys | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  const keyOf = (k: unknown): TaskSshKey | undefined => {
    if (!k || typeof k !== 'object') return undefined;
    const o = k as Record<string, unknown>;
    const strings = ['fingerprint', 'fingerprintSha256', 'hostname', 'privateKey', 'publicKey'].every((f) => typeof o[f] === 'string');
    if (!strings || !MD5.test(o.fingerprint as string) || !/^[A-Za-z0-9.*?_-]*$/.test(o.hostname as string)) return undefined;
    return { fingerprint: o.fingerprint as string, fingerprintSha256: o.fingerprintSha256 as string, hostname: o.hostname as string, privateKey: o.privateKey as string, publicKey: o.publicKey as string };
  };
  const checkout = keyOf(v.checkout);
  const additional = Array.isArray(v.additional) ? v.additional.map(keyOf).filter((k): k is TaskSshKey => k !== undefined) : [];
  return { ...(checkout ? { checkout } : {}), additional, ...(typeof v.withheld === 'string' ? { withheld: v.withheld } : {}) };
}

/**
 * What of the keys the agent masks in output: each private key whole, and each line of its body
 * (a step that prints part of a key file still shows nothing of it).
 */
export function sshKeySecretValues(keys: TaskSshKeys | undefined): string[] {
  if (!keys) return [];
  const values: string[] = [];
  for (const key of [...(keys.checkout ? [keys.checkout] : []), ...keys.additional]) {
    // Without its last line end, so the mask leaves the output's lines as they were.
    values.push(key.privateKey.trimEnd());
    for (const line of key.privateKey.split('\n')) if (line.length >= 16 && !line.startsWith('-----')) values.push(line);
  }
  return values;
}
