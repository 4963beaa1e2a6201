import { setFlagsFromString } from 'node:v8';

/**
 * How far an agent's heap grows past what its last full collection kept before V8 collects it
 * again, in percent: `gyre agent` and `gyre runner` processes (and the log ingestion benchmark's
 * remote agent, which stands for them) run with it.
 *
 * bin/gyre.js starts every process with 50, for the server: its heap is tens of MiB, and
 * collecting once it has grown by half kept its memory in bounds. An agent's heap is ~12 MiB, and
 * the buffers of a loud step's output (the chunk being compressed, its gzip members, the request
 * carrying them) count against the same limit: at 50 it ran a full collection every chunk or two,
 * 8-10 a 100 MB step, their marking on the other core that the compression needs. At 300 a step
 * takes one or two, and the agent's process about 10 % less CPU; its heap may then hold some
 * 30 MiB more garbage (docs/speed.md, the thirtieth sitting).
 */
export const AGENT_HEAP_GROWING_PERCENT = 300;

/**
 * Sets the agent's heap growth for the rest of this process. V8 reads this setting each time it
 * sizes the heap after a collection, so setting it after start takes effect from the next one.
 * Only for a process of the agent's own: never inside a server or a test runner.
 */
export function useAgentHeapGrowth(): void {
  setFlagsFromString(`--heap-growing-percent=${AGENT_HEAP_GROWING_PERCENT}`);
}
