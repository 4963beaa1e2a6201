/**
 * A small Prometheus registry: counters and histograms kept in this process, gauges read when
 * scraped (queue depth comes from the database, so every api replica reports the same figure).
 * Exposition is the text format, version 0.0.4.
 */
export interface Histogram {
  observe(value: number, labels?: Record<string, string>): void;
}

export interface Counter {
  inc(labels?: Record<string, string>, by?: number): void;
}

export interface Metrics {
  counter(name: string, help: string): Counter;
  histogram(name: string, help: string, buckets: readonly number[]): Histogram;
  /** A gauge whose samples `collect` returns at scrape time. */
  gauge(name: string, help: string, collect: () => Promise<{ labels: Record<string, string>; value: number }[]>): void;
  /** The text exposition of every metric. */
  render(): Promise<string>;
}

const labelText = (labels: Record<string, string>) => {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`).join(',')}}`;
};

export function createMetrics(): Metrics {
  const renderers: (() => Promise<string[]>)[] = [];
  return {
    counter(name, help) {
      const values = new Map<string, number>();
      renderers.push(async () => [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, ...[...values].map(([l, v]) => `${name}${l} ${v}`)]);
      return {
        inc(labels = {}, by = 1) {
          const key = labelText(labels);
          values.set(key, (values.get(key) ?? 0) + by);
        },
      };
    },
    histogram(name, help, buckets) {
      const series = new Map<string, { labels: Record<string, string>; counts: number[]; sum: number; count: number }>();
      renderers.push(async () => {
        const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
        for (const s of series.values()) {
          buckets.forEach((b, i) => lines.push(`${name}_bucket${labelText({ ...s.labels, le: String(b) })} ${s.counts[i]}`));
          lines.push(`${name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
          lines.push(`${name}_sum${labelText(s.labels)} ${s.sum}`, `${name}_count${labelText(s.labels)} ${s.count}`);
        }
        return lines;
      });
      return {
        observe(value, labels = {}) {
          const key = labelText(labels);
          let s = series.get(key);
          if (!s) series.set(key, (s = { labels, counts: buckets.map(() => 0), sum: 0, count: 0 }));
          buckets.forEach((b, i) => {
            if (value <= b) s!.counts[i]++;
          });
          s.sum += value;
          s.count++;
        },
      };
    },
    gauge(name, help, collect) {
      renderers.push(async () => [
        `# HELP ${name} ${help}`,
        `# TYPE ${name} gauge`,
        ...(await collect()).map((s) => `${name}${labelText(s.labels)} ${s.value}`),
      ]);
    },
    async render() {
      const parts = await Promise.all(renderers.map((r) => r()));
      return parts.flat().join('\n') + '\n';
    },
  };
}
