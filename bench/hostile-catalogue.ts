import { HOSTILE_CASES } from '../test/support/hostile-cases';
import { sendHostile } from '../test/support/hostile-send';
import { startHostileTarget } from '../test/support/hostile-server';
import { median, ms, percentile } from './stats';

/**
 * `npm run bench -- hostile-catalogue`: the hostile-input catalogue (test/support/hostile-cases.ts)
 * sent to Gyre running as its own process, several rounds, timing each answer from the moment the
 * request is sent to the moment its whole answer has arrived. Prints the median, p99 and maximum
 * per group and overall, and checks the server still answers /healthz at the end.
 */
export async function benchHostileCatalogue(rounds = Number(process.env.BENCH_ROUNDS ?? 5)): Promise<void> {
  const t = await startHostileTarget({ env: { GYRE_LEASE_TTL_MS: '3600000' } });
  try {
    const byGroup = new Map<string, number[]>();
    const all: number[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const c of HOSTILE_CASES) {
        const { ms: took } = await sendHostile(t, c.request(t));
        all.push(took);
        byGroup.set(c.group, [...(byGroup.get(c.group) ?? []), took]);
      }
    }
    console.log(`\n## Hostile-input catalogue: answer time (${HOSTILE_CASES.length} cases × ${rounds} rounds, gyre server in its own process)`);
    console.log('| group | cases | median | p99 | max |');
    console.log('|---|---|---|---|---|');
    for (const [group, samples] of byGroup) console.log(`| ${group} | ${samples.length / rounds} | ${ms(median(samples))} | ${ms(percentile(samples, 99))} | ${ms(Math.max(...samples))} |`);
    console.log(`| **all** | ${HOSTILE_CASES.length} | ${ms(median(all))} | ${ms(percentile(all, 99))} | ${ms(Math.max(...all))} |`);
    const health = await fetch(`${t.url}/healthz`);
    console.log(`/healthz after the catalogue: ${health.status}`);
  } finally {
    await t.stop();
  }
}
