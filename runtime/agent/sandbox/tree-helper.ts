import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { InputError, NotFoundError } from '../../domain/errors';
import { UnsafePathError } from '../../output/tar';
import { archiveLocal, extractLocal } from '../file-transfer';

/**
 * File steps read and write the build's tree as the build: a helper process with the build's
 * identity (its uid, or inside its sandbox) runs `archiveLocal` / `extractLocal` and streams the
 * tar through a pipe. A symlink the build swaps in between a check and a read can then only lead
 * where the build itself may go, never to what the agent may read (the server's data directory).
 *
 * The helper: `bin/gyre-tree-helper.js <archive|extract> <request JSON>`. The request may carry
 * `uid`: the helper is started as root, loads its code, then gives up root for that uid before it
 * touches the tree (the build uid may not be able to read Gyre's code). Answers go to fd 3 as JSON
 * lines: `archive` writes `{"missing":[…]}` and then the tar to stdout; `extract` reads the tar
 * from stdin and writes `{"entries":n,"bytes":n}`. A failure is `{"error":{name,message,…}}` and
 * exit code 1. Nothing the helper says is trusted beyond what the build could have said itself.
 */
export interface HelperRequest {
  readonly uid?: number;
  readonly root?: string;
  readonly patterns?: readonly string[];
  readonly dest?: string;
  readonly maxBytes?: number;
}

interface SerializedError {
  readonly name: string;
  readonly message: string;
  readonly kind?: string;
  readonly id?: string;
  readonly field?: string;
}

const serialize = (error: unknown): SerializedError => {
  const e = error as Error & { kind?: string; id?: string; field?: string };
  return { name: e?.name ?? 'Error', message: String(e?.message ?? error), kind: e?.kind, id: e?.id, field: e?.field };
};

/** The error the helper reported, as the class the agent's callers check for. */
function rebuild(error: SerializedError): Error {
  if (error.name === 'NotFoundError' && error.kind && error.id !== undefined) return new NotFoundError(error.kind, error.id);
  if (error.name === 'UnsafePathError') {
    const e = new UnsafePathError('', '');
    e.message = error.message;
    return e;
  }
  if (error.name === 'InputError') return new InputError(error.message, error.field);
  return new Error(error.message);
}

/** The helper's entry point (in the child). */
export async function helperMain(argv: readonly string[]): Promise<void> {
  const answer = (value: unknown) => writeSync(3, `${JSON.stringify(value)}\n`);
  try {
    const [op, json] = argv;
    const request = JSON.parse(json ?? '{}') as HelperRequest;
    if (request.uid !== undefined) {
      // Root only to start: the code is loaded, now become the build.
      process.setgroups?.([]);
      process.setgid?.(request.uid);
      process.setuid?.(request.uid);
      if (process.getuid?.() !== request.uid || process.getgid?.() !== request.uid) throw new Error(`could not become uid ${request.uid}`);
    }
    process.chdir('/');
    if (op === 'archive') {
      const { tar, missing } = await archiveLocal(String(request.root), request.patterns ?? []);
      answer({ missing });
      await pipeline(Readable.from(tar), process.stdout);
    } else if (op === 'extract') {
      const result = await extractLocal(String(request.dest), process.stdin, { maxBytes: request.maxBytes });
      answer(result);
    } else {
      throw new Error(`unknown operation '${op}' (allowed: archive, extract)`);
    }
    process.exitCode = 0;
  } catch (error) {
    answer({ error: serialize(error) });
    process.exitCode = 1;
  }
}

/** Starts the helper with these arguments in the build's identity; fds 0–3 must be pipes. */
export type HelperLauncher = (args: readonly string[]) => ChildProcess;

/** Reads JSON lines from a stream; each call to `next` resolves with the next one (undefined at its end). */
function jsonLines(stream: NodeJS.ReadableStream) {
  let buffered = '';
  let ended = false;
  let waiting: ((value: any) => void) | undefined;
  const lines: any[] = [];
  const deliver = () => {
    if (!waiting) return;
    if (lines.length) {
      const w = waiting;
      waiting = undefined;
      w(lines.shift());
    } else if (ended) {
      const w = waiting;
      waiting = undefined;
      w(undefined);
    }
  };
  stream.on('data', (d: Buffer) => {
    buffered += d.toString('utf8');
    for (let i; (i = buffered.indexOf('\n')) >= 0; buffered = buffered.slice(i + 1)) {
      try {
        lines.push(JSON.parse(buffered.slice(0, i)));
      } catch {
        lines.push({ error: { name: 'Error', message: `the file helper answered something that is not JSON: ${buffered.slice(0, Math.min(i, 200))}` } });
      }
    }
    deliver();
  });
  stream.on('end', () => {
    ended = true;
    deliver();
  });
  stream.on('error', () => {
    ended = true;
    deliver();
  });
  return { next: () => new Promise<any>((resolve) => ((waiting = resolve), deliver())) };
}

function stderrOf(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (text.length < 4096) text += d.toString('utf8');
  });
  return () => text.trim();
}

/** `Executor.archive`, run by the helper in the build's identity. */
export async function archiveAs(launch: HelperLauncher, request: HelperRequest): Promise<{ tar: AsyncIterable<Uint8Array>; missing: string[] }> {
  const child = launch(['archive', JSON.stringify(request)]);
  const stderr = stderrOf(child);
  const exited = once(child, 'close').then(([code, signal]) => ({ code: code as number | null, signal: signal as string | null }));
  const control = jsonLines(child.stdio[3] as NodeJS.ReadableStream);
  const first = await control.next();
  if (!first || first.error) {
    child.stdout?.resume();
    const { code, signal } = await exited;
    throw first?.error ? rebuild(first.error) : new Error(`the file helper ended (${signal ?? `exit ${code}`}) before it answered: ${stderr()}`);
  }
  async function* tar(): AsyncIterable<Uint8Array> {
    let finished = false;
    try {
      for await (const chunk of child.stdout!) yield chunk as Buffer;
      const { code, signal } = await exited;
      if (code !== 0) {
        const last = await control.next();
        throw last?.error ? rebuild(last.error) : new Error(`the file helper failed (${signal ?? `exit ${code}`}): ${stderr()}`);
      }
      finished = true;
    } finally {
      if (!finished && child.exitCode === null) child.kill('SIGKILL');
    }
  }
  return { tar: tar(), missing: Array.isArray(first.missing) ? first.missing.map(String) : [] };
}

/** `Executor.extract`, run by the helper in the build's identity. */
export async function extractAs(launch: HelperLauncher, request: HelperRequest, source: AsyncIterable<Uint8Array>): Promise<{ entries: number; bytes: number }> {
  const child = launch(['extract', JSON.stringify(request)]);
  const stderr = stderrOf(child);
  const exited = once(child, 'close').then(([code, signal]) => ({ code: code as number | null, signal: signal as string | null }));
  const control = jsonLines(child.stdio[3] as NodeJS.ReadableStream);
  child.stdout?.resume();
  // The helper stops reading at the first entry it refuses: its answer says why, not the broken pipe.
  const feeding = pipeline(Readable.from(source), child.stdin!).catch((error: Error) => error);
  const answer = await control.next();
  const fed = await feeding;
  const { code, signal } = await exited;
  // A source that failed is the cause (the helper then saw a cut archive); a pipe the helper
  // closed is not news: its answer says why it stopped reading.
  const brokenPipe = fed instanceof Error && ['EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED', 'ECONNRESET'].includes((fed as NodeJS.ErrnoException).code ?? '');
  if (fed instanceof Error && !brokenPipe) throw fed;
  if (answer?.error) throw rebuild(answer.error);
  if (!answer || code !== 0 || fed instanceof Error) throw new Error(`the file helper failed (${signal ?? `exit ${code}`}): ${stderr()}`);
  return { entries: Number(answer.entries) || 0, bytes: Number(answer.bytes) || 0 };
}
