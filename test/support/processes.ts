import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { seedEmbeddedDatabase } from './embedded-database';

const ROOT = resolve(__dirname, '../..');

/**
 * `gyre` as its `#!/usr/bin/env -S VAR=value node --flag` line starts it (what `npm start` and the
 * image run), with this test's Node: the environment it sets and the command line before `args`.
 */
export function gyreCommand(args: readonly string[]): { command: string[]; env: Record<string, string> } {
  const shebang = readFileSync(join(ROOT, 'bin/gyre.js'), 'utf8').split('\n', 1)[0];
  const words = shebang.replace(/^#!\/usr\/bin\/env -S /, '').split(/\s+/);
  const env: Record<string, string> = {};
  while (/^[A-Z_]+=/.test(words[0])) {
    const [name, value] = words.shift()!.split('=');
    env[name] = value;
  }
  if (words.shift() !== 'node') throw new Error(`bin/gyre.js starts with '${shebang}', not env -S [VAR=value ...] node [flags]`);
  return { command: [process.execPath, ...words, join(ROOT, 'bin/gyre.js'), ...args], env };
}

/**
 * A free TCP port on 127.0.0.1, for a server started later at a known address (a restarted server
 * comes back at the same one; a cluster rehearsal's pod listens once its migrations are done, tens
 * of seconds after). Taken below the kernel's ephemeral range (ip_local_port_range), which a port
 * the kernel picks (`listen(0)`) is in, and where every outgoing connection takes its local port:
 * one of those took a pod's port before it listened (EADDRINUSE in a CI run). Each jest worker
 * takes from a slice of its own, in turn, so two workers never pick the same one.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < PORT_SLICE; i++) {
    const port = portBase + (nextPort++ % PORT_SLICE);
    if (await listensOn(port)) return port;
  }
  const picked = await listensOn(0);
  if (picked === false) throw new Error('no TCP port on 127.0.0.1 could be listened on');
  return picked;
}

const PORT_SLICE = 1000;
const portBase = (() => {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: the usual range's start
  }
  const slices = Math.max(1, Math.floor((low - 10000) / PORT_SLICE));
  const worker = Number(process.env.JEST_WORKER_ID ?? 0);
  return 10000 + (worker % slices) * PORT_SLICE;
})();
let nextPort = 0;

/** The port a listener got on 127.0.0.1 at `port` (0: the kernel's pick), closed again; false when it is taken. */
function listensOn(port: number): Promise<number | false> {
  return new Promise((resolvePort) => {
    const server = createServer();
    server.once('error', () => resolvePort(false));
    server.listen(port, '127.0.0.1', () => {
      const got = (server.address() as { port: number }).port;
      server.close(() => resolvePort(got));
    });
  });
}

/**
 * Starts `gyre server` as a child process and waits until /healthz answers; with `uid`, as that
 * user (through setpriv, from a test running as root).
 */
export async function startServerProcess(
  env: Record<string, string>,
  options: { uid?: number; firstStart?: boolean; nodeFlags?: readonly string[] } = {},
): Promise<{ child: ChildProcess; url: string; stderr: () => string; stdout: () => string }> {
  // An embedded server on a data directory without a database starts from a migrated copy, unless
  // the test is about a first start (test/support/embedded-database.ts).
  const embedded = env.DATABASE_URL === '' || (env.DATABASE_URL === undefined && !process.env.DATABASE_URL);
  if (env.GYRE_DATA_DIR && embedded && !options.firstStart) {
    await seedEmbeddedDatabase(env.GYRE_DATA_DIR);
    if (options.uid !== undefined) spawnSync('chown', ['-R', `${options.uid}:${options.uid}`, join(env.GYRE_DATA_DIR, 'pgdata')]);
  }
  const gyre = gyreCommand(['server']);
  // Node's own flags (a benchmark's --cpu-prof) go before the script; NODE_OPTIONS refuses some of them.
  const node = [gyre.command[0], ...(options.nodeFlags ?? []), ...gyre.command.slice(1)];
  const command = options.uid === undefined ? node : ['setpriv', `--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups', ...node];
  const child = spawn(command[0], command.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...gyre.env, GYRE_HOST: '127.0.0.1', GYRE_PORT: '0', GYRE_OPS_PORT: '0', GYRE_EXAMPLE: 'false', GYRE_LOG_LEVEL: 'warn', GYRE_EXECUTOR: 'shell', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let out = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out} ${stderr}`)), 60_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /Gyre is running at (https?:\/\/[^\s]+) /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${stderr}`)));
  });
  for (let i = 0; i < 100 && url.startsWith("http:"); i++) {
    if ((await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, url, stderr: () => stderr, stdout: () => out };
}

/** Starts `gyre runner` as a child process in its own process group (so a kill takes its tasks too). */
export function startRunnerProcess(url: string, token: string, args: string[] = [], env: Record<string, string> = {}): ChildProcess & { output: () => string } {
  // The token goes in the environment, as the README advises (--token shows in `ps`).
  const gyre = gyreCommand(['runner', '--url', url, ...args]);
  const child = spawn(gyre.command[0], gyre.command.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...gyre.env, GYRE_LOG_LEVEL: 'warn', GYRE_EXECUTOR: 'shell', GYRE_RUNNER_TOKEN: token, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let output = '';
  child.stderr!.on('data', (d) => (output += d));
  return Object.assign(child, { output: () => output });
}

/** SIGKILLs a detached child's whole process group and waits for the child to exit. */
export async function killGroup(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
  await exited;
}

/**
 * One API call on a connection of its own: a kept-alive connection the server is closing as the
 * request goes out (its 5 s idle timer firing while a loaded machine stalls the client) would fail
 * the call with "other side closed" before the server saw it.
 */
export function apiCall(url: string, token: string, method: string, path: string, body?: unknown): Promise<any> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { 'Circle-Token': token, 'Content-Type': 'application/json', ...(payload !== undefined ? { 'Content-Length': String(Buffer.byteLength(payload)) } : {}) };
  return new Promise((resolvePromise, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url + path, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if ((res.statusCode ?? 0) >= 400) return reject(new Error(`${method} ${path} → ${res.statusCode} ${text}`));
        try {
          resolvePromise(text ? JSON.parse(text) : undefined);
        } catch (error) {
          reject(error);
        }
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn().catch(() => undefined);
    if (value !== undefined && value !== false) return value as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
