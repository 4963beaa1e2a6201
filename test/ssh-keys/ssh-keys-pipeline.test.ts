import { spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sshpk from 'sshpk';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createProjects } from '../../runtime/projects/projects';
import { createTriggers, type Triggers } from '../../runtime/triggers/triggers';
import { flowStore, makeGitRepo, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * SSH keys in jobs, through a whole Gyre (the built-in runner, steps as this user):
 *
 * - `add_ssh_keys` writes the selected additional keys to `~/.ssh/id_rsa_<fingerprint>` (0600, the
 *   bytes given) with a `Host` entry per key in `~/.ssh/config`; all of them without
 *   `fingerprints`, those named otherwise (MD5 or SHA256); a fingerprint the project lacks fails the
 *   step naming it; a step printing a key shows it masked.
 * - A checkout over SSH reads the repository with the project's checkout key. No sshd runs here: an
 *   `ssh` of the test's, first on PATH, records how it was called (and copies the key it was given
 *   with -i) and serves the repository with git-upload-pack, as sshd would run it.
 * - A fork's pipeline gets neither, unless the project passes secrets to forks.
 *
 * On PGlite and, with DATABASE_URL, PostgreSQL.
 */

const HAS_SSH_KEYGEN = spawnSync('ssh-keygen', ['-?']).error === undefined;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const RSA_PEM = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
const ed = generateKeyPairSync('ed25519');
const ED_PEM = ed.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
/** Fingerprints computed here, as the config names them before the keys are added. */
const fingerprintsOf = (pem: string) => {
  const key = sshpk.parsePrivateKey(pem, 'pem');
  return { md5: key.fingerprint('md5').toString('hex'), sha256: key.fingerprint('sha256').toString('base64'), publicBlob: key.toPublic().toString('ssh').split(' ')[1] };
};
const RSA = fingerprintsOf(RSA_PEM);
const ED = fingerprintsOf(ED_PEM);
const UNKNOWN = 'de:ad:be:ef:00:11:22:33:44:55:66:77:88:99:aa:bb';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const bodyLines = (pem: string) => pem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'));

const KEYS_CONFIG = `version: 2.1
jobs:
  all-keys:
    docker: [{ image: cimg/base:stable }]
    steps:
      - add_ssh_keys
      - run:
          name: what the job has
          command: |
            for f in ~/.ssh/id_rsa_*; do [ -e "$f" ] || continue; echo "file $(basename "$f") mode $(stat -c %a "$f") sha $(sha256sum < "$f" | cut -c1-64)"; done
            echo "ssh dir mode $(stat -c %a ~/.ssh 2>/dev/null || echo none)"
            cat ~/.ssh/config 2>/dev/null || echo "no ssh config"
            f=~/.ssh/id_rsa_${RSA.md5.replace(/:/g, '')}
            if [ -e "$f" ]; then echo "--- the key, printed:"; cat "$f"; echo "--- its third line:"; sed -n 3p "$f"; fi
            if [ -e "$f" ] && command -v ssh-keygen >/dev/null; then echo "public: $(ssh-keygen -y -f "$f")"; fi
  one-key:
    docker: [{ image: cimg/base:stable }]
    steps:
      - add_ssh_keys:
          fingerprints: ["${ED.sha256}"]
      - run: ls ~/.ssh | sort
  unknown-key:
    docker: [{ image: cimg/base:stable }]
    steps:
      - add_ssh_keys:
          fingerprints: ["${RSA.md5}", "${UNKNOWN}"]
      - run: echo this step does not run
  no-add-ssh-keys:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: ls -a ~/.ssh 2>/dev/null || echo "no .ssh directory"
workflows:
  main:
    jobs: [all-keys, one-key, unknown-key, no-add-ssh-keys]
`;

const CHECKOUT_CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - checkout
      - run: |
          git log -1 --format='checked out: %s'
          [ -e ~/.ssh/id_rsa ] && echo "checkout key mode $(stat -c %a ~/.ssh/id_rsa)" || echo "no checkout key"
          grep -c '^github.com ' ~/.ssh/known_hosts 2>/dev/null || true
workflows:
  main:
    jobs: [build]
`;

describe.each(flowStore())('SSH keys in jobs (%s)', (store) => {
  let g: TestGyre;
  let triggers: Triggers;
  let forgeCache: string;
  let fakeSsh: string;
  let records: string;
  const oldPath = process.env.PATH;

  beforeAll(async () => {
    // The `ssh` git finds first: records its call and the key it was given, then serves the repository.
    fakeSsh = mkdtempSync(join(tmpdir(), 'gyre-fake-ssh-'));
    records = join(fakeSsh, 'records');
    mkdirSync(records);
    chmodSync(records, 0o777);
    writeFileSync(
      join(fakeSsh, 'ssh'),
      `#!/bin/sh
n="$(date +%s%N)-$$"
key=; prev=
for a in "$@"; do [ "$prev" = "-i" ] && key="$a"; prev="$a"; done
{ echo "HOME=$HOME"; printf 'ARG=%s\\n' "$@"; } > "${records}/$n.call"
if [ -n "$key" ]; then cp "$key" "${records}/$n.key"; stat -c %a "$key" > "${records}/$n.mode"; fi
for last in "$@"; do :; done
exec sh -c "$last"
`,
    );
    chmodSync(join(fakeSsh, 'ssh'), 0o755);
    process.env.PATH = `${fakeSsh}:${oldPath}`;

    g = await startTestGyre({ store });
    await g.addProject('gh/acme/keys', { '.circleci/config.yml': KEYS_CONFIG });
    await g.api('POST', '/api/v1.1/project/gh/acme/keys/ssh-key', { hostname: 'deploy.example.com', private_key: RSA_PEM });
    await g.api('POST', '/api/v1.1/project/gh/acme/keys/ssh-key', { private_key: ED_PEM });

    // A repository read over SSH (git's scp-like form), and its checkout key.
    const repo = makeGitRepo({ '.circleci/config.yml': CHECKOUT_CONFIG, 'README.md': 'over ssh\n' });
    await g.api('POST', '/api/v2/projects', { org: 'acme', name: 'over-ssh', repo_url: `git@git.example.test:${repo}` });
    await g.api('POST', '/api/v2/project/gh/acme/over-ssh/checkout-key', { type: 'deploy-key' });

    forgeCache = mkdtempSync(join(tmpdir(), 'gyre-sshkeys-forge-'));
    const forge = createGitForge({ cacheDir: forgeCache });
    triggers = createTriggers({ store: g.gyre.store, forge, projects: createProjects({ store: g.gyre.store, forge }) });
  }, 90_000);
  afterAll(async () => {
    await g?.stop();
    process.env.PATH = oldPath;
    for (const dir of [forgeCache, fakeSsh]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const logOf = async (slug: string, job: { job_number: number }, step: number) => (await g.raw('GET', `/api/v2/project/${slug}/job/${job.job_number}/output?step=${step}`)).text;
  /** The calls of the fake ssh since `since`, made from a job (its $HOME is the task's, not this process's). */
  const jobCalls = (since: Set<string>) =>
    readdirSync(records)
      .filter((f) => f.endsWith('.call') && !since.has(f))
      .map((f) => ({ name: f.slice(0, -'.call'.length), lines: readFileSync(join(records, f), 'utf8').trim().split('\n') }))
      .filter((c) => c.lines[0] !== `HOME=${process.env.HOME}`);

  it('add_ssh_keys writes every key (0600, the bytes given) with a Host entry each, and the log shows them masked', async () => {
    const { id } = await g.trigger('gh/acme/keys');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs['all-keys'].status).toBe('success');
    expect(await logOf('gh/acme/keys', jobs['all-keys'], 0)).toContain(`Added SSH key ${RSA.md5} (${RSA.sha256}) for host deploy.example.com`);
    const log = await logOf('gh/acme/keys', jobs['all-keys'], 1);
    expect(log).toContain(`file id_rsa_${RSA.md5.replace(/:/g, '')} mode 600 sha ${sha(RSA_PEM)}`);
    expect(log).toContain(`file id_rsa_${ED.md5.replace(/:/g, '')} mode 600 sha ${sha(ED_PEM)}`);
    expect(log).toContain('ssh dir mode 700');
    expect(log).toContain(`Host deploy.example.com\n  IdentitiesOnly no\n  IdentityFile ~/.ssh/id_rsa_${RSA.md5.replace(/:/g, '')}\n`);
    expect(log).toContain(`Host *\n  IdentitiesOnly no\n  IdentityFile ~/.ssh/id_rsa_${ED.md5.replace(/:/g, '')}\n`);
    if (HAS_SSH_KEYGEN) expect(log).toContain(`public: ssh-rsa ${RSA.publicBlob}`);
    // The key printed whole, and one line of it, are masked.
    expect(log).toMatch(/--- the key, printed:\n\*{8}\n--- its third line:\n\*{8}\n/);
    for (const line of bodyLines(RSA_PEM)) expect(log).not.toContain(line);
  }, 90_000);

  it('selects keys by fingerprint; an unknown fingerprint fails the step naming it; a job without add_ssh_keys gets none', async () => {
    const { id } = await g.trigger('gh/acme/keys');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs['one-key'].status).toBe('success');
    expect(await logOf('gh/acme/keys', jobs['one-key'], 1)).toBe(`config\nid_rsa_${ED.md5.replace(/:/g, '')}\n`);

    expect(jobs['unknown-key'].status).toBe('failed');
    const refused = await logOf('gh/acme/keys', jobs['unknown-key'], 0);
    expect(refused).toContain(`no additional SSH key with fingerprint "${UNKNOWN}"`);
    expect(refused).not.toContain('Added SSH key');
    expect(await logOf('gh/acme/keys', jobs['unknown-key'], 1)).not.toContain('this step does not run');

    expect(jobs['no-add-ssh-keys'].status).toBe('success');
    expect(await logOf('gh/acme/keys', jobs['no-add-ssh-keys'], 0)).toContain('no .ssh directory');
  }, 90_000);

  it('a checkout over SSH uses the project’s checkout key (0600, -i, IdentitiesOnly, known hosts), GitHub.com’s host keys known', async () => {
    const key = (await g.api('GET', '/api/v2/project/gh/acme/over-ssh/checkout-key')).items[0];
    const before = new Set(readdirSync(records));
    const { id } = await g.trigger('gh/acme/over-ssh');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs.build.status).toBe('success');
    const log = await logOf('gh/acme/over-ssh', jobs.build, 1);
    expect(log).toContain('checked out: fixture');
    expect(log).toContain('checkout key mode 600');
    expect(log).toMatch(/^3$/m);

    const calls = jobCalls(before);
    expect(calls).toHaveLength(1);
    const args = calls[0].lines.filter((l) => l.startsWith('ARG=')).map((l) => l.slice(4));
    expect(args).toEqual(expect.arrayContaining(['-i', 'IdentitiesOnly=yes', 'StrictHostKeyChecking=accept-new', 'BatchMode=yes', 'git@git.example.test']));
    expect(args[args.indexOf('-i') + 1]).toMatch(/\/\.ssh\/id_rsa$/);
    // The key it was given is the checkout key: its public half is the one the API shows.
    const given = readFileSync(join(records, `${calls[0].name}.key`), 'utf8');
    expect(readFileSync(join(records, `${calls[0].name}.mode`), 'utf8').trim()).toBe('600');
    expect(given).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    expect(sshpk.parsePrivateKey(given, 'openssh').toPublic().toString('ssh').split(' ')[1]).toBe(key['public-key'].split(' ')[1]);
    // The server's own reads of the repository (the config) were made without it.
    const serverCalls = readdirSync(records).filter((f) => f.endsWith('.call')).map((f) => readFileSync(join(records, f), 'utf8')).filter((t) => t.startsWith(`HOME=${process.env.HOME}\n`));
    expect(serverCalls.length).toBeGreaterThan(0);
    for (const call of serverCalls) expect(call).not.toContain('ARG=-i\n');
  }, 90_000);

  it('a fork’s pipeline gets no keys (add_ssh_keys says why; the checkout has no key), unless the project passes secrets to forks', async () => {
    const runFork = async (slug: string) => g.waitForPipeline((await triggers.trigger({ slug, branch: 'main', type: 'webhook', fork: true })).id, 60_000);

    const keys = (await runFork('gh/acme/keys')).jobs;
    expect(await logOf('gh/acme/keys', keys['all-keys'], 0)).toMatch(/No SSH keys were added: this pipeline builds a pull request from a fork, and project gh\/acme\/keys does not pass secrets to forks/);
    const log = await logOf('gh/acme/keys', keys['all-keys'], 1);
    expect(log).not.toContain('file id_rsa_');
    expect(log).toContain('no ssh config');

    const before = new Set(readdirSync(records));
    const checkout = (await runFork('gh/acme/over-ssh')).jobs;
    expect(await logOf('gh/acme/over-ssh', checkout.build, 1)).toContain('no checkout key');
    const calls = jobCalls(before);
    expect(calls).toHaveLength(1);
    expect(calls[0].lines).not.toContain('ARG=-i');
    expect(existsSync(join(records, `${calls[0].name}.key`))).toBe(false);

    await g.api('PATCH', '/api/v2/project/gh/acme/keys/settings', { advanced: { forks_receive_secret_env_vars: true } });
    const allowed = (await runFork('gh/acme/keys')).jobs;
    expect(allowed['all-keys'].status).toBe('success');
    expect(await logOf('gh/acme/keys', allowed['all-keys'], 1)).toContain(`file id_rsa_${RSA.md5.replace(/:/g, '')} mode 600 sha ${sha(RSA_PEM)}`);
    await g.api('PATCH', '/api/v2/project/gh/acme/keys/settings', { advanced: { forks_receive_secret_env_vars: false } });
  }, 120_000);
});
