import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startExchange, type Exchange } from '../support/exchange';
import { makeGitRepo } from '../support/gyre';
import { apiCall, startServerProcess, until } from '../support/processes';

/**
 * Builds are hostile. Two jobs of one workflow run at once: B keeps a secret in its home and in
 * its environment; A, knowing B's home and the server's pid and data directory, tries to get at
 * them, at the server's environment and at the database, and prints `LEAK: …` for each attempt
 * that works (`ok: …` for each that fails). The server runs as its own process with its admin
 * token in its environment, as an operator starts it.
 */
const ROOT = resolve(__dirname, '../..');
const TOKEN = `isolation-admin-token-${process.pid}-0123456789`;
const B_SECRET = `b-secret-${process.pid}-${Date.now()}`;
const NOBODY = 65534;

const CONFIG = (exchange: string) => `version: 2.1
jobs:
  victim:
    machine: true
    environment:
      B_SECRET: ${B_SECRET}
    steps:
      - run: |
          echo "$B_SECRET" > ~/secret.txt
          curl -sf -X PUT --data "$HOME" ${exchange}/k/b-home
          for i in $(seq 1 900); do curl -sf ${exchange}/k/a-done >/dev/null && exit 0; sleep 0.1; done
          exit 1
  attacker:
    machine: true
    steps:
      - run: |
          X=${exchange}
          for i in $(seq 1 900); do BHOME=$(curl -sf $X/k/b-home) && break; sleep 0.1; done
          SPID=$(curl -sf $X/k/server-pid); DATA=$(curl -sf $X/k/data-dir); TOKEN=$(curl -sf $X/k/token)
          [ -n "$BHOME" ] && [ -n "$SPID" ] && [ -n "$DATA" ] && [ -n "$TOKEN" ] || { echo "setup failed"; exit 1; }
          check() { if sh -c "$2" >/dev/null 2>&1; then echo "LEAK: $1"; else echo "ok: $1"; fi; }
          check "read B's file" "cat '$BHOME/secret.txt'"
          check "list B's home" "ls -A '$BHOME' | grep -q secret"
          check "list the task directories" "ls -A \\"\\$(dirname \\"\\$HOME\\")\\"/*/ | grep -q secret"
          check "find B's secret in an environment" "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\\\0' '\\\\n' | grep -q '${B_SECRET}'"
          check "find the admin token in an environment" "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\\\0' '\\\\n' | grep -q '$TOKEN'"
          check "read the server's environment" "cat /proc/$SPID/environ | tr -d '\\\\0' | grep -q ."
          check "signal the server" "kill -0 $SPID"
          check "list the data directory" "ls -A '$DATA' | grep -q ."
          check "read a file of the data directory" "find '$DATA' -type f -size +0 -exec cat {} + | head -c 1 | grep -q ."
          check "see a server secret in its own environment" "env | grep -E '^(GYRE_ADMIN_TOKEN|DATABASE_URL|GYRE_AGENT_SECRET|GYRE_METRICS_TOKEN|GYRE_GITHUB_WEBHOOK_SECRET|GYRE_GITHUB_CLIENT_SECRET|GYRE_OIDC_CLIENT_SECRET|GYRE_LDAP_BIND_PASSWORD|VAULT_TOKEN)='"
          curl -sf -X PUT --data done $X/k/a-done
workflows:
  w:
    jobs: [victim, attacker]
`;

const CHECKS = [
  "read B's file",
  "list B's home",
  'list the task directories',
  "find B's secret in an environment",
  'find the admin token in an environment',
  "read the server's environment",
  'signal the server',
  'list the data directory',
  'read a file of the data directory',
  'see a server secret in its own environment',
];

/** Runs the attack on a server started with `env` (as `uid`, when given) and returns the attacker's output. */
async function attack(env: Record<string, string>, options: { uid?: number; dirs: string[]; exchange: Exchange; started: ChildProcess[] }): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gyre-isolation-data-'));
  options.dirs.push(dataDir);
  const repo = makeGitRepo({ '.circleci/config.yml': CONFIG(options.exchange.url) });
  options.dirs.push(repo);
  if (options.uid !== undefined) {
    for (const dir of [dataDir, repo]) spawnSync('chown', ['-R', `${options.uid}:${options.uid}`, dir]);
  }
  const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: TOKEN, GYRE_METRICS_TOKEN: 'metrics-secret-of-the-server', DATABASE_URL: '', ...env }, { uid: options.uid });
  options.started.push(server.child);
  options.exchange.set('server-pid', String(server.child.pid));
  options.exchange.set('data-dir', dataDir);
  options.exchange.set('token', TOKEN);
  const api = (method: string, path: string, body?: unknown) => apiCall(server.url, TOKEN, method, path, body);
  await api('POST', '/api/v2/projects', { org: 'acme', name: 'isolation', repo_url: repo });
  const { id } = await api('POST', '/api/v2/project/gh/acme/isolation/pipeline', {});
  const jobs = await until(
    'both jobs to finish',
    async () => {
      const [workflow] = (await api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
      const items = workflow ? (await api('GET', `/api/v2/workflow/${workflow.id}/job`)).items : [];
      return items.length === 2 && items.every((j: any) => !['queued', 'running', 'blocked'].includes(j.status)) ? items : undefined;
    },
    90_000,
    200,
  );
  const attacker = jobs.find((j: any) => j.name === 'attacker');
  const res = await fetch(`${server.url}/api/v2/project/gh/acme/isolation/job/${attacker.job_number}/output?step=0`, { headers: { 'Circle-Token': TOKEN } });
  const output = await res.text();
  expect(jobs.map((j: any) => [j.name, j.status]).sort()).toEqual([
    ['attacker', 'success'],
    ['victim', 'success'],
  ]);
  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));
  return output;
}

function expectNoLeak(output: string): void {
  expect(output).not.toContain('LEAK');
  for (const check of CHECKS) expect(output).toContain(`ok: ${check}`);
}

/** Whether the user `uid` can load Gyre from this checkout (a checkout under /root cannot). */
function readableBy(uid: number): boolean {
  return spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', `require(${JSON.stringify(join(ROOT, 'package.json'))})`]).status === 0;
}

describe('build isolation: one task cannot reach the server or another task', () => {
  const dirs: string[] = [];
  const started: ChildProcess[] = [];
  let exchange: Exchange;
  beforeEach(async () => {
    exchange = await startExchange();
  });
  afterEach(async () => {
    for (const child of started.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
    await exchange.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  const root = process.getuid?.() === 0;
  (root ? it : it.skip)('as root: each task runs as a build uid of its own', async () => {
    // The work root does not exist yet, nor its parent: Gyre makes both (as a first start makes
    // /var/lib/gyre/work), and must leave them passable for build uids despite its umask of 077.
    const fresh = mkdtempSync(join(tmpdir(), 'gyre-isolation-work-'));
    dirs.push(fresh);
    chmodSync(fresh, 0o711);
    const workDir = join(fresh, 'made-by-gyre', 'work');
    const output = await attack({ GYRE_EXECUTOR: 'sandbox', GYRE_BUILD_UIDS: '910000-910015', GYRE_WORK_DIR: workDir }, { dirs, exchange, started });
    expectNoLeak(output);
    expect(statSync(join(fresh, 'made-by-gyre')).mode & 0o777).toBe(0o711);
  }, 120_000);

  const bwrap = spawnSync('bwrap', ['--version']).status === 0;
  (root && bwrap && readableBy(NOBODY) ? it : it.skip)('as an ordinary user: each step runs in a bubblewrap sandbox', async () => {
    const output = await attack({ GYRE_EXECUTOR: 'sandbox', HOME: '/nonexistent' }, { uid: NOBODY, dirs, exchange, started });
    expectNoLeak(output);
  }, 120_000);

  it('without isolation (GYRE_EXECUTOR=shell), the server\'s environment holds no secret, and the job\'s environment none either', async () => {
    // No isolation: B's files and the data directory are open to A (that is what the warning
    // says); what Gyre still keeps out of reach is its secrets in environments.
    // No compile cache: the TypeScript loader then starts its esbuild process, which must not inherit a secret either.
    const output = await attack({ GYRE_EXECUTOR: 'shell', TSX_DISABLE_CACHE: '1' }, { dirs, exchange, started });
    for (const check of ['find the admin token in an environment', 'see a server secret in its own environment']) expect(output).toContain(`ok: ${check}`);
    expect(output).toContain("LEAK: read B's file");
  }, 120_000);
});
