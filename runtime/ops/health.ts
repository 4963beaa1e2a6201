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
  /**
   * The dependencies' state. A report younger than `cacheMs` is reused (probes from many sources
   * cost one check); an older one starts a new check, and the answer waits for it at most
   * `answerWithinMs` before falling back to the last completed report.
   */
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
  /**
   * How long an answer waits for a new check when an earlier report exists. Below the kubelet's
   * probe timeout (1 s by default), so a dependency that is slow but answering, on a busy machine,
   * never makes a probe time out. @default 500
   */
  readonly answerWithinMs?: number;
}

const PROBE_KEY = 'health/probe-never-written';

/**
 * Readiness: the process is ready when the database answers a query, the blob store answers a
 * read (a missing object is an answer), and Nomad has a leader (where Nomad is used).
 *
 * A check is never on a probe's clock: a probe that finds the last report stale starts a new
 * check and answers with it if it ends within `answerWithinMs`, else with the last completed
 * report (a dependency that stopped answering is reported by the next probe, once the check's own
 * `timeoutMs` has passed). Only the first probe waits for a whole check, as there is nothing else
 * to answer with.
 */
export function createHealth(deps: HealthDeps): Health {
  const timeoutMs = deps.timeoutMs ?? 2000;
  const cacheMs = deps.cacheMs ?? 1000;
  const answerWithinMs = deps.answerWithinMs ?? 500;
  const within = async (what: () => Promise<unknown>): Promise<CheckResult> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        what(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
          // A check still waiting for a slow database does not hold up a process that is ending.
          timer.unref();
        }),
      ]);
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
  /** The last completed report and when its check started. */
  let completed: { at: number; report: HealthReport } | undefined;
  let running: Promise<HealthReport> | undefined;
  const refresh = (): Promise<HealthReport> => {
    if (running) return running;
    const at = Date.now();
    running = (async () => {
      const entries = await Promise.all(Object.entries(checks).map(async ([name, fn]) => [name, await within(fn)] as const));
      const report: HealthReport = { ok: entries.every(([, r]) => r.ok), checks: Object.fromEntries(entries) };
      completed = { at, report };
      running = undefined;
      return report;
    })();
    return running;
  };
  return {
    async check() {
      if (completed && Date.now() - completed.at < cacheMs) return completed.report;
      const fresh = refresh();
      if (!completed) return fresh;
      const last = completed.report;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<HealthReport>((resolve) => (timer = setTimeout(() => resolve(last), answerWithinMs)));
      try {
        return await Promise.race([fresh, late]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
