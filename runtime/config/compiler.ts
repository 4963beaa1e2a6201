import { BudgetExceededError, DEFAULT_COMPILE_BUDGETS, type CompileBudgets } from './compile/budget';
import { Compilation } from './compile/compilation';
import { isObj, type Obj } from './compile/model';
import { setupPipeline } from './compile/parameters';
import { buildScope } from './compile/scope';
import { planWorkflows } from './compile/workflows';
import { emitYaml } from './emit-yaml';
import { guardedSoFar, unguard } from './substitute';
import type { OrbSource } from './orb-source';
import type { CompileResult, ConfigProblem, Plan, TriggerContext } from './plan';
import { DEFAULT_LIMITS, loadYaml, type LoadLimits, type Positions } from './yaml-loader';

export type { OrbSource } from './orb-source';
export { DEFAULT_COMPILE_BUDGETS, type CompileBudgets } from './compile/budget';
export { parseDuration } from './compile/steps';

export interface CompileOptions {
  readonly trigger: TriggerContext;
  readonly orbs?: OrbSource;
  /** Overrides of the input bounds (tests use smaller ones). */
  readonly limits?: Partial<LoadLimits>;
  /** Overrides of the expansion budgets (expanded size, nodes, time); DEFAULT_COMPILE_BUDGETS otherwise. */
  readonly budgets?: Partial<CompileBudgets>;
  /**
   * Parsed orb documents kept between compilations (orb versions are immutable, so a long-lived
   * caller such as the conductor can keep one; see createOrbDocumentCache). Without it every
   * compilation parses the orbs it imports.
   */
  readonly orbCache?: OrbDocumentCache;
}

export interface CachedOrbDocument {
  readonly value: unknown;
  readonly positions: Positions;
}

export interface OrbDocumentCache {
  get(source: string): CachedOrbDocument | undefined;
  set(source: string, doc: CachedOrbDocument): void;
}

/** A small LRU of parsed orb documents, keyed by the packed orb source. */
export function createOrbDocumentCache(maxEntries = 100): OrbDocumentCache {
  const entries = new Map<string, CachedOrbDocument>();
  return {
    get(source) {
      const hit = entries.get(source);
      if (hit) {
        entries.delete(source);
        entries.set(source, hit);
      }
      return hit;
    },
    set(source, doc) {
      entries.set(source, doc);
      if (entries.size > maxEntries) entries.delete(entries.keys().next().value as string);
    },
  };
}

/**
 * Compiles a config for one trigger into a plan, in passes (see ./compile/): the document is loaded
 * (bounded), pipeline parameters and values are substituted, the scope pass builds the config's
 * elements and imports its orbs, and the workflows pass expands jobs (executors, steps) and decides
 * which run. Every problem found is reported together.
 */
export async function compileConfig(source: string, options: CompileOptions): Promise<CompileResult> {
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const c = new Compilation(options, limits, { ...DEFAULT_COMPILE_BUDGETS, ...options.budgets });
  try {
    return await compile(c, source);
  } catch (error) {
    if (!(error instanceof BudgetExceededError)) throw error;
    // The budget comes first; what was found before it was crossed follows.
    const crossed = { message: error.message, ...(error.path ? { path: error.path } : {}) };
    return { ok: false, problems: [crossed, ...distinct(c.problems)].slice(0, 500) };
  }
}

async function compile(c: Compilation, source: string): Promise<CompileResult> {
  const loaded = loadYaml(source, c.positions, c.limits);
  for (const p of loaded.problems) c.problems.push({ message: p.message, ...(p.line ? { line: p.line, column: p.column } : {}) });
  if (loaded.problems.length) return { ok: false, problems: c.problems };
  if (!isObj(loaded.value)) return { ok: false, problems: [{ message: 'a config is a YAML map with version, jobs and workflows' }] };
  const original = loaded.value;

  const version = original.version;
  if (version !== undefined && !['2', '2.0', '2.1'].includes(String(version))) {
    c.report(`version ${String(version)} is not supported; use 2.1 (or 2 / 2.0)`, 'version', original, 'version');
  }
  if (original.setup !== undefined && typeof original.setup !== 'boolean') c.report('setup must be true or false', 'setup', original, 'setup');
  setupPipeline(c, original);

  // Pipeline values and parameters first (they may appear in the orbs stanza); inline orbs keep theirs.
  const guardedBefore = guardedSoFar();
  const root = c.subst(original, { pipeline: c.pipelineLookup }, '', (p) => /^orbs\.[^.[]+$/.test(p)) as Obj;
  const scope = await buildScope(c, root, 'config', '', false, 0);
  const planned = planWorkflows(c, root, scope);
  if (!planned) return { ok: false, problems: c.problems };

  if (c.problems.length) return { ok: false, problems: distinct(c.problems) };
  // A pipeline value that read as a reference was guarded from the later passes: given back now.
  const done = guardedSoFar() === guardedBefore ? <T>(v: T) => v : unguard;
  const plan: Plan = done({ setup: root.setup === true, workflows: planned.plans });
  const processed: Obj = done({ version: 2, ...(root.setup === true ? { setup: true } : {}), jobs: planned.processedJobs, workflows: planned.processedWorkflows });
  // Rendered on first read: the conductor needs the plan at once, the text only when it stores it.
  let compiledYaml: string | undefined;
  return {
    ok: true,
    plan,
    get compiledYaml(): string {
      compiledYaml ??= `${emitYaml(processed)}\n# Original config.yml file:\n${source
        .split('\n')
        .map((l) => `# ${l}`.trimEnd())
        .join('\n')}\n`;
      return compiledYaml;
    },
  };
}

/** The same mistake reached through several matrix instances is reported once. */
function distinct(problems: readonly ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = `${p.line}:${p.column}:${p.path}:${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
