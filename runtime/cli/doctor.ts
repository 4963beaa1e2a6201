import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ROLE_NAMES } from '../roles/names';
import { canaryParameters, canaryTargets, writeCanaryRepository, type CanaryTarget } from './doctor-canary';
import { inspectTls, type DoctorHttp, type HttpAnswer } from './doctor-http';

/**
 * `gyre doctor`: checks a live install from outside, as an operator would after `cdktf deploy` or
 * when builds stop: the API (and its certificate), the token, each role's readiness and its
 * dependencies (from the `/healthz` of the API and of the ops ports given), Nomad (the scheduler's
 * `nomad` check), the resource classes named, and a canary pipeline that writes and reads back
 * the database and the blob store on a runner, on a Nomad client, or on the default class.
 * Every check says what failed and what to look at next.
 */

export type CheckStatus = 'ok' | 'FAILED' | 'skipped' | 'warn';

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  /** What was seen. */
  readonly detail: string;
  /** What to check next (FAILED, skipped and warn only). */
  readonly next?: string;
}

export interface DoctorOptions {
  /** The API's address (GYRE_URL). */
  readonly url: string;
  readonly token?: string;
  /** Ops ports (`http://host:9090`) of processes besides the API, whose /healthz is read too. */
  readonly opsUrls: readonly string[];
  readonly runnerClass?: string;
  readonly nomadClass?: string;
  /** Run the canary pipeline. @default true */
  readonly canary: boolean;
  /** A project whose repository holds the canary config; otherwise doctor's own, made on first run. */
  readonly project?: string;
  /** The repository of doctor's own project: a local path (made and kept current) or a git URL. */
  readonly repo: string;
  /** How long a canary job may wait to be picked up (a runner's claim, a Nomad client's start). */
  readonly claimTimeoutMs: number;
  /** How long the whole canary may take. */
  readonly timeoutMs: number;
  readonly caPem?: string;
  /** Days of certificate validity below which the TLS check warns. @default 14 */
  readonly tlsWarnDays?: number;
  /** How often the canary is polled. @default 500 */
  readonly pollMs?: number;
}

/** doctor's own canary project, when no --project is given. */
export const DOCTOR_PROJECT = 'gh/gyre-doctor/canary';

/**
 * The project the canary runs in: --project, else doctor's own, in the organisation of the runner
 * class when one is checked (a runner class serves only its namespace's organisation).
 */
export function canaryProjectOf(options: Pick<DoctorOptions, 'project' | 'runnerClass'>): string {
  if (options.project) return options.project;
  const namespace = options.runnerClass?.includes('/') ? options.runnerClass.split('/')[0] : undefined;
  return namespace ? `gh/${namespace}/gyre-doctor-canary` : DOCTOR_PROJECT;
}

interface ProcessHealth {
  readonly url: string;
  readonly ready: boolean;
  readonly roles: readonly string[];
  readonly checks: Record<string, { ok: boolean; error?: string }>;
}

const DEPENDENCY_HINTS: Record<string, string> = {
  database: 'check DATABASE_URL in the gyre-runtime Secret, that the database accepts this role (NetworkPolicy, security group) and its TLS CA (sslrootcert)',
  blobs: "check GYRE_BLOB_STORE and the bucket settings, and the pod's cloud identity (IRSA / Workload Identity) on the bucket",
  nomad: 'check NOMAD_ADDR, the scheduler token Secret (NOMAD_TOKEN) and client certificate, and the Nomad servers (`kubectl -n gyre get pods -l app=nomad-server`)',
};

export async function runDoctor(options: DoctorOptions, http: DoctorHttp, report: (check: CheckResult) => void): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const add = (check: CheckResult) => {
    results.push(check);
    report(check);
    return check;
  };
  const base = options.url.replace(/\/+$/, '');
  const auth: Record<string, string> = options.token ? { 'Circle-Token': options.token } : {};
  const api = (method: string, path: string, body?: unknown) => http.request(method, `${base}${path}`, { headers: auth, body });

  // 1. The certificate, when the API is https: a bad one fails every call after it, so it comes first and stops here.
  if (base.startsWith('https://')) {
    const tls = await tlsCheck(base, options);
    add(tls);
    if (tls.status === 'FAILED') return skipRest(add, results, 'the API could not be reached over trusted TLS');
  }

  // 2. The API answers /healthz.
  let apiHealth: ProcessHealth | undefined;
  try {
    const started = Date.now();
    const answer = await http.request('GET', `${base}/healthz`);
    apiHealth = healthOf(base, answer);
    if (!apiHealth) {
      add({
        name: 'API reachable',
        status: 'FAILED',
        detail: `${base}/healthz answered ${answer.status} ${answer.contentType || ''} that is not Gyre's health report`.replace(/\s+/g, ' '),
        next: 'is GYRE_URL the address of Gyre (the `url` output of the server stack), not of a proxy or another service?',
      });
      return skipRest(add, results, 'the API did not answer as Gyre');
    }
    add({ name: 'API reachable', status: 'ok', detail: `${base}/healthz answered ${answer.status} in ${Date.now() - started} ms (roles: ${apiHealth.roles.join(', ') || 'none'})` });
  } catch (error) {
    add({
      name: 'API reachable',
      status: 'FAILED',
      detail: `cannot reach ${base}: ${(error as Error).message}`,
      next: 'is the server running and GYRE_URL its address? In a cluster: `kubectl -n gyre get pods` (gyre-api ready?), the load balancer (`load_balancer_address` output) and DNS for the domain',
    });
    return skipRest(add, results, 'the API is not reachable');
  }

  // 3. The token.
  let tokenOk = false;
  if (!options.token) {
    add({ name: 'API token', status: 'FAILED', detail: 'GYRE_TOKEN is not set', next: "set GYRE_TOKEN to an admin's API token (the server stack's `admin_token` output, or the token printed at first start)" });
  } else {
    const me = await api('GET', '/api/v2/me').catch((error: Error) => error);
    if (me instanceof Error) add({ name: 'API token', status: 'FAILED', detail: `GET /api/v2/me failed: ${me.message}`, next: 'the API answered /healthz but not this request: check the load balancer and the api pods’ logs' });
    else if (me.status === 401) add({ name: 'API token', status: 'FAILED', detail: `the API refused GYRE_TOKEN (401: ${messageOf(me)})`, next: "set GYRE_TOKEN to a current API token of an admin (the server stack's `admin_token` output)" });
    else if (me.status !== 200) add({ name: 'API token', status: 'FAILED', detail: `GET /api/v2/me answered ${me.status}: ${messageOf(me)}`, next: "check the api role's log (`kubectl -n gyre logs deploy/gyre-api`)" });
    else {
      tokenOk = true;
      add({ name: 'API token', status: 'ok', detail: `accepted (user ${me.json?.login ?? me.json?.name ?? me.json?.id})` });
    }
  }

  // 4. Every process's readiness: the API's, and the ops ports given.
  const processes: ProcessHealth[] = [apiHealth];
  for (const raw of options.opsUrls) {
    const url = raw.replace(/\/+$/, '');
    try {
      const answer = await http.request('GET', `${url}/healthz`);
      const health = healthOf(url, answer);
      if (health) processes.push(health);
      else add({ name: `process ${url}`, status: 'FAILED', detail: `${url}/healthz answered ${answer.status}, not Gyre's health report`, next: 'is this the ops port (9090, GYRE_OPS_PORT) of a Gyre process?' });
    } catch (error) {
      add({
        name: `process ${url}`,
        status: 'FAILED',
        detail: `cannot reach ${url}/healthz: ${(error as Error).message}`,
        next: 'ops ports are not exposed outside the cluster: run doctor inside it, or `kubectl -n gyre port-forward svc/gyre-<role> 9090` and pass --ops-url http://127.0.0.1:9090',
      });
    }
  }
  for (const role of ROLE_NAMES) {
    const running = processes.filter((p) => p.roles.includes(role));
    if (!running.length) {
      add({
        name: `role ${role}`,
        status: 'skipped',
        detail: 'no process checked runs it',
        next: `pass the ops URL of a process that runs it: --ops-url http://<pod>:9090 (\`kubectl -n gyre port-forward svc/gyre-${role} 9090\`), or GYRE_DOCTOR_OPS_URLS`,
      });
      continue;
    }
    const notReady = running.filter((p) => !p.ready);
    if (notReady.length) {
      const failing = notReady.flatMap((p) => Object.entries(p.checks).filter(([, c]) => !c.ok).map(([name, c]) => ({ url: p.url, name, error: c.error ?? 'failed' })));
      add({
        name: `role ${role}`,
        status: 'FAILED',
        detail: `not ready at ${notReady.map((p) => p.url).join(', ')}: ${failing.map((f) => `${f.name}: ${f.error}`).join('; ') || 'no reason given'}`,
        next: [...new Set(failing.map((f) => DEPENDENCY_HINTS[f.name]).filter(Boolean))].join('; ') || `read the process's log (\`kubectl -n gyre logs deploy/gyre-${role}\`)`,
      });
    } else add({ name: `role ${role}`, status: 'ok', detail: `ready at ${running.map((p) => p.url).join(', ')}` });
  }

  // 5. The dependencies each process checks: database and blob store (reads), Nomad.
  for (const [dep, label] of [['database', 'database'], ['blobs', 'blob store']] as const) {
    const seen = processes.filter((p) => p.checks[dep]);
    const failing = seen.filter((p) => !p.checks[dep].ok);
    if (!seen.length) add({ name: label, status: 'skipped', detail: 'no process checked reports on it' });
    else if (failing.length) add({ name: label, status: 'FAILED', detail: failing.map((p) => `${p.url}: ${p.checks[dep].error}`).join('; '), next: DEPENDENCY_HINTS[dep] });
    else add({ name: label, status: 'ok', detail: `answers every process checked (${seen.length})` });
  }
  const nomadSeen = processes.filter((p) => p.checks.nomad);
  if (!nomadSeen.length) {
    add({
      name: 'Nomad',
      status: options.nomadClass ? 'FAILED' : 'skipped',
      detail: 'no process checked talks to Nomad',
      next: options.nomadClass
        ? 'pass the scheduler\'s ops URL (--ops-url, `kubectl -n gyre port-forward svc/gyre-scheduler 9090`); if it is given, the scheduler has no NOMAD_ADDR'
        : 'the scheduler reports on Nomad on its ops port; pass it with --ops-url to check Nomad',
    });
  } else {
    const failing = nomadSeen.filter((p) => !p.checks.nomad.ok);
    if (failing.length) add({ name: 'Nomad', status: 'FAILED', detail: `the scheduler cannot reach Nomad: ${failing.map((p) => `${p.url}: ${p.checks.nomad.error}`).join('; ')}`, next: DEPENDENCY_HINTS.nomad });
    else add({ name: 'Nomad', status: 'ok', detail: `the scheduler reaches Nomad and it has a leader (${nomadSeen.map((p) => p.url).join(', ')})${options.nomadClass ? '; the canary shows whether a client runs jobs' : ''}` });
  }

  if (!tokenOk) return skipRest(add, results, 'needs an API token the server accepts');

  // 6. The resource classes named.
  const targets = canaryTargets({ runnerClass: options.runnerClass, nomadClass: options.nomadClass });
  let classesOk = true;
  if (options.runnerClass || options.nomadClass) {
    const list = await api('GET', '/api/v2/resource-classes').catch((error: Error) => error);
    if (list instanceof Error || list.status !== 200) {
      classesOk = false;
      add({ name: 'resource classes', status: 'FAILED', detail: `GET /api/v2/resource-classes: ${list instanceof Error ? list.message : `${list.status} ${messageOf(list)}`}`, next: 'check the api role’s log' });
    } else {
      const known = new Map<string, string>((list.json?.items ?? []).map((rc: { name: string; driver: string }) => [rc.name, rc.driver]));
      const problems: string[] = [];
      const fixes: string[] = [];
      for (const [name, driver] of [[options.runnerClass, 'runner'], [options.nomadClass, 'nomad']] as const) {
        if (!name) continue;
        const has = known.get(name);
        if (!has) {
          problems.push(`${name} does not exist`);
          fixes.push(`gyre resource-class add ${name} --cpu 2 --memory 4096 --driver ${driver}`);
        } else if (has !== driver) {
          problems.push(`${name} has driver ${has}, not ${driver}`);
          fixes.push(`name a class whose driver is ${driver} (\`gyre resource-class list\`)`);
        }
      }
      if (problems.length) {
        classesOk = false;
        add({ name: 'resource classes', status: 'FAILED', detail: problems.join('; '), next: fixes.join('; ') });
      } else add({ name: 'resource classes', status: 'ok', detail: targets.filter((t) => t.resourceClass).map((t) => `${t.resourceClass} (${t.kind})`).join(', ') });
    }
  }

  // 7. The canary pipeline.
  if (!options.canary) {
    add({ name: 'canary pipeline', status: 'skipped', detail: '--no-canary' });
    return results;
  }
  if (!classesOk) return skipRest(add, results, 'the resource classes named are not usable');
  await canary(options, api, http, targets, add);
  return results;
}

function skipRest(add: (c: CheckResult) => void, results: CheckResult[], why: string): CheckResult[] {
  add({ name: 'remaining checks', status: 'skipped', detail: why });
  return results;
}

async function tlsCheck(base: string, options: DoctorOptions): Promise<CheckResult> {
  try {
    const tls = await inspectTls(base, { caPem: options.caPem });
    const what = `${tls.subject}, issued by ${tls.issuer}${tls.altNames ? `, for ${tls.altNames}` : ''}, valid until ${tls.validTo.toISOString().slice(0, 10)}`;
    if (!tls.trusted) {
      return {
        name: 'TLS certificate',
        status: 'FAILED',
        detail: `not trusted: ${tls.problem} (${what})`,
        next: /altname|Hostname|IP:/i.test(tls.problem ?? '')
          ? 'the certificate does not name this host: set GYRE_URL to the domain it was issued for, or reissue it for this name (tls settings of the environment file)'
          : /expired/i.test(tls.problem ?? '')
            ? 'renew the certificate (docs/deploying.md#certificate-rotation)'
            : 'if the install uses its own CA or tls.mode self-signed, pass --ca-file <the CA certificate, PEM> (or NODE_EXTRA_CA_CERTS); otherwise check the chain the load balancer serves',
      };
    }
    if (tls.daysLeft < (options.tlsWarnDays ?? 14)) return { name: 'TLS certificate', status: 'warn', detail: `expires in ${tls.daysLeft} days (${what})`, next: 'renew it (docs/deploying.md#certificate-rotation)' };
    return { name: 'TLS certificate', status: 'ok', detail: `trusted (${what}; ${tls.daysLeft} days left)` };
  } catch (error) {
    return {
      name: 'TLS certificate',
      status: 'FAILED',
      detail: `no TLS handshake with ${base}: ${(error as Error).message}`,
      next: 'is the server running and GYRE_URL its address? Does the load balancer serve HTTPS on this port?',
    };
  }
}

/** A process's /healthz answer as Gyre gives it (`{status, roles, checks}`), or undefined for anything else. */
function healthOf(url: string, answer: HttpAnswer): ProcessHealth | undefined {
  const body = answer.json;
  if ((answer.status !== 200 && answer.status !== 503) || !body || typeof body.status !== 'string') return undefined;
  return {
    url,
    ready: answer.status === 200 && body.status === 'ok',
    roles: Array.isArray(body.roles) ? body.roles.map(String) : [],
    checks: body.checks && typeof body.checks === 'object' ? body.checks : {},
  };
}

function messageOf(answer: HttpAnswer): string {
  return String(answer.json?.message ?? answer.text.slice(0, 200));
}

type Api = (method: string, path: string, body?: unknown) => Promise<HttpAnswer>;

const TERMINAL = new Set(['success', 'failed', 'canceled', 'not_run', 'infrastructure_fail', 'timedout', 'terminated-unknown', 'unauthorized']);

async function canary(options: DoctorOptions, api: Api, http: DoctorHttp, targets: CanaryTarget[], add: (c: CheckResult) => CheckResult): Promise<void> {
  const slug = canaryProjectOf(options);
  const slugPath = slug.split('/').map(encodeURIComponent).join('/');
  const setup = await ensureProject(options, api, slug, slugPath);
  add(setup.check);
  if (setup.check.status === 'FAILED') return;

  const nonce = randomBytes(8).toString('hex');
  const started = Date.now();
  const created = await api('POST', `/api/v2/project/${slugPath}/pipeline`, { parameters: canaryParameters(targets, nonce) }).catch((error: Error) => error);
  if (created instanceof Error || created.status !== 201) {
    add({
      name: 'canary pipeline',
      status: 'FAILED',
      detail: `could not trigger it in ${slug}: ${created instanceof Error ? created.message : `${created.status} ${messageOf(created)}`}`,
      next: options.project ? `the project's repository must hold the canary config (\`gyre doctor --print-canary-config\`)` : 'check the api and triggers roles’ logs',
    });
    return;
  }
  const pipeline = created.json as { id: string; number: number };
  const poll = options.pollMs ?? 500;
  const deadline = started + options.timeoutMs;

  // The pipeline compiles (conductor) and its workflows appear.
  let workflows: { id: string; name: string; status: string }[] = [];
  for (;;) {
    const p = await api('GET', `/api/v2/pipeline/${pipeline.id}`);
    if (p.json?.state === 'errored') {
      add({
        name: 'canary pipeline',
        status: 'FAILED',
        detail: `pipeline ${pipeline.number} errored: ${(p.json.errors ?? []).map((e: { message: string }) => e.message).join('; ')}`,
        next: options.project ? `the project's repository must hold the canary config (\`gyre doctor --print-canary-config\`)` : 'check the conductor role’s log',
      });
      return;
    }
    if (p.json?.state === 'created') {
      workflows = (await api('GET', `/api/v2/pipeline/${pipeline.id}/workflow`)).json?.items ?? [];
      if (targets.every((t) => workflows.some((w) => w.name === t.workflow))) break;
      add({
        name: 'canary pipeline',
        status: 'FAILED',
        detail: `pipeline ${pipeline.number} has workflows ${workflows.map((w) => w.name).join(', ') || '(none)'}, not ${targets.map((t) => t.workflow).join(', ')}`,
        next: `the project's repository must hold the canary config (\`gyre doctor --print-canary-config\`)`,
      });
      return;
    }
    if (Date.now() > deadline) {
      add({ name: 'canary pipeline', status: 'FAILED', detail: `pipeline ${pipeline.number} was not compiled within ${seconds(options.timeoutMs)} s (state ${p.json?.state})`, next: 'is the conductor role running? (`role conductor` above; `kubectl -n gyre logs deploy/gyre-conductor`)' });
      return;
    }
    await sleep(poll);
  }
  add({ name: 'canary pipeline', status: 'ok', detail: `pipeline ${pipeline.number} (${pipeline.id}) in ${slug}, compiled in ${seconds(Date.now() - started)} s` });

  const outcomes = await Promise.all(targets.map((t) => watchTarget(t, workflows.find((w) => w.name === t.workflow)!.id, options, api, http, slugPath, nonce, deadline, poll)));
  for (const o of outcomes) add(o.check);

  const ran = outcomes.filter((o) => o.stepsRan);
  if (!ran.length) add({ name: 'database read/write', status: 'skipped', detail: 'no canary job ran' });
  else add({ name: 'database read/write', status: 'ok', detail: 'the canary pipeline, its jobs, steps and output were written and read back through the API' });
  const blob = outcomes.filter((o) => o.blob);
  if (!blob.length) add({ name: 'blob store read/write', status: 'skipped', detail: 'no canary job got as far as storing its artifact and cache' });
  else if (blob.some((o) => o.blob!.ok)) add({ name: 'blob store read/write', status: blob.every((o) => o.blob!.ok) ? 'ok' : 'FAILED', detail: blob.map((o) => o.blob!.detail).join('; '), ...(blob.every((o) => o.blob!.ok) ? {} : { next: DEPENDENCY_HINTS.blobs }) });
  else add({ name: 'blob store read/write', status: 'FAILED', detail: blob.map((o) => o.blob!.detail).join('; '), next: `${DEPENDENCY_HINTS.blobs}; the output role's log says why a write failed` });
}

async function ensureProject(options: DoctorOptions, api: Api, slug: string, slugPath: string): Promise<{ check: CheckResult }> {
  const name = 'canary project';
  const existing = await api('GET', `/api/v2/project/${slugPath}`);
  if (options.project) {
    if (existing.status === 404) return { check: { name, status: 'FAILED', detail: `project ${slug} does not exist`, next: 'add it with `gyre project add` over a repository holding the canary config (`gyre doctor --print-canary-config`), or leave out --project' } };
    if (existing.status !== 200) return { check: { name, status: 'FAILED', detail: `GET project ${slug}: ${existing.status} ${messageOf(existing)}` } };
    return { check: { name, status: 'ok', detail: `${slug} (repository ${existing.json?.vcs_info?.vcs_url})` } };
  }
  // doctor's own project: a repository on this machine is written (or brought up to date) here.
  const local = !/^[a-z][a-z0-9+.-]*:\/\/|^[^/]+@[^/]+:/i.test(options.repo);
  const repo = local ? resolve(options.repo) : options.repo;
  let state = 'as it is';
  if (existing.status === 200) {
    const current = String(existing.json?.vcs_info?.vcs_url ?? '');
    if (isAbsolute(current) && existsSync(current)) state = writeCanaryRepository(current);
    return { check: { name, status: 'ok', detail: `${slug} (repository ${current}, ${state})` } };
  }
  if (existing.status !== 404) return { check: { name, status: 'FAILED', detail: `GET project ${slug}: ${existing.status} ${messageOf(existing)}` } };
  if (local) state = writeCanaryRepository(repo);
  const [org, project] = slug.split('/').slice(1);
  const added = await api('POST', '/api/v2/projects', { org, name: project, repo_url: repo });
  if (added.status === 201 || added.status === 200) return { check: { name, status: 'ok', detail: `${slug} created over ${repo} (${state})` } };
  if (added.status === 403) return { check: { name, status: 'FAILED', detail: `only an admin can add doctor's project: ${messageOf(added)}`, next: "use an admin's token, or --project with a project that holds the canary config" } };
  return {
    check: {
      name,
      status: 'FAILED',
      detail: `could not add ${slug} over ${repo}: ${added.status} ${messageOf(added)}`,
      next: local
        ? 'the server reads repositories from its own disk or network, not this machine: commit the canary config (`gyre doctor --print-canary-config`) to a repository the server can clone and pass --repo <git URL>, or --project'
        : 'can the server clone that URL (network, credentials)?',
    },
  };
}

interface TargetOutcome {
  readonly check: CheckResult;
  /** At least one canary step ran (so the database took its writes). */
  readonly stepsRan: boolean;
  /** The artifact and cache round trip, when the write job got that far. */
  readonly blob?: { ok: boolean; detail: string };
}

const targetLabel = (t: CanaryTarget) => (t.kind === 'default' ? 'canary on the default resource class' : `canary on ${t.kind === 'nomad' ? 'Nomad' : 'runner'} class ${t.resourceClass}`);

/** Follows one target's workflow: write, then read; says where it stopped and why. */
async function watchTarget(t: CanaryTarget, workflowId: string, options: DoctorOptions, api: Api, http: DoctorHttp, slugPath: string, nonce: string, deadline: number, poll: number): Promise<TargetOutcome> {
  const name = targetLabel(t);
  const started = Date.now();
  const waitingSince = new Map<string, number>();
  let stepsRan = false;
  const fail = async (detail: string, next: string, blob?: TargetOutcome['blob']): Promise<TargetOutcome> => {
    // A canary left waiting would run whenever a runner or client turns up; it is stopped now.
    await api('POST', `/api/v2/workflow/${workflowId}/cancel`).catch(() => undefined);
    return { check: { name, status: 'FAILED', detail, next }, stepsRan, blob };
  };
  for (;;) {
    const jobs: { name: string; status: string; job_number?: number }[] = (await api('GET', `/api/v2/workflow/${workflowId}/job`)).json?.items ?? [];
    const write = jobs.find((j) => j.name === t.writeJob);
    const read = jobs.find((j) => j.name === t.readJob);
    for (const job of [write, read]) {
      if (!job || job.status === 'blocked' || TERMINAL.has(job.status)) continue;
      if (!waitingSince.has(job.name)) waitingSince.set(job.name, Date.now());
      const steps = job.job_number && job.status === 'running' ? ((await api('GET', `/api/v2/project/${slugPath}/job/${job.job_number}/steps`)).json?.items ?? []) : [];
      if (steps.length) {
        stepsRan = true;
        continue;
      }
      const waited = Date.now() - waitingSince.get(job.name)!;
      if (waited > options.claimTimeoutMs) return fail(notPickedUp(t, job.status, options.claimTimeoutMs), nextForNotPickedUp(t, job.status));
    }
    if (write && TERMINAL.has(write.status) && write.status !== 'success') {
      const why = await failedStep(api, slugPath, write.job_number);
      stepsRan ||= why.ran;
      return fail(`the write job #${write.job_number} ended ${write.status}${why.text}`, `read its output: \`gyre logs ${write.job_number} --project ${slugPath}\``, why.blob);
    }
    if (read && TERMINAL.has(read.status)) {
      stepsRan = true;
      const artifact = write?.job_number ? await checkArtifact(api, http, slugPath, write.job_number, nonce) : { ok: false, detail: 'the write job has no number' };
      if (read.status !== 'success') {
        const why = await failedStep(api, slugPath, read.job_number);
        const cacheLost = /Check the restored cache|restore_cache|Restoring cache/i.test(why.text);
        return fail(
          `the read job #${read.job_number} ended ${read.status}${why.text}`,
          cacheLost ? `the cache the write job saved did not come back: ${DEPENDENCY_HINTS.blobs}` : `read its output: \`gyre logs ${read.job_number} --project ${slugPath}\``,
          { ok: false, detail: `${t.kind}: ${artifact.ok ? 'artifact read back, ' : `${artifact.detail}; `}cache not read back` },
        );
      }
      const blob = { ok: artifact.ok, detail: `${t.kind}: ${artifact.ok ? 'artifact canary.txt and cache stored and read back' : artifact.detail}` };
      if (!artifact.ok) return { check: { name, status: 'FAILED', detail: artifact.detail, next: 'the artifact listing or download failed: check GYRE_PUBLIC_URL (artifact links use it) and the output role' }, stepsRan, blob };
      return {
        check: { name, status: 'ok', detail: `jobs #${write?.job_number} (write) and #${read.job_number} (read) succeeded in ${seconds(Date.now() - started)} s; artifact and cache read back` },
        stepsRan,
        blob,
      };
    }
    if (Date.now() > deadline) {
      const current = [write, read].filter(Boolean).map((j) => `${j!.name} ${j!.status}`).join(', ');
      return fail(`did not finish within ${seconds(options.timeoutMs)} s (${current})`, 'raise --timeout if builds are slow here, or read the jobs’ output with `gyre logs`');
    }
    await sleep(poll);
  }
}

function notPickedUp(t: CanaryTarget, status: string, ms: number): string {
  const s = seconds(ms);
  if (t.kind === 'runner') return `no runner claimed the canary job in ${s} s: is a runner of class ${t.resourceClass} running?`;
  if (t.kind === 'nomad') {
    return status === 'queued'
      ? `the scheduler did not submit the canary job to Nomad in ${s} s`
      : `no Nomad client started the canary job's agent in ${s} s (the scheduler submitted it; its allocation did not start)`;
  }
  return `nothing ran the canary job (default resource class) in ${s} s`;
}

function nextForNotPickedUp(t: CanaryTarget, status: string): string {
  if (t.kind === 'runner') return `\`gyre resource-class list\`; start one with \`gyre runner --url <GYRE_URL> --token <a token from gyre resource-class token ${t.resourceClass}>\``;
  if (t.kind === 'nomad') {
    return status === 'queued'
      ? 'is the scheduler role running with NOMAD_ADDR (`role scheduler` and `Nomad` above)?'
      : '`nomad node status` for a ready client of the node class in the job template, `nomad job status gyre-task-…` for why the allocation waits (resources, constraints, the agent image pull from the registry)';
  }
  return 'the default class runs on the built-in runner (GYRE_RUNNER_SLOTS > 0) or on a class registered as `medium`; in a cluster name a runner or Nomad class with --runner-class / --nomad-class';
}

/** The first failed step of a job: its name and the last lines of its output. */
async function failedStep(api: Api, slugPath: string, jobNumber?: number): Promise<{ text: string; ran: boolean; blob?: TargetOutcome['blob'] }> {
  if (!jobNumber) return { text: '', ran: false };
  const steps: { index: number; name: string; type?: string; status: string; exit_code: number | null }[] = (await api('GET', `/api/v2/project/${slugPath}/job/${jobNumber}/steps`)).json?.items ?? [];
  const failed = steps.find((s) => s.status !== 'success');
  if (!failed) return { text: '', ran: steps.length > 0 };
  const output = await api('GET', `/api/v2/project/${slugPath}/job/${jobNumber}/output?step=${failed.index}`);
  const tail = output.text.trim().split('\n').slice(-3).join(' | ').slice(0, 400);
  const blobStep = /artifact|cache/i.test(`${failed.type ?? ''} ${failed.name}`);
  return {
    text: ` at step '${failed.name}'${failed.exit_code !== null && failed.exit_code !== undefined ? ` (exit ${failed.exit_code})` : ''}${tail ? `: ${tail}` : ''}`,
    ran: true,
    blob: blobStep ? { ok: false, detail: `step '${failed.name}' failed${tail ? `: ${tail}` : ''}` } : undefined,
  };
}

/** Lists the write job's artifacts and downloads canary.txt; it must hold the nonce. */
async function checkArtifact(api: Api, http: DoctorHttp, slugPath: string, jobNumber: number, nonce: string): Promise<{ ok: boolean; detail: string }> {
  const list = await api('GET', `/api/v2/project/${slugPath}/${jobNumber}/artifacts`);
  const item = (list.json?.items ?? []).find((a: { path: string }) => a.path === 'canary.txt');
  if (!item) return { ok: false, detail: `job #${jobNumber} lists no artifact canary.txt (${list.status}: ${list.text.slice(0, 200)})` };
  try {
    const file = await http.request('GET', item.url);
    if (file.status !== 200) return { ok: false, detail: `downloading ${item.url} answered ${file.status}` };
    if (file.text !== `gyre-doctor ${nonce}\n`) return { ok: false, detail: `artifact canary.txt holds ${JSON.stringify(file.text.slice(0, 100))}, not what the job wrote` };
    return { ok: true, detail: 'artifact read back' };
  } catch (error) {
    return { ok: false, detail: `cannot download the artifact from ${item.url}: ${(error as Error).message}` };
  }
}

const seconds = (ms: number) => String(Math.round(ms / 100) / 10);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
