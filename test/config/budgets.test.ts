import { readFileSync } from 'node:fs';
import path from 'node:path';
import { compileConfig, DEFAULT_COMPILE_BUDGETS, type CompileBudgets } from '../../runtime/config/compiler';
import type { CompileResult } from '../../runtime/config/plan';

/**
 * The expansion budgets, in process: each hostile fixture is refused with a compile error that
 * names the budget, its value and the setting, and is refused quickly (while it grows, not after).
 */
const FIXTURES = path.resolve(__dirname, '../fixtures/hostile');
const fixture = (name: string) => readFileSync(path.join(FIXTURES, name), 'utf8');

/**
 * Compiles in this process; `ms` is the CPU time it took (the compile runs on this thread). CPU,
 * not wall time: another file's work on a loaded 2-core machine stretches the wall time, not this.
 */
async function compile(source: string, budgets?: Partial<CompileBudgets>): Promise<{ result: CompileResult; ms: number }> {
  const before = process.cpuUsage();
  const result = await compileConfig(source, { trigger: { branch: 'main' }, ...(budgets ? { budgets } : {}) });
  const used = process.cpuUsage(before);
  return { result, ms: (used.user + used.system) / 1000 };
}

function firstProblem(r: CompileResult): { message: string; path?: string } {
  if (r.ok) throw new Error('expected a compile error, the config compiled');
  return r.problems[0];
}

describe('expansion budgets', () => {
  it('a 3 KB config whose commands double a parameter 18 times is refused on the byte budget, quickly', async () => {
    const source = fixture('doubling.yml');
    expect(source.length).toBeLessThan(4000);
    const { result, ms } = await compile(source);
    const p = firstProblem(result);
    expect(p.message).toMatch(/^the config expands to more than 16 MiB \(GYRE_COMPILE_MAX_BYTES\); /);
    // Crossed while passing the doubled value on, not after building 262 MB.
    expect(p.path).toMatch(/^commands\.c\d+\.steps\[0\]\.c\d+\.x$/);
    expect(ms).toBeLessThan(5000); // unbounded it takes ~10 s of CPU and 1 GB here
  });

  it('names the value the byte budget was set to', async () => {
    const p = firstProblem((await compile(fixture('doubling.yml'), { maxBytes: 1024 * 1024 })).result);
    expect(p.message).toMatch(/more than 1 MiB \(GYRE_COMPILE_MAX_BYTES\)/);
  });

  it('a parameter doubled a few times stays under the budget and compiles', async () => {
    // Cut the chain to c8: 2^8 × 1000 characters = 256 KB in the one run step.
    const source = fixture('doubling.yml').replace(/- c18:/, '- c8:');
    const { result } = await compile(source);
    expect(result.ok && (result.plan.workflows[0].jobs[0].spec!.steps[0] as { command: string }).command.length).toBe(5 + 256_000);
  });

  it('a step of aliased nodes repeated 20 times is refused on the node budget', async () => {
    const { result, ms } = await compile(fixture('node-bomb.yml'));
    const p = firstProblem(result);
    expect(p.message).toMatch(/^the config expands to more than 1,000,000 nodes \(GYRE_COMPILE_MAX_NODES\)/);
    expect(p.path).toBe('commands.c.steps[0].run');
    expect(ms).toBeLessThan(5000);
    const smaller = firstProblem((await compile(fixture('node-bomb.yml'), { maxNodes: 200_000 })).result);
    expect(smaller.message).toMatch(/more than 200,000 nodes/);
  });

  it('a config that walks the same large value thousands of times is stopped by the time budget', async () => {
    const { result, ms } = await compile(fixture('time-bomb.yml'), { timeoutMs: 500 });
    const p = firstProblem(result);
    expect(p.message).toBe('compiling the config took more than 500 ms (GYRE_COMPILE_TIMEOUT_MS)');
    expect(p.path).toMatch(/^commands\.c0\.steps\[0\]\.when\.steps/);
    expect(ms).toBeLessThan(3000);
  });

  it('the defaults are documented values', () => {
    expect(DEFAULT_COMPILE_BUDGETS).toEqual({ maxBytes: 16 * 1024 * 1024, maxNodes: 1_000_000, timeoutMs: 10_000 });
  });
});
