/**
 * The budgets of one compilation: how much text and how many nodes expanding the config may
 * produce, and for how long it may run. The structural bounds (nesting, aliases, jobs, steps) count
 * elements; these count what the elements expand to, so a small config whose commands pass a
 * parameter on doubled (`x: "<< parameters.x >><< parameters.x >>"`, 18 levels deep: 262 MB from
 * 3 KB) is refused while it grows, long before it costs real memory or time.
 *
 * The counters are checked as they grow: substitution charges each piece of text before it is
 * appended, and each step, job and workflow entry placed into the expanded config is measured
 * (strings and nodes) before later passes copy or render it. A budget crossed throws
 * BudgetExceededError, which compileConfig turns into a compile error naming the budget.
 */

export interface CompileBudgets {
  /**
   * Characters (bytes, for ASCII text) expansion may produce: text written by parameter
   * substitution, plus the strings of every step, job and workflow entry placed in the expanded
   * config (a value placed twice counts twice). Setting: GYRE_COMPILE_MAX_BYTES.
   */
  readonly maxBytes: number;
  /** Maps, lists and scalars placed in the expanded config. Setting: GYRE_COMPILE_MAX_NODES. */
  readonly maxNodes: number;
  /** Wall-clock time one compilation may take, in milliseconds. Setting: GYRE_COMPILE_TIMEOUT_MS. */
  readonly timeoutMs: number;
}

export const DEFAULT_COMPILE_BUDGETS: CompileBudgets = { maxBytes: 16 * 1024 * 1024, maxNodes: 1_000_000, timeoutMs: 10_000 };

/** The setting each budget is read from, named in the errors so an operator knows what to raise. */
export const BUDGET_SETTINGS = {
  bytes: 'GYRE_COMPILE_MAX_BYTES',
  nodes: 'GYRE_COMPILE_MAX_NODES',
  time: 'GYRE_COMPILE_TIMEOUT_MS',
  memory: 'GYRE_COMPILE_MEMORY_MB',
} as const;

export type BudgetName = keyof typeof BUDGET_SETTINGS;

/** `16 MiB`, `512 KiB`, `1000 bytes`. */
export function formatBytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n.toLocaleString('en')} bytes`;
}

/** `10 s`, `1.5 s`, `250 ms`. */
export function formatDuration(ms: number): string {
  return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}

/** The message of a compile error for a crossed budget. */
export function budgetMessage(budget: BudgetName, limit: number): string {
  const setting = BUDGET_SETTINGS[budget];
  switch (budget) {
    case 'bytes':
      return `the config expands to more than ${formatBytes(limit)} (${setting}); a parameter passed on to another command or job written more than once (<< parameters.x >><< parameters.x >>), or steps repeated through commands, multiply its size at each level`;
    case 'nodes':
      return `the config expands to more than ${limit.toLocaleString('en')} nodes (${setting}); anchors and aliases, steps parameters and commands repeated inside each other multiply them`;
    case 'time':
      return `compiling the config took more than ${formatDuration(limit)} (${setting})`;
    case 'memory':
      return `compiling the config needed more than ${limit} MiB of memory (${setting})`;
  }
}

export class BudgetExceededError extends Error {
  constructor(
    readonly budget: BudgetName,
    readonly limit: number,
    /** Where in the config the budget was crossed, when known. */
    readonly path?: string,
  ) {
    super(budgetMessage(budget, limit));
  }
}

/** How many visits pass between two looks at the clock (a look costs ~25 ns; a visit ~50). */
const TICKS_PER_CLOCK_CHECK = 1024;

export class Budget {
  private bytes = 0;
  private nodes = 0;
  private ticks = 0;
  private readonly deadline: number;

  constructor(
    readonly limits: CompileBudgets,
    private readonly now: () => number = Date.now,
  ) {
    this.deadline = now() + limits.timeoutMs;
  }

  /** Charges text about to be written; throws before the budget is crossed, not after. */
  grow(chars: number, path?: () => string): void {
    this.bytes += chars;
    if (this.bytes > this.limits.maxBytes) throw new BudgetExceededError('bytes', this.limits.maxBytes, path?.());
  }

  /** Counts one unit of work; now and then compares the clock with the deadline. */
  tick(path?: () => string): void {
    if (++this.ticks % TICKS_PER_CLOCK_CHECK === 0) this.checkTime(path);
  }

  checkTime(path?: () => string): void {
    if (this.now() > this.deadline) throw new BudgetExceededError('time', this.limits.timeoutMs, path?.());
  }

  /**
   * Measures a value placed into the expanded config: its nodes and the characters of its strings
   * and keys. Shared values (aliases, steps arguments) count at every place they appear, because
   * every place is rendered; the walk stops as soon as a budget is crossed.
   */
  place(value: unknown, path: string): void {
    const where = () => path;
    // An explicit stack: values nested through parameters can be deeper than the call stack.
    const stack: unknown[] = [value];
    while (stack.length) {
      const v = stack.pop();
      if (++this.nodes > this.limits.maxNodes) throw new BudgetExceededError('nodes', this.limits.maxNodes, path);
      this.tick(where);
      if (typeof v === 'string') this.grow(v.length, where);
      else if (Array.isArray(v)) for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]);
      else if (v !== null && typeof v === 'object') {
        for (const k in v) {
          if (!Object.prototype.hasOwnProperty.call(v, k)) continue;
          this.grow(k.length, where);
          stack.push((v as Record<string, unknown>)[k]);
        }
      }
    }
  }

  /** What was counted so far (for benchmarks and for choosing defaults). */
  usage(): { bytes: number; nodes: number } {
    return { bytes: this.bytes, nodes: this.nodes };
  }
}
