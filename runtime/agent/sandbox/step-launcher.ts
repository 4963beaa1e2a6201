import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { makeProcessTempDir } from './process-temp-dir';

/**
 * Steps are started by a small resident process, the launcher, rather than by the agent's own.
 *
 * Why: Node starts a child with fork() and waits until it has exec'd, and fork() copies the page
 * tables of the whole process. An embedded server holds PGlite's WebAssembly memory besides its
 * own heap, so each step's `spawn` blocked its one thread for 10–25 ms (a bare Node process: 4 ms),
 * in every task's path to its first command and on the thread that also serves the API and the
 * database. The launcher is a bare Node process: it forks cheaply and the server's thread only
 * writes a line.
 *
 * How: the agent sends the launcher one JSON line per step (command, arguments, environment,
 * working directory, uid and gid: what `spawn` would have been given) on its stdin. The launcher
 * spawns it exactly as the agent did (its own process group, stdin closed, stdout and stderr on
 * pipes), answers its pid, and later how it exited, on its stdout. The output goes through a Unix
 * socket of the agent's, in a directory only the agent's user may enter: the launcher connects
 * once per step, names the step by its random id, and pipes stdout and stderr into it. Backpressure
 * holds end to end: a paused reader stops the socket, then the pipe, then the command's writes.
 * The command still writes to pipes, as before (not to the socket: `/dev/stdout` cannot be opened
 * on a socket).
 *
 * A step may be started held (LaunchOptions.gate): its process gets a pipe as fd 3, and a later
 * line `{"id", "go"}` makes the launcher write a line to it (`go: true`) or close it unwritten
 * (`go: false`); the step's shell waits on it before its script (GATE_LINE in ./isolation.ts).
 *
 * A runner starts it ahead of its first step (`warm`, from Isolation.warm), else the first step does.
 *
 * The launcher ends when its stdin closes, that is when the agent ends or dies, so sandboxes that
 * die with their parent (bubblewrap's --die-with-parent) still die with the agent. A launcher that
 * died is started again by the next step; steps it had started end as killed.
 */

/** What a step process looks like to the box and the executor: the part of ChildProcess they use. */
export interface StepProcess extends EventEmitter {
  /** Set once started (the `spawn` event); undefined before, and when it could not start. */
  readonly pid: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  /** stdout and stderr of the command, in the order written. */
  readonly stdout: Readable;
  /** Always empty: kept so the executor reads a step like a ChildProcess. */
  readonly stderr: Readable;
}

export interface LaunchOptions {
  readonly cwd?: string;
  readonly env: Readonly<Record<string, string>>;
  readonly uid?: number;
  readonly gid?: number;
  /**
   * Started now, held until this settles: the process gets a pipe as its fd 3, which the launcher
   * writes a line to when the gate resolves and closes unwritten when it rejects. The command must
   * read it before doing anything (GATE_LINE in ./isolation.ts); nothing else reads it.
   */
  readonly gate?: Promise<void>;
}

export interface StepLauncher {
  launch(file: string, args: readonly string[], options: LaunchOptions): StepProcess;
  /** Starts the launcher now, when it is not running, rather than on the next step's way. */
  warm(): void;
  close(): void;
}

/** The launcher's own code, run by `node -e` with no module of Gyre's (a bare process is the point). */
const LAUNCHER = `
const { spawn } = require('node:child_process');
const { connect } = require('node:net');
const socketPath = process.argv[1];
const say = (message) => process.stdout.write(JSON.stringify(message) + '\\n');
// The gates of the steps started held (fd 3 of each): a line lets one go, closing it unwritten stops it.
const gates = new Map();
const open = (m) => { const gate = gates.get(m.id); gates.delete(m.id); if (!gate) return; if (m.go) gate.end('go\\n'); else gate.destroy(); };
const start = (r) => {
  let child;
  try {
    child = spawn(r.file, r.args, { cwd: r.cwd, env: r.env, uid: r.uid, gid: r.gid, detached: true, stdio: r.gated ? ['ignore', 'pipe', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    say({ id: r.id, error: String(error && error.message || error) });
    say({ id: r.id, exit: null, signal: null });
    return;
  }
  child.on('error', (error) => say({ id: r.id, error: String(error && error.message || error) }));
  let exit;
  child.on('exit', (code, signal) => (exit = { id: r.id, exit: code, signal }));
  if (child.pid === undefined) {
    child.stdout.resume();
    child.stderr.resume();
    child.on('close', (code, signal) => say(exit || { id: r.id, exit: code, signal }));
    return;
  }
  say({ id: r.id, pid: child.pid });
  if (r.gated) {
    const gate = child.stdio[3];
    gate.on('error', () => {});
    gates.set(r.id, gate);
    child.on('exit', () => gates.delete(r.id));
  }
  const out = connect(socketPath);
  out.on('error', () => { try { process.kill(-child.pid, 'SIGKILL'); } catch {} });
  out.write(r.id + '\\n');
  let open = 2;
  const ended = () => { if (--open === 0) out.end(); };
  for (const stream of [child.stdout, child.stderr]) {
    stream.pipe(out, { end: false });
    stream.on('end', ended);
  }
  child.on('close', (code, signal) => say(exit || { id: r.id, exit: code, signal }));
};
let buffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  for (let at = buffer.indexOf('\\n'); at >= 0; at = buffer.indexOf('\\n')) {
    const line = buffer.slice(0, at);
    buffer = buffer.slice(at + 1);
    try { const m = JSON.parse(line); if ('go' in m) open(m); else start(m); } catch {}
  }
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
`;

/** The longest first line a connection may send: a step's id and its newline. */
const MAX_HEADER = 64;

class LaunchedStep extends EventEmitter implements StepProcess {
  pid: number | undefined = undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  /** The output connection arrived (or never will: the step did not start). */
  private outputDone = false;
  /** Its output connection has been taken: a second one naming it is refused. */
  connected = false;
  private exited = false;
  private closed = false;

  /** `forget` drops it from the launcher's table once closed (its output may arrive after its exit). */
  constructor(private readonly forget: () => void) {
    super();
    this.stdout.once('end', () => {
      this.outputDone = true;
      this.maybeClose();
    });
  }

  started(pid: number): void {
    this.pid = pid;
    this.emit('spawn');
  }

  failed(message: string): void {
    const error = Object.assign(new Error(message), { code: /ENOENT/.test(message) ? 'ENOENT' : undefined });
    this.emit('error', error);
  }

  ended(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exited) return;
    this.exited = true;
    this.exitCode = code;
    this.signalCode = signal;
    this.emit('exit', code, signal);
    // A step that never started sends no output: its streams end here.
    if (this.pid === undefined) this.stdout.end();
    this.maybeClose();
  }

  /** The launcher died: what it started is gone with it (its output pipes are broken). */
  lost(): void {
    if (!this.exited) this.ended(null, 'SIGKILL');
    if (!this.outputDone) this.stdout.end();
  }

  private maybeClose(): void {
    if (this.closed || !this.exited || !this.outputDone) return;
    this.closed = true;
    this.forget();
    this.stderr.end();
    this.emit('close', this.exitCode, this.signalCode);
  }
}

interface Running {
  readonly child: ChildProcess;
  readonly server: Server;
  readonly dir: string;
  /** Removes the socket's directory when this process exits with the launcher still running. */
  readonly onExit: () => void;
}

/** A launcher for this process (started on the first step, again after it died). */
export function createStepLauncher(): StepLauncher {
  let running: Running | undefined;
  const steps = new Map<string, LaunchedStep>();

  const onConnection = (socket: Socket) => {
    socket.on('error', () => undefined);
    let header = '';
    const onData = (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      const at = text.indexOf('\n');
      if (at < 0) {
        header += text;
        if (header.length > MAX_HEADER) socket.destroy();
        return;
      }
      header += text.slice(0, at);
      socket.off('data', onData);
      socket.pause();
      // The launcher says the pid on its stdout and connects here: either may be read first, so
      // the connection is taken for any step it was asked to start, once.
      const step = header.length <= MAX_HEADER ? steps.get(header) : undefined;
      if (!step || step.connected) {
        socket.destroy();
        return;
      }
      step.connected = true;
      const rest = chunk.subarray(Buffer.byteLength(text.slice(0, at + 1), 'latin1'));
      if (rest.length > 0) socket.unshift(rest);
      socket.pipe(step.stdout);
    };
    socket.on('data', onData);
  };

  const onAnswer = (line: string) => {
    let answer: { id?: unknown; pid?: unknown; error?: unknown; exit?: unknown; signal?: unknown };
    try {
      answer = JSON.parse(line);
    } catch {
      return;
    }
    const step = typeof answer.id === 'string' ? steps.get(answer.id) : undefined;
    if (!step) return;
    if (typeof answer.pid === 'number') step.started(answer.pid);
    else if (typeof answer.error === 'string') step.failed(answer.error);
    else if ('exit' in answer) {
      step.ended(typeof answer.exit === 'number' ? answer.exit : null, typeof answer.signal === 'string' ? (answer.signal as NodeJS.Signals) : null);
    }
  };

  const stop = (r: Running) => {
    if (running === r) running = undefined;
    process.off('exit', r.onExit);
    r.server.close();
    rmSync(r.dir, { recursive: true, force: true });
    for (const step of [...steps.values()]) step.lost();
    steps.clear();
  };

  const start = (): Running => {
    // mkdtemp makes the directory 0700: only this process's user may reach the socket.
    const dir = makeProcessTempDir('gyre-launcher-');
    const path = join(dir, 'output.sock');
    const server = createServer(onConnection);
    server.listen(path);
    server.unref();
    const child = spawn(process.execPath, ['-e', LAUNCHER, path], { stdio: ['pipe', 'pipe', 'ignore'], env: {}, cwd: '/', detached: true });
    // A process that ends with its launcher running (a server stopping) leaves no directory
    // behind in the temporary directory, one for each start, for every keeper's sweep to walk.
    const onExit = () => rmSync(dir, { recursive: true, force: true });
    process.once('exit', onExit);
    const r: Running = { child, server, dir, onExit };
    // The launcher never keeps this process alive; the steps' output does while they run.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    child.stdin!.on('error', () => undefined);
    let pending = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      pending += chunk;
      for (let at = pending.indexOf('\n'); at >= 0; at = pending.indexOf('\n')) {
        onAnswer(pending.slice(0, at));
        pending = pending.slice(at + 1);
      }
    });
    child.on('exit', () => stop(r));
    child.on('error', () => stop(r));
    return r;
  };

  return {
    launch(file, args, options) {
      running ??= start();
      const id = randomUUID();
      const step = new LaunchedStep(() => steps.delete(id));
      steps.set(id, step);
      const r = running;
      const request = { id, file, args, cwd: options.cwd, env: options.env, uid: options.uid, gid: options.gid, ...(options.gate ? { gated: true } : {}) };
      r.child.stdin!.write(JSON.stringify(request) + '\n');
      // Let go or stopped by the launcher that started it (a new one has no such step: it ended with the old).
      const say = (go: boolean) => void (running === r && r.child.stdin!.write(JSON.stringify({ id, go }) + '\n'));
      options.gate?.then(
        () => say(true),
        () => say(false),
      );
      return step;
    },
    warm() {
      running ??= start();
    },
    close() {
      if (!running) return;
      const r = running;
      r.child.stdin!.end();
      stop(r);
    },
  };
}

let shared: StepLauncher | undefined;

/** This process's launcher. */
export function stepLauncher(): StepLauncher {
  shared ??= createStepLauncher();
  return shared;
}
