import type { RequiredStatus } from '../plan';

/**
 * What every compiler pass shares: the shape of parsed config values, the element model (scopes
 * and the elements in them), the names the language reserves, and the structural bounds.
 */

export type Obj = Record<string, unknown>;

export const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
export const has = (o: Obj, k: string) => Object.prototype.hasOwnProperty.call(o, k);

export const NAME = /^[A-Za-z][A-Za-z0-9_-]{0,254}$/;

/** A name as an error message shows it: long ones cut (a hostile config's names can be megabytes). */
export function shown(name: string): string {
  return name.length > 80 ? `${name.slice(0, 60)}… (${name.length} characters)` : name;
}
export const ENV_VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const STATUSES: readonly RequiredStatus[] = ['success', 'failed', 'canceled', 'not_run', 'unauthorized', 'terminal'];
export const BUILTIN_STEPS = new Set([
  'run',
  'checkout',
  'setup_remote_docker',
  'add_ssh_keys',
  'save_cache',
  'restore_cache',
  'store_artifacts',
  'store_test_results',
  'persist_to_workspace',
  'attach_workspace',
  'deploy', // deprecated alias of run, still in real files
]);
export const WORKFLOW_JOB_KEYS = new Set(['requires', 'name', 'context', 'filters', 'matrix', 'type', 'pre-steps', 'post-steps', 'serial-group', 'override-with']);
export const EXECUTOR_KINDS = ['docker', 'machine', 'macos'] as const;
/** How deep commands may invoke commands (and orbs import orbs) before we call it a cycle. */
export const MAX_EXPANSION_DEPTH = 40;
/** Most jobs one workflow may expand to (matrix products grow fast). */
export const MAX_WORKFLOW_JOBS = 2000;
/** Most jobs the whole config may expand to (aliases can repeat a large workflow cheaply). */
export const MAX_TOTAL_JOBS = 5_000;
/** Most steps expanded in one compilation (commands fanning out into commands grow exponentially). */
export const MAX_TOTAL_STEPS = 10_000;

/** One namespace of reusable elements: the config itself, or one imported orb. */
export interface Scope {
  /** `config` or `orb circleci/node@5.0.2`. */
  readonly label: string;
  /** Path prefix of this scope's elements in errors (`` or `orbs.node.`). */
  readonly prefix: string;
  readonly inOrb: boolean;
  readonly commands: Obj;
  readonly jobs: Obj;
  readonly executors: Obj;
  readonly orbs: Map<string, Scope>;
  /** Aliases whose orb is not in the registry: their elements are not reported again one by one. */
  readonly missingOrbAliases: Set<string>;
}

export type ElementKind = 'commands' | 'jobs' | 'executors';

/** A command, job or executor found in a scope. */
export interface Element {
  readonly def: unknown;
  readonly scope: Scope;
  readonly path: string;
  readonly label: string;
}

/** A builtin step after expansion: its key and body, as in the processed config. */
export interface BuiltinStep {
  readonly key: string;
  readonly body: unknown;
  readonly path: string;
}

export function listOf(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map((x) => String(x));
  return [String(v)];
}

export function envMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(v)) {
    for (const item of v) {
      if (typeof item === 'string') {
        const eq = item.indexOf('=');
        if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
      } else if (isObj(item)) Object.assign(out, envMap(item));
    }
  } else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) out[k] = x === null || x === undefined ? '' : typeof x === 'object' ? JSON.stringify(x) : String(x);
  }
  return out;
}
