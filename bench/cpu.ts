import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time of a system under a benchmark, by part, read from /proc (Linux): what a pipeline costs
 * the machine, and so how many a second its cores allow. Values are cumulative CPU seconds (user +
 * system); a benchmark reads them before and after a stretch of work and takes the difference.
 *
 * A process's time is its own plus that of the children it reaped (`cutime`, `cstime`), so a tree
 * read as the sum over its live processes counts each process that ran in it once, finished or not.
 */

/** Clock ticks a second in /proc's times (USER_HZ, 100 on every Linux architecture Node runs on). */
const TICKS = 100;

interface ProcessTimes {
  readonly pid: number;
  readonly ppid: number;
  /** Its own CPU seconds. */
  readonly own: number;
  /** The CPU seconds of the children it has reaped. */
  readonly children: number;
  readonly cmdline: string;
}

function processes(): ProcessTimes[] {
  const all: ProcessTimes[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The fields after the command name, which is in parentheses and may hold spaces.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      all.push({ pid: Number(entry), ppid: Number(f[1]), own: (Number(f[11]) + Number(f[12])) / TICKS, children: (Number(f[13]) + Number(f[14])) / TICKS, cmdline });
    } catch {
      /* it ended while being read */
    }
  }
  return all;
}

/** How a process's time is counted: its own time and its reaped children's, each to a part (or left out). */
export type Classify = (p: { pid: number; cmdline: string }) => { own?: string; children?: string };

/** CPU seconds of each root and its live descendants, by part. */
export function treeCpu(roots: readonly number[], classify: Classify, all = processes()): Record<string, number> {
  const byParent = new Map<number, ProcessTimes[]>();
  for (const p of all) byParent.set(p.ppid, [...(byParent.get(p.ppid) ?? []), p]);
  const parts: Record<string, number> = {};
  const add = (part: string | undefined, seconds: number) => {
    if (part) parts[part] = (parts[part] ?? 0) + seconds;
  };
  const visit = (p: ProcessTimes) => {
    const c = classify(p);
    add(c.own, p.own);
    add(c.children, p.children);
    for (const child of byParent.get(p.pid) ?? []) visit(child);
  };
  for (const top of all.filter((p) => roots.includes(p.pid))) visit(top);
  return parts;
}

/** CPU seconds of each PostgreSQL backend serving `database` (their titles name it), by pid. */
export function databaseCpu(database: string, all = processes()): Map<number, number> {
  // `postgres: [cluster name: ]user database address state`
  const title = new RegExp(`^postgres: (?:\\S+: )?\\S+ ${database.replace(/\W/g, '\\$&')} `);
  return new Map(all.filter((p) => title.test(p.cmdline)).map((p) => [p.pid, p.own]));
}

/** One reading of a system's parts; `cpuPer` takes the difference of two. */
export interface CpuReading {
  readonly parts: Record<string, number>;
  /** The database's backends by pid: one that ends is not reaped by anything in the tree, so each is counted by its own difference. */
  readonly backends?: Map<number, number>;
}

/** Reads the trees of `roots` and, when named, the backends of `database`. */
export function readCpu(roots: readonly number[], classify: Classify, database?: string): CpuReading {
  const all = processes();
  return { parts: treeCpu(roots, classify, all), ...(database !== undefined ? { backends: databaseCpu(database, all) } : {}) };
}

/**
 * `after - before`, part by part, in milliseconds per `n` units of work. A backend that ended in
 * between is left out (its last stretch is lost: pools keep their connections while busy).
 */
export function cpuPer(before: CpuReading, after: CpuReading, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of new Set([...Object.keys(before.parts), ...Object.keys(after.parts)])) out[part] = (((after.parts[part] ?? 0) - (before.parts[part] ?? 0)) * 1000) / n;
  if (after.backends) {
    let seconds = 0;
    for (const [pid, s] of after.backends) seconds += s - (before.backends?.get(pid) ?? 0);
    out.PostgreSQL = (seconds * 1000) / n;
  }
  return out;
}
