import { existsSync, readFileSync, statSync } from 'node:fs';
import type { ApiClient } from '../cli/client';
import { readCompileSettings } from '../settings';
import { compileConfig } from './compiler';
import { packOrbDirectory } from './orb-pack';
import { createDirectoryOrbSource } from './orb-registry';
import type { OrbSource } from './orb-source';
import type { ConfigProblem, TriggerContext } from './plan';

export interface CommandIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Where GYRE_COMPILE_MAX_BYTES, _MAX_NODES and _TIMEOUT_MS are read from. @default process.env */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

const CONFIG_USAGE = `usage:
  gyre config validate <file> [--orb-dir <dir>]
  gyre config process <file> [--pipeline-parameters <json>] [--orb-dir <dir>]
  gyre config plan <file> (--branch <b> | --tag <t>) [--pipeline-parameters <json>] [--orb-dir <dir>]

--orb-dir <dir> resolves orbs from <dir>/<ns>/<orb>@<x.y.z>.yml (packed) or <dir>/<ns>/<orb>@<x.y.z>/ (source tree).
`;

const ORB_USAGE = `usage:
  gyre orb import <file|dir> --name <ns>/<orb>@<x.y.z>
  gyre orb list
`;

function parseFlags(args: string[], known: string[]): { positional: string[]; flags: Record<string, string>; error?: string } {
  const positional: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (!known.includes(name)) return { positional, flags, error: `unknown option --${name}` };
      const value = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (value === undefined) return { positional, flags, error: `--${name} needs a value` };
      flags[name] = value;
    } else positional.push(a);
  }
  return { positional, flags };
}

export function formatProblem(file: string, p: ConfigProblem): string {
  const where = p.line ? `${file}:${p.line}:${p.column ?? 1}` : file;
  return `${where}: ${p.path ? `${p.path}: ` : ''}${p.message}`;
}

/** `gyre config validate|process|plan`. Exit 0 when the config is valid, 1 with errors on stderr. */
export async function runConfigCommand(args: string[], io: CommandIo): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === 'help' || verb === '--help' || verb === '-h') {
    io.stdout(CONFIG_USAGE);
    return 0;
  }
  if (!verb || !['validate', 'process', 'plan'].includes(verb)) {
    io.stderr(`${verb ? `unknown command: config ${verb}\n` : ''}${CONFIG_USAGE}`);
    return 2;
  }
  const { positional, flags, error } = parseFlags(rest, ['pipeline-parameters', 'branch', 'tag', 'orb-dir']);
  if (error || positional.length !== 1) {
    io.stderr(`${error ?? `config ${verb} takes one file`}\n${CONFIG_USAGE}`);
    return 2;
  }
  const file = positional[0];
  if (!existsSync(file) || !statSync(file).isFile()) {
    io.stderr(`${file}: no such file\n`);
    return 1;
  }
  let parameters: Record<string, string | number | boolean> | undefined;
  if (flags['pipeline-parameters'] !== undefined) {
    try {
      const parsed: unknown = JSON.parse(flags['pipeline-parameters']);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
      parameters = parsed as Record<string, string | number | boolean>;
    } catch (e) {
      io.stderr(`--pipeline-parameters must be a JSON object ({"name": value}): ${(e as Error).message}\n`);
      return 2;
    }
  }
  if (verb === 'plan' && (flags.branch === undefined) === (flags.tag === undefined)) {
    io.stderr(`config plan needs exactly one of --branch or --tag\n${CONFIG_USAGE}`);
    return 2;
  }
  if (flags['orb-dir'] !== undefined && !existsSync(flags['orb-dir'])) {
    io.stderr(`--orb-dir ${flags['orb-dir']}: no such directory\n`);
    return 2;
  }
  const orbs: OrbSource | undefined = flags['orb-dir'] ? createDirectoryOrbSource(flags['orb-dir'], packOrbDirectory) : undefined;
  const trigger: TriggerContext = {
    ...(flags.tag !== undefined ? { tag: flags.tag } : { branch: flags.branch ?? 'main' }),
    ...(parameters ? { parameters } : {}),
  };
  // Compiled in this process: the expansion budgets apply, the worker's memory limit does not.
  const { maxBytes, maxNodes, timeoutMs } = readCompileSettings(io.env ?? process.env);
  const result = await compileConfig(readFileSync(file, 'utf8'), { trigger, budgets: { maxBytes, maxNodes, timeoutMs }, ...(orbs ? { orbs } : {}) });
  if (!result.ok) {
    for (const p of result.problems) io.stderr(`${formatProblem(file, p)}\n`);
    io.stderr(`${file}: ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}; the config is not valid\n`);
    return 1;
  }
  if (verb === 'validate') io.stdout(`${file} is valid.\n`);
  else if (verb === 'process') io.stdout(result.compiledYaml);
  else {
    const out = {
      workflows: result.plan.workflows.map((w) => ({
        name: w.name,
        jobs: w.jobs.map((j) => ({ name: j.name, requires: j.requires.map((r) => r.job), type: j.type === 'approval' ? 'approval' : 'build' })),
      })),
    };
    io.stdout(`${JSON.stringify(out, null, 2)}\n`);
  }
  return 0;
}

/** `gyre orb import|list`, through the server's API. */
export async function runOrbCommand(args: string[], io: CommandIo, client: ApiClient): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === 'list') {
    const res = await client.request<{ items: { name: string; version: string; created_at: string }[] }>('GET', '/api/v2/orbs');
    if (res.items.length === 0) io.stdout('No orbs imported. Import one with: gyre orb import <file|dir> --name <ns>/<orb>@<x.y.z>\n');
    for (const o of res.items) io.stdout(`${o.name}@${o.version}\t${o.created_at}\n`);
    return 0;
  }
  if (verb === 'help' || verb === '--help' || verb === '-h') {
    io.stdout(ORB_USAGE);
    return 0;
  }
  if (verb !== 'import') {
    io.stderr(`${verb ? `unknown command: orb ${verb}\n` : ''}${ORB_USAGE}`);
    return 2;
  }
  const { positional, flags, error } = parseFlags(rest, ['name']);
  if (error || positional.length !== 1 || !flags.name) {
    io.stderr(`${error ?? 'orb import takes one file or directory and --name'}\n${ORB_USAGE}`);
    return 2;
  }
  const m = /^([^@\s]+)@(\d+\.\d+\.\d+)$/.exec(flags.name);
  if (!m) {
    io.stderr(`--name ${flags.name} must be <ns>/<orb>@<x.y.z>\n`);
    return 2;
  }
  const target = positional[0];
  if (!existsSync(target)) {
    io.stderr(`${target}: no such file or directory\n`);
    return 1;
  }
  let source: string;
  try {
    source = statSync(target).isDirectory() ? packOrbDirectory(target) : readFileSync(target, 'utf8');
  } catch (e) {
    io.stderr(`${target}: ${(e as Error).message}\n`);
    return 1;
  }
  await client.request('POST', '/api/v2/orbs', { name: m[1], version: m[2], source });
  io.stdout(`Imported ${m[1]}@${m[2]}.\n`);
  return 0;
}
