import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTarWriter } from '../../output/tar';

/**
 * Gyre's directory inside every job (`GYRE_JOB_DIR`): the in-job CLI (`bin/circleci`,
 * `bin/circleci-agent`, a POSIX sh script, so images without Node.js or glibc have it too), the
 * test timings of the job's last successful run (`timings`), and the marker `circleci-agent step
 * halt` leaves (`halt`). The agent writes it before the first step; `bin` goes first on PATH.
 */
export interface JobFile {
  /** Relative to the job directory, e.g. `bin/circleci`. */
  readonly path: string;
  readonly mode: number;
  readonly content: Uint8Array;
}

/** The marker `step halt` leaves: the agent runs no step after the one that made it. */
export const HALT_MARKER = 'halt';

/** A test of an earlier run, as the agent gets it for `tests split --split-by=timings`. */
export interface TestTiming {
  readonly file: string;
  readonly classname: string;
  readonly name: string;
  /** Seconds. */
  readonly seconds: number;
}

const SCRIPT_PATH = join(__dirname, 'circleci.sh');
let script: Uint8Array | undefined;

/** The in-job CLI's script (read once). */
export function jobCliScript(): Uint8Array {
  script ??= readFileSync(SCRIPT_PATH);
  return script;
}

/**
 * The timings file: a line per test, `file<TAB>classname<TAB>name<TAB>seconds`. Tabs, newlines and
 * other control characters in names become spaces: names come from a build's own report files.
 */
export function timingsText(timings: readonly TestTiming[]): string {
  const clean = (s: string) => String(s ?? '').replace(/[\u0000-\u001f\u007f]/g, ' ');
  let out = '';
  for (const t of timings) {
    const seconds = Number(t.seconds);
    if (!Number.isFinite(seconds) || seconds < 0) continue;
    const file = clean(t.file);
    const classname = clean(t.classname);
    const name = clean(t.name);
    if (!file && !classname && !name) continue;
    out += `${file}\t${classname}\t${name}\t${seconds}\n`;
  }
  return out;
}

/** What the agent writes into a job's directory. */
export function jobFiles(timings: readonly TestTiming[]): JobFile[] {
  const cli = jobCliScript();
  return [
    { path: 'bin/circleci', mode: 0o755, content: cli },
    { path: 'bin/circleci-agent', mode: 0o755, content: cli },
    { path: 'timings', mode: 0o644, content: Buffer.from(timingsText(timings)) },
  ];
}

/**
 * The files as a tar stream, each under `prefix` (`''` or e.g. `.gyre-job/`), with directory
 * entries: the job directory itself `dirMode` (writable by whichever user the job runs as, for
 * the halt marker), `bin` 0755.
 */
export function jobFilesTar(files: readonly JobFile[], options: { prefix?: string; dirMode?: number } = {}): AsyncIterable<Uint8Array> {
  const prefix = options.prefix ?? '';
  const writer = createTarWriter();
  const mtime = Math.floor(Date.now() / 1000);
  void (async () => {
    try {
      if (prefix) await writer.add({ name: prefix.replace(/\/+$/, ''), type: 'directory', size: 0, mode: options.dirMode ?? 0o755, mtime });
      const dirs = [...new Set(files.map((f) => f.path.split('/').slice(0, -1).join('/')).filter(Boolean))].sort();
      for (const dir of dirs) await writer.add({ name: `${prefix}${dir}`, type: 'directory', size: 0, mode: 0o755, mtime });
      for (const file of files) await writer.add({ name: `${prefix}${file.path}`, type: 'file', size: file.content.byteLength, mode: file.mode, mtime }, file.content);
      await writer.end();
    } catch (error) {
      writer.fail(error as Error);
    }
  })();
  return writer.tar;
}
