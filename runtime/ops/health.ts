import { NotFoundError } from '../domain/errors';
import type { BlobStore } from '../blob/blob-store';
import type { NomadClient } from '../scheduler/nomad-client';
import type { Store } from '../store/store';

/** One dependency's state: `ok`, or what went wrong. */
export type CheckResult = { readonly ok: true } | { readonly ok: false; readonly error: string };

export interface HealthReport {
  readonly ok: boolean;
  readonly checks: Readonly<Record<string, CheckResult>>;
}

export interface Health {
  /** The dependencies' state, at most `cacheMs` old (probes from many sources cost one check). */
  check(): Promise<HealthReport>;
}

export interface HealthDeps {
  readonly store: Store;
  readonly blobs: BlobStore;
  /** Checked only in processes that talk to Nomad (the scheduler with the Nomad driver). */
  readonly nomad?: NomadClient;
  /** How long one check may take before it counts as failed. @default 2000 */
  readonly timeoutMs?: number;
  /** How long a report is reused. @default 1000 */
  readonly cacheMs?: number;
}

const PROBE_KEY = 'health/probe-never-written';

/**
 * Readiness: the process is ready when the database answers a query, the blob store answers a
 * read (a missing object is an answer), and Nomad has a leader (where Nomad is used).
 */
export function createHealth(deps: HealthDeps): Health {
  const timeoutMs = deps.timeoutMs ?? 2000;
  const cacheMs = deps.cacheMs ?? 1000;
  const within = async (what: () => Promise<unknown>): Promise<CheckResult> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([what(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)))]);
      return { ok: true };
    } catch (error) {
      return { ok: false, error: (error as Error).message.slice(0, 300) };
    } finally {
      clearTimeout(timer);
    }
  };
  const checks: Record<string, () => Promise<unknown>> = {
    database: () => deps.store.query('SELECT 1'),
    blobs: async () => {
      try {
        const body = await deps.blobs.get(PROBE_KEY);
        body.destroy();
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
      }
    },
    ...(deps.nomad ? { nomad: () => deps.nomad!.leader() } : {}),
  };
  let last: { at: number; report: Promise<HealthReport> } | undefined;
  return {
    check() {
      const now = Date.now();
      if (last && now - last.at < cacheMs) return last.report;
      const report = (async () => {
        const entries = await Promise.all(Object.entries(checks).map(async ([name, fn]) => [name, await within(fn)] as const));
        return { ok: entries.every(([, r]) => r.ok), checks: Object.fromEntries(entries) };
      })();
      last = { at: now, report };
      return report;
    },
  };
}
