import type { NameLookup } from '../logic';
import type { ConfigProblem } from '../plan';
import { substitute, type SubstEnv } from '../substitute';
import { Positions, type LoadLimits } from '../yaml-loader';
import type { CompileOptions } from '../compiler';
import { Budget, type CompileBudgets } from './budget';
import { resolveExecutor } from './executors';
import type { Obj, Scope } from './model';
import { expandSteps, processedStep } from './steps';

/**
 * The state of one compilation, shared by its passes (scope → executors → steps → jobs →
 * workflows): the problems found so far, where values came from, the pipeline values, and the
 * counters the bounds are checked against. Each pass is a set of functions taking it first.
 */
export class Compilation {
  readonly problems: ConfigProblem[] = [];
  readonly positions = new Positions();
  /** Executor bodies already resolved in their caller's scope (an executor argument). */
  readonly resolvedExecutors = new WeakSet<object>();
  /** Step lists already expanded in their caller's scope (a steps argument). */
  readonly expandedStepArgs = new WeakSet<object>();
  /** Imported orbs by `name@version`: each is built once per compilation. */
  readonly orbScopes = new Map<string, Scope>();
  /** Orb references (`ns/orb@version`) the registry does not have, in the order met. */
  readonly missingOrbs = new Set<string>();
  pipelineLookup: NameLookup = () => undefined;
  totalJobs = 0;
  totalSteps = 0;
  stepBudgetReported = false;

  /** What expansion has produced so far, against the compilation's budgets. */
  readonly budget: Budget;

  constructor(
    readonly options: CompileOptions,
    readonly limits: LoadLimits,
    budgets: CompileBudgets,
  ) {
    this.budget = new Budget(budgets);
  }

  report(message: string, path?: string, container?: unknown, key?: string | number): void {
    if (this.problems.length >= 500) return;
    const pos = container !== undefined ? this.positions.of(container, key) : undefined;
    this.problems.push({ message, ...(path ? { path } : {}), ...(pos ? { line: pos.line, column: pos.column } : {}) });
  }

  readonly reporter = (message: string, path: string, container?: unknown, key?: string | number) => this.report(message, path, container, key);

  /** The lookup used inside orbs: pipeline values, but not pipeline parameters. */
  readonly orbPipelineLookup: NameLookup = (name) => (name.startsWith('pipeline.parameters.') ? undefined : this.pipelineLookup(name));

  envFor(scope: Scope, params?: Map<string, unknown>, label?: string): SubstEnv {
    return { params: params ?? new Map(), label, pipeline: scope.inOrb ? this.orbPipelineLookup : this.pipelineLookup, inOrb: scope.inOrb };
  }

  /** Substitutes references through a value, reporting problems against this compilation. */
  subst(value: unknown, env: SubstEnv, path: string, skip?: (path: string) => boolean): unknown {
    return substitute(value, env, path, this.reporter, this.positions, skip, this.budget);
  }

  // Parameters bind arguments in the caller's scope: a steps argument is expanded, and an executor
  // argument resolved, where it is written. That recursion runs through these two methods so that
  // the parameter pass does not import the step and executor passes (which import it).

  expandStepsArg(steps: unknown[], caller: Scope, path: string, depth: number): unknown[] {
    const out = expandSteps(this, steps, caller, path, depth + 1, this.envFor(caller)).map((s) => processedStep(s));
    this.expandedStepArgs.add(out);
    return out;
  }

  resolveExecutorArg(value: string | Obj, caller: Scope, path: string, depth: number): Obj {
    const body = resolveExecutor(this, value, caller, path, undefined, undefined, depth + 1);
    this.resolvedExecutors.add(body);
    return body;
  }
}
