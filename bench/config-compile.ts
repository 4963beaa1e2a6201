/**
 * Compile time of every corpus config (median of several runs, orbs from the corpus and the test
 * fixtures, for a push to main). Prints figures; not a test.
 */
import { performance } from 'node:perf_hooks';
import { compileConfig, createOrbDocumentCache, type OrbDocumentCache } from '../runtime/config/compiler';
import { corpusConfig, corpusFiles, corpusOrbSource } from '../test/config/corpus';

const RUNS = 9;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function run(label: string, orbCache: OrbDocumentCache | undefined, readText: boolean, perFile: boolean): Promise<void> {
  const orbs = corpusOrbSource();
  const rows: { file: string; size: number; ms: number }[] = [];
  for (const file of corpusFiles()) {
    const source = corpusConfig(file);
    const times: number[] = [];
    for (let i = 0; i < RUNS + 1; i++) {
      const t0 = performance.now();
      const r = await compileConfig(source, { trigger: { branch: 'main' }, orbs, ...(orbCache ? { orbCache } : {}) });
      if (readText && r.ok && r.compiledYaml.length === 0) throw new Error('empty compiled config');
      const t = performance.now() - t0;
      if (!r.ok) throw new Error(`${file} does not compile: ${r.problems[0]?.message}`);
      if (i > 0) times.push(t); // the first run warms the JIT
    }
    rows.push({ file, size: source.length, ms: median(times) });
  }
  console.log(`config compile, ${label} (median of ${RUNS} runs per file)`);
  if (perFile) for (const r of rows) console.log(`  ${r.ms.toFixed(2).padStart(8)} ms  ${String(r.size).padStart(7)} chars  ${r.file}`);
  const largest = rows.reduce((a, b) => (b.size > a.size ? b : a));
  console.log(`  median per file: ${median(rows.map((r) => r.ms)).toFixed(2)} ms`);
  console.log(`  largest file (${largest.file}, ${largest.size} chars): ${largest.ms.toFixed(2)} ms`);
  console.log(`  total for ${rows.length} files: ${rows.reduce((a, r) => a + r.ms, 0).toFixed(1)} ms`);
}

export async function benchConfigCompile(): Promise<void> {
  await run('plan and compiled text, no orb cache (every compilation parses its orbs)', undefined, true, true);
  await run('plan and compiled text, with an orb document cache (as a long-lived server keeps)', createOrbDocumentCache(), true, false);
  await run('plan only, with an orb document cache', createOrbDocumentCache(), false, false);
}
