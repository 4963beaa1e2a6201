import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * A process's Prometheus metrics, on prom-client with a registry of its own (no global one).
 * A scrape reads values kept in memory: nothing here queries the database when scraped. Figures
 * that come from the database (queue depth) are refreshed by the role that owns them, on a timer
 * (see execution-metrics.ts), so scrapes cost the same however large the tables grow.
 */
export interface Metrics {
  readonly registry: Registry;
  counter<L extends string>(name: string, help: string, labelNames?: readonly L[]): Counter<L>;
  histogram<L extends string>(name: string, help: string, buckets: readonly number[], labelNames?: readonly L[]): Histogram<L>;
  gauge<L extends string>(name: string, help: string, labelNames?: readonly L[]): Gauge<L>;
  /** The text exposition of every metric, and its content type. */
  render(): Promise<{ text: string; contentType: string }>;
}

export type { Counter, Gauge, Histogram };

export function createMetrics(options: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  // CPU, memory, event-loop lag, handles: what an operator looks at first when a process struggles.
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'gyre_' });
  return {
    registry,
    counter: (name, help, labelNames = []) => new Counter({ name, help, labelNames: [...labelNames], registers: [registry] }),
    histogram: (name, help, buckets, labelNames = []) => new Histogram({ name, help, buckets: [...buckets], labelNames: [...labelNames], registers: [registry] }),
    gauge: (name, help, labelNames = []) => new Gauge({ name, help, labelNames: [...labelNames], registers: [registry] }),
    async render() {
      return { text: await registry.metrics(), contentType: registry.contentType };
    },
  };
}
