import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { AgentApiClient } from '../agent/agent-api-client';
import { globPatternToRegExp } from '../output/file-sets';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { CliIo } from './main';
import { UsageError } from './main';

/**
 * Test splitting inside a job, as CircleCI's `circleci tests` does:
 * - `gyre tests glob <pattern>…` prints the files matching any pattern (`*`, `**`, `?`, `{a,b}`);
 * - `gyre tests split [--split-by=name|filesize|timings] [file…]` reads file names (arguments or
 *   stdin) and prints this node's share, using CIRCLE_NODE_INDEX / CIRCLE_NODE_TOTAL.
 * Timings come from `--timings-file` (JSON `{ "file": seconds }`) or from Gyre's stored test results
 * (GYRE_URL + GYRE_TASK_TOKEN, when the server offers them); without timings it splits by name.
 */
export async function testsCommand(args: string[], io: CliIo, stdin: () => Promise<string> = readStdin): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'glob') {
    if (rest.length === 0) throw new UsageError('tests glob needs at least one pattern');
    for (const file of globFiles(rest, process.cwd())) io.stdout(`${file}\n`);
    return 0;
  }
  if (sub !== 'split') throw new UsageError(sub ? `unknown tests command '${sub}' (allowed: glob, split)` : 'tests needs a subcommand: glob, split');
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: { 'split-by': { type: 'string' }, index: { type: 'string' }, total: { type: 'string' }, 'timings-file': { type: 'string' } },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  const splitBy = (values['split-by'] as string | undefined) ?? 'name';
  if (!['name', 'filesize', 'timings'].includes(splitBy)) throw new UsageError(`--split-by=${splitBy} is not one of name, filesize, timings`);
  const index = Number(values.index ?? io.env.CIRCLE_NODE_INDEX ?? 0);
  const total = Number(values.total ?? io.env.CIRCLE_NODE_TOTAL ?? 1);
  if (!Number.isInteger(total) || total < 1 || !Number.isInteger(index) || index < 0 || index >= total) {
    throw new UsageError(`node index ${index} of ${total} is not valid (CIRCLE_NODE_INDEX must be below CIRCLE_NODE_TOTAL)`);
  }
  const files = positionals.length > 0 ? positionals : (await stdin()).split(/\s+/).filter(Boolean);
  let weights: Map<string, number> | undefined;
  if (splitBy === 'filesize') weights = new Map(files.map((f) => [f, existsSync(f) ? statSync(f).size : 0]));
  if (splitBy === 'timings') {
    weights = await loadTimings(values['timings-file'] as string | undefined, io);
    if (!weights || weights.size === 0) {
      io.stderr('gyre tests split: no timing data found; splitting by name\n');
      weights = undefined;
    } else {
      // Files with no recorded time weigh as much as the average known file.
      const known = [...weights.values()];
      const average = known.reduce((a, b) => a + b, 0) / known.length;
      weights = new Map(files.map((f) => [f, weights!.get(f) ?? average]));
    }
  }
  for (const file of splitFiles(files, index, total, weights)) io.stdout(`${file}\n`);
  return 0;
}

/** This node's share: by name, every total-th file of the sorted list; by weight, greedy bins. */
export function splitFiles(files: readonly string[], index: number, total: number, weights?: ReadonlyMap<string, number>): string[] {
  const unique = [...new Set(files)].sort();
  if (!weights) return unique.filter((_, i) => i % total === index);
  const bins = Array.from({ length: total }, () => ({ load: 0, files: [] as string[] }));
  const heaviestFirst = [...unique].sort((a, b) => (weights.get(b) ?? 0) - (weights.get(a) ?? 0) || a.localeCompare(b));
  for (const file of heaviestFirst) {
    let lightest = bins[0];
    for (const bin of bins) if (bin.load < lightest.load) lightest = bin;
    lightest.files.push(file);
    lightest.load += weights.get(file) ?? 0;
  }
  return bins[index].files.sort();
}

async function loadTimings(file: string | undefined, io: CliIo): Promise<Map<string, number> | undefined> {
  if (file) {
    const data = JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
    return new Map(Object.entries(data).map(([k, v]) => [k, Number(v)]));
  }
  const url = io.env.GYRE_URL;
  const token = io.env.GYRE_TASK_TOKEN;
  if (!url || !token) return undefined;
  try {
    const body = await new AgentApiClient({ url, token }).testTimings();
    return new Map(body.items.map((t) => [t.file, t.seconds]));
  } catch {
    return undefined;
  }
}

/** Files under `root` matching any pattern, relative to root, sorted. */
export function globFiles(patterns: readonly string[], root: string): string[] {
  const regexes = patterns.flatMap(expandBraces).map(globToRegExp);
  const out: string[] = [];
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.name === '.git' || entry.name === 'node_modules') continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else {
        const rel = relative(root, full);
        if (regexes.some((r) => r.test(rel))) out.push(rel);
      }
    }
  };
  walk(resolve(root));
  return out.sort();
}

function expandBraces(pattern: string): string[] {
  const m = /\{([^{}]*)\}/.exec(pattern);
  if (!m) return [pattern];
  return m[1].split(',').flatMap((alt) => expandBraces(pattern.slice(0, m.index) + alt + pattern.slice(m.index + m[0].length)));
}

function globToRegExp(pattern: string): RegExp {
  return globPatternToRegExp(pattern.replace(/^\.\//, ''));
}

function readStdin(): Promise<string> {
  return new Promise((resolve) => {
    if (process.stdin.isTTY) return resolve('');
    let data = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (d) => (data += d));
    process.stdin.on('end', () => resolve(data));
  });
}
