import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createTestDatabase, type StoreKind } from './database';
import { makeGitRepo } from './gyre';
import { apiCall, startServerProcess } from './processes';
import { configOnClass } from './runner-tasks';

/**
 * A whole Gyre as its own process, set up for attacks from outside: a project with a pipeline
 * whose job waits on a runner class, and a task of it claimed by hand, so tests hold every kind
 * of credential (admin token, runner token, task token) and real ids to aim at. Everything the
 * server writes lives under `root` (data, HOME, TMPDIR); `outside` is the directory around it,
 * which must stay as it was.
 */
export interface HostileTarget {
  readonly url: string;
  readonly port: number;
  readonly opsUrl: string;
  readonly token: string;
  readonly runnerToken: string;
  readonly claimed: { token: string; task: TaskContext };
  /** A second task of another project, claimed too (for tokens aimed at the wrong task). */
  readonly other: { token: string; task: TaskContext };
  readonly pipelineId: string;
  readonly workflowId: string;
  readonly jobNumber: number;
  readonly slug: string;
  readonly root: string;
  readonly outside: string;
  readonly child: ChildProcess;
  stderr(): string;
  /** Files and directories directly in `outside` other than `root` (should be none). */
  strays(): string[];
  stop(): Promise<void>;
}

export const RUNNER_CLASS = 'acme/hostile';

export async function startHostileTarget(options: { store?: StoreKind; env?: Record<string, string> } = {}): Promise<HostileTarget> {
  const outside = mkdtempSync(join(tmpdir(), 'gyre-hostile-'));
  const root = join(outside, 'root');
  for (const d of ['data', 'home', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  const database = options.store === 'postgres' ? await createTestDatabase() : undefined;
  const token = `hostile-admin-${randomBytes(12).toString('hex')}`;
  const server = await startServerProcess({
    GYRE_DATA_DIR: join(root, 'data'),
    HOME: join(root, 'home'),
    TMPDIR: join(root, 'tmp'),
    GYRE_ADMIN_TOKEN: token,
    GYRE_RUNNER_SLOTS: '0',
    GYRE_LOG_LEVEL: 'error',
    // Attacks come fast from one address; the rate limits have tests of their own.
    GYRE_RATE_LIMIT_ANONYMOUS: '0',
    GYRE_RATE_LIMIT_TOKEN: '0',
    GYRE_RATE_LIMIT_AGENT: '0',
    ...(database ? { DATABASE_URL: database.url } : { DATABASE_URL: '' }),
    ...options.env,
  });
  const call = (method: string, path: string, body?: unknown) => apiCall(server.url, token, method, path, body);
  try {
    const opsUrl = /Health and metrics: (http:\/\/[^\s]+)\/healthz/.exec(server.stdout())?.[1] ?? '';
    await call('POST', '/api/v2/resource-classes', { name: RUNNER_CLASS, cpu: 1, memory_mb: 512, driver: 'runner' });
    const runnerToken = (await call('POST', `/api/v2/resource-classes/${encodeURIComponent(RUNNER_CLASS)}/tokens`, {})).token as string;
    const pipelines: string[] = [];
    for (const name of ['target', 'bystander']) {
      const repo = makeGitRepo({ '.circleci/config.yml': configOnClass(RUNNER_CLASS) });
      await call('POST', '/api/v2/projects', { org: 'acme', name, repo_url: repo });
      pipelines.push((await call('POST', `/api/v2/project/gh/acme/${name}/pipeline`, {})).id);
    }
    const claims: { token: string; task: TaskContext }[] = [];
    while (claims.length < 2) {
      const res = await fetch(`${server.url}/api/v2/agent/claim`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${runnerToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ runner_id: 'hostile-test', wait_ms: 10_000 }),
      });
      if (res.status === 200) claims.push((await res.json()) as { token: string; task: TaskContext });
      else if (res.status !== 204) throw new Error(`claim answered ${res.status}: ${await res.text()}`);
    }
    const claimed = claims.find((c) => c.task.projectSlug === 'gh/acme/target')!;
    const other = claims.find((c) => c.task.projectSlug === 'gh/acme/bystander')!;
    const workflows = await call('GET', `/api/v2/pipeline/${pipelines[0]}/workflow`);
    return {
      url: server.url,
      port: Number(new URL(server.url).port),
      opsUrl,
      token,
      runnerToken,
      claimed,
      other,
      pipelineId: pipelines[0],
      workflowId: workflows.items[0].id,
      jobNumber: claimed.task.jobNumber,
      slug: 'gh/acme/target',
      root,
      outside,
      child: server.child,
      stderr: server.stderr,
      strays: () => readdirSync(outside).filter((f) => f !== 'root'),
      async stop() {
        if (server.child.exitCode === null) {
          const exited = new Promise((r) => server.child.once('exit', r));
          server.child.kill('SIGTERM');
          await exited;
        }
        await database?.drop();
        rmSync(outside, { recursive: true, force: true });
      },
    };
  } catch (error) {
    server.child.kill('SIGKILL');
    await database?.drop();
    throw error;
  }
}

/** The answer to one raw request: the status of its first response line, the head and the body text. */
export interface RawAnswer {
  readonly status: number;
  readonly head: string;
  readonly body: string;
}

/**
 * Sends bytes as they are on a connection of their own and reads the first response, to the end of
 * its body or until the server closes the connection (the request asks it to); rejects when none
 * comes within `timeoutMs`.
 */
export function rawRequest(port: number, bytes: Buffer, timeoutMs = 10_000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!match) return reject(error ?? new Error(`no HTTP answer (got ${JSON.stringify(text.slice(0, 200))})`));
      const split = text.indexOf('\r\n\r\n');
      resolve({ status: Number(match[1]), head: split >= 0 ? text.slice(0, split) : text, body: split >= 0 ? text.slice(split + 4) : '' });
    };
    const timer = setTimeout(() => finish(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    let grace: NodeJS.Timeout | undefined;
    socket.on('data', (d) => {
      chunks.push(d);
      // Once the head is in, the body is read to its length (or a chunked body to its last chunk),
      // then the answer is done: a kept-alive connection would otherwise stay open. A body that does
      // not come whole is cut after a grace (a streamed answer never ends).
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      if (split < 0) return;
      const head = all.subarray(0, split).toString('latin1');
      const body = all.subarray(split + 4);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      if (length && body.length >= Number(length[1])) return finish();
      if (/\r\ntransfer-encoding: *chunked/i.test(head) && body.subarray(-5).toString('latin1') === '0\r\n\r\n') return finish();
      grace ??= setTimeout(() => finish(), length ? 5000 : 1000);
    });
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    socket.on('error', (e) => finish(e));
    socket.write(bytes);
  });
}
