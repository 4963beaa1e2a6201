import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';
import { outcomeOf, type Outcome } from './metrics';
import { addToDaily, advanceCursor, completedWorkflows, forgetOlderThan, latestStates, lockCursor, recordJobRuns, recordWorkflowRuns } from './sql/rollup';

/** The rollup's key for all branches together; no git branch can be named `*`. */
export const ALL_BRANCHES = '*';

/**
 * How far back from its cursor each pass looks again: a workflow whose end committed this long
 * after the time it records (a slow transaction) is still found. Already recorded runs are skipped.
 */
const LOOK_BACK_MS = 5 * 60_000;

/** How long runs and rollup days are kept (longer than the longest window, 90 days, and its trend's 90 before it). */
export const KEEP_DAYS = 400;

export interface InsightsRollup {
  /**
   * Records every workflow that ended since the last pass, with its jobs, and adds them to the
   * daily rollup, in batches of one transaction each. Answers how many workflows it recorded.
   * Processes running it at once take turns (the cursor row is locked per batch); one that finds
   * it locked leaves the work to the holder.
   */
  pass(): Promise<number>;
  /** Deletes runs and rollup days older than KEEP_DAYS. */
  forgetOld(): Promise<number>;
}

export function createInsightsRollup(deps: { store: Store; log?: Logger; batchSize?: number }): InsightsRollup {
  const { store } = deps;
  const batchSize = deps.batchSize ?? 500;
  return {
    async pass() {
      let total = 0;
      for (;;) {
        const n = await store.transaction((tx) => rollUpBatch(tx, batchSize));
        if (n === undefined) return total;
        total += n;
        if (n < batchSize) return total;
      }
    },
    forgetOld: () => forgetOlderThan(store, KEEP_DAYS),
  };
}

const seriesKey = (projectId: string, workflowName: string, branch: string) => JSON.stringify([projectId, workflowName, branch]);

/** One batch: answers how many workflows it recorded, or undefined when another process holds the cursor. */
async function rollUpBatch(tx: Queryable, batchSize: number): Promise<number | undefined> {
  const cursor = await lockCursor(tx);
  if (!cursor) return undefined;
  const workflows = await completedWorkflows(tx, new Date(cursor.getTime() - LOOK_BACK_MS), batchSize);
  if (workflows.length === 0) return 0;

  // Mean time to recovery: walk each branch's runs in the order they stopped, from the state its
  // latest recorded run left (failing since when, or not failing).
  const series = new Map<string, { projectId: string; workflowName: string; branch: string }>();
  for (const w of workflows) series.set(seriesKey(w.project_id, w.name, w.branch), { projectId: w.project_id, workflowName: w.name, branch: w.branch });
  const failingSince = new Map<string, Date | null>();
  for (const s of await latestStates(tx, [...series.values()])) failingSince.set(seriesKey(s.project_id, s.workflow_name, s.branch), s.failing_since ? new Date(s.failing_since) : null);
  const recoveries = workflows.map((w) => {
    const key = seriesKey(w.project_id, w.name, w.branch);
    const next = recoveryOf(failingSince.get(key) ?? null, outcomeOf(w.status), new Date(w.stopped_at));
    failingSince.set(key, next.failingSince);
    return { workflowId: w.id, ...next };
  });

  // The cursor row is locked, so no other process records these workflows meanwhile: each run
  // goes into the rollup exactly once, in this transaction.
  const ids = workflows.map((w) => w.id);
  await recordJobRuns(tx, ids);
  await recordWorkflowRuns(tx, recoveries);
  await addToDaily(tx, ids);
  await advanceCursor(tx, new Date(workflows[workflows.length - 1].stopped_at));
  return workflows.length;
}

/**
 * Where a branch stands after a run: a failure starts (or continues) a run of failures, a success
 * ends one and recovers from it (in whole seconds since the first failure stopped), a canceled run
 * changes nothing.
 */
export function recoveryOf(failingSince: Date | null, outcome: Outcome, stoppedAt: Date): { failingSince: Date | null; recoverySecs: number | null } {
  if (outcome === 'failed') return { failingSince: failingSince ?? stoppedAt, recoverySecs: null };
  if (outcome === 'success') return { failingSince: null, recoverySecs: failingSince ? Math.max(0, Math.round((stoppedAt.getTime() - failingSince.getTime()) / 1000)) : null };
  return { failingSince, recoverySecs: null };
}
