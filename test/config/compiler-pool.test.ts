import { CompilerUnavailableError, createCompilerPool, type CompilerPool, type CompilerPoolOptions } from '../../runtime/config/compiler-pool';
import { createMemoryOrbSource } from '../../runtime/config/orb-registry';
import type { OrbSource } from '../../runtime/config/orb-source';
import type { CompileResult } from '../../runtime/config/plan';
import { createLogger } from '../../runtime/logger';
import { hostileConfig, startLagMeter } from '../support/hostile-compile';

/**
 * Compilation in worker threads: budgets hold there too, the event loop of the thread that asked
 * stays free, a worker stopped for memory or time gives a compile error and is replaced, and orbs
 * are looked up by the parent.
 */

const GOOD = `version: 2.1
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    steps: [checkout, {run: make}]
workflows:
  w:
    jobs: [build]
`;
const trigger = { branch: 'main' };

function logCapture() {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: 'info', write: (l) => lines.push(l) }) };
}

const pools: CompilerPool[] = [];
function pool(options: Partial<CompilerPoolOptions> = {}): CompilerPool {
  const p = createCompilerPool({ log: createLogger({ level: 'silent' }), ...options });
  pools.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

function firstMessage(r: CompileResult): string {
  if (r.ok) throw new Error('expected a compile error, the config compiled');
  return r.problems[0].message;
}

/** A 4 MiB flow list of 2 million numbers: parsing it (before any bound is checked) takes seconds and hundreds of MB. */
const HEAVY_PARSE = `version: 2.1\nx: [${'1,'.repeat(2 * 1024 * 1024 - 20)}1]\n`;

describe('compiler pool', () => {
  it('compiles a config in a worker to the same plan and compiled text as in process', async () => {
    const r = await pool().compile(GOOD, { trigger });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.plan.workflows[0].jobs.map((j) => [j.name, j.spec?.steps.map((s) => s.type)])).toEqual([['build', ['checkout', 'run']]]);
    expect(r.compiledYaml).toMatch(/^version: 2\n/);
    expect(r.compiledYaml).toContain('# Original config.yml file:');
  });

  it('the doubling config is refused on the byte budget inside a 64 MiB worker', async () => {
    const p = pool({ limits: { memoryMb: 64 } });
    const t0 = performance.now();
    const message = firstMessage(await p.compile(hostileConfig('doubling'), { trigger }));
    // The byte budget, not the memory limit: the compilation never needed more than 64 MiB.
    expect(message).toMatch(/^the config expands to more than 16 MiB \(GYRE_COMPILE_MAX_BYTES\)/);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(firstMessage(await p.compile(hostileConfig('node-bomb'), { trigger }))).toMatch(/more than 1,000,000 nodes \(GYRE_COMPILE_MAX_NODES\)/);
  });

  it("the caller's event loop stays responsive while hostile configs compile", async () => {
    // 3 s: the doubling (0.2 s idle, over 1.5 s on a loaded machine) stays within it.
    const p = pool({ limits: { timeoutMs: 3000 } });
    await p.compile(GOOD, { trigger }); // the worker has started
    const meter = startLagMeter(5);
    const [doubling, timeBomb] = await Promise.all([p.compile(hostileConfig('doubling'), { trigger }), p.compile(hostileConfig('time-bomb'), { trigger })]);
    const lag = meter.stop();
    expect(firstMessage(doubling)).toMatch(/GYRE_COMPILE_MAX_BYTES/);
    expect(firstMessage(timeBomb)).toBe('compiling the config took more than 3 s (GYRE_COMPILE_TIMEOUT_MS)');
    // In process, the time bomb alone holds the loop for the whole 3 s. Off it, the loop waits only
    // for the machine (a loaded one stalled this process for hundreds of milliseconds).
    expect(lag.ticks).toBeGreaterThan(40);
    expect(lag.maxMs).toBeLessThan(750);
  });

  it('a worker stopped by its memory limit gives a compile error naming the memory budget, and the next compile succeeds', async () => {
    const { lines, log } = logCapture();
    // Time is not what this is about: on a loaded machine the parse took more than the default
    // 10 s to need 64 MiB (it takes about 20 s to the end, unbounded).
    const p = pool({ limits: { memoryMb: 64, timeoutMs: 50_000 }, log });
    const message = firstMessage(await p.compile(HEAVY_PARSE, { trigger }));
    expect(message).toBe('compiling the config needed more than 64 MiB of memory (GYRE_COMPILE_MEMORY_MB)');
    expect(lines.join('\n')).toMatch(/config compiler worker stopped; a new one replaces it/);
    const next = await p.compile(GOOD, { trigger });
    expect(next.ok).toBe(true);
  });

  it('a worker busy past the time budget (where the compiler cannot check its clock) is terminated and replaced', async () => {
    const { lines, log } = logCapture();
    // The parse runs about 20 s unbounded. A budget of 1 s, not less: the next compile is a new
    // worker's first, which took more than 150 ms on a loaded machine.
    const p = pool({ limits: { timeoutMs: 1000, memoryMb: 1024 }, graceMs: 50, log });
    const t0 = performance.now();
    const message = firstMessage(await p.compile(HEAVY_PARSE, { trigger }));
    expect(message).toBe('compiling the config took more than 1 s (GYRE_COMPILE_TIMEOUT_MS)');
    expect(performance.now() - t0).toBeLessThan(6000);
    expect(lines.join('\n')).toMatch(/config compiler worker stopped; a new one replaces it .*took more than 1 s/);
    expect((await p.compile(GOOD, { trigger })).ok).toBe(true);
  });

  it('with two workers, a good config compiles while a hostile one holds the other', async () => {
    const p = pool({ workers: 2, limits: { timeoutMs: 2500 } });
    // Both workers started first: a cold second worker, starting beside the bomb, could take longer
    // than the bomb's budget on a loaded machine.
    await Promise.all([p.compile(GOOD, { trigger }), p.compile(GOOD, { trigger })]);
    const done: string[] = [];
    const bomb = p.compile(hostileConfig('time-bomb'), { trigger }).then((r) => (done.push('bomb'), r));
    await new Promise((r) => setTimeout(r, 50));
    const good = await p.compile(GOOD, { trigger }).then((r) => (done.push('good'), r));
    expect(good.ok).toBe(true);
    expect(firstMessage(await bomb)).toMatch(/GYRE_COMPILE_TIMEOUT_MS/);
    // With one worker the good config would wait for the bomb's 2.5 s.
    expect(done).toEqual(['good', 'bomb']);
  });

  it('warm() starts one worker before any compilation, which then compiles there', async () => {
    const { lines, log } = logCapture();
    const p = pool({ workers: 2, log });
    const started = () => lines.filter((l) => l.includes('config compiler worker starting')).length;
    p.warm();
    p.warm();
    expect(started()).toBe(1);
    expect((await p.compile(GOOD, { trigger })).ok).toBe(true);
    expect(started()).toBe(1);
  });

  it('a burst of ordinary configs is compiled by the worker there is; one held past a moment gets the next a second worker', async () => {
    const { lines, log } = logCapture();
    // A second worker for a compilation that waited 1 s (50 ms by default): ten ordinary ones never
    // wait that long, however loaded the machine running this test.
    const p = pool({ workers: 2, log, limits: { timeoutMs: 2500 }, spareAfterMs: 1000 });
    const started = () => lines.filter((l) => l.includes('config compiler worker starting')).length;
    await p.compile(GOOD, { trigger });
    // Ten at once, as pipelines triggered back to back: a few milliseconds each in one worker.
    const burst = await Promise.all(Array.from({ length: 10 }, () => p.compile(GOOD, { trigger })));
    expect(burst.every((r) => r.ok)).toBe(true);
    expect(started()).toBe(1);
    // A config holding the worker (2.5 s): the next one waits its second, then gets a worker of its own.
    const bomb = p.compile(hostileConfig('time-bomb'), { trigger });
    await new Promise((r) => setTimeout(r, 20));
    expect((await p.compile(GOOD, { trigger })).ok).toBe(true);
    expect(started()).toBe(2);
    expect(firstMessage(await bomb)).toMatch(/GYRE_COMPILE_TIMEOUT_MS/);
  });

  it('orbs are resolved by the parent, and a failing lookup is a compile error naming the orb', async () => {
    const registry = createMemoryOrbSource();
    registry.publish('acme/tools', '1.2.3', 'version: 2.1\nexecutors:\n  default: {docker: [{image: "cimg/base:1.2.3"}]}\njobs:\n  hello: {executor: default, steps: [{run: echo hello}]}\n');
    const asked: string[] = [];
    const orbs: OrbSource = {
      async resolve(name, ref) {
        asked.push(`${name}@${ref}`);
        if (name === 'acme/broken') throw new Error('the database is not answering');
        return registry.resolve(name, ref);
      },
    };
    const p = pool({ orbs });
    const r = await p.compile('version: 2.1\norbs: {t: acme/tools@1}\nworkflows: {w: {jobs: [t/hello]}}\n', { trigger });
    expect(r.ok && r.plan.workflows[0].jobs[0].spec).toMatchObject({ executor: { kind: 'docker', images: [{ image: 'cimg/base:1.2.3' }] }, steps: [{ type: 'run', command: 'echo hello' }] });
    expect(asked).toEqual(['acme/tools@1']);
    const broken = await p.compile('version: 2.1\norbs: {b: acme/broken@2}\nworkflows: {w: {jobs: [b/x]}}\n', { trigger });
    expect(firstMessage(broken)).toBe('orb acme/broken@2 could not be resolved: the database is not answering');
    const missing = await p.compile('version: 2.1\norbs: {m: acme/missing@1.0}\nworkflows: {w: {jobs: [m/x]}}\n', { trigger });
    expect(firstMessage(missing)).toMatch(/^orb acme\/missing@1.0 is not in the orb registry/);
  });

  it('refuses at once (unavailable, not a compile error) what would overfill the waiting line, and compiles what was waiting', async () => {
    const p = pool({ workers: 1, limits: { timeoutMs: 1000 }, maxWaitingChars: GOOD.length * 2 });
    await p.compile(GOOD, { trigger }); // the worker has started
    const bomb = p.compile(hostileConfig('time-bomb'), { trigger });
    await new Promise((r) => setTimeout(r, 50));
    const waiting = [p.compile(GOOD, { trigger }), p.compile(GOOD, { trigger })];
    const refused = p.compile(GOOD, { trigger });
    await expect(refused).rejects.toThrow(CompilerUnavailableError);
    await expect(refused).rejects.toThrow(/^the config compiler is busy \(2 configs, 1 KiB in all, are waiting for it\); try again shortly$/);
    expect(firstMessage(await bomb)).toMatch(/GYRE_COMPILE_TIMEOUT_MS/);
    expect((await Promise.all(waiting)).map((r) => r.ok)).toEqual([true, true]);
  });

  it('after close, running, waiting and new compilations are refused as unavailable (not compile errors)', async () => {
    const p = createCompilerPool({ log: createLogger({ level: 'silent' }), workers: 1, limits: { timeoutMs: 5000 } });
    await p.compile(GOOD, { trigger }); // the worker has started
    const caught = (r: Promise<unknown>) => r.then(() => 'compiled', (error: unknown) => error);
    const running = caught(p.compile(hostileConfig('time-bomb'), { trigger }));
    const waiting = caught(p.compile(GOOD, { trigger }));
    await new Promise((r) => setTimeout(r, 50));
    await p.close();
    for (const refused of [await running, await waiting, await caught(p.compile(GOOD, { trigger }))]) {
      expect(refused).toBeInstanceOf(CompilerUnavailableError);
      expect((refused as Error).message).toMatch(/^the config compiler has been stopped \(Gyre is shutting down\)/);
    }
  });
});
