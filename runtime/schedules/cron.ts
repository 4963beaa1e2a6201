import { randomUUID } from 'node:crypto';
import { appendAudit, SYSTEM_ACTOR, type Audit, type AuditActor } from '../audit/audit-log';
import { ConflictError } from '../domain/errors';
import type { Logger } from '../logger';
import type { Store } from '../store/store';
import type { Triggers } from '../triggers/triggers';
import { CATCH_UP_WINDOW_MS, planDueTicks } from './catch-up';
import { scheduledWorkflowsIn } from './scheduled-workflows';
import { claimSource, configsToRead, deleteOtherScheduledWorkflows, upsertScheduledWorkflow } from './sql/scheduled-workflows';
import {
  giveUpStaleTicks,
  insertTick,
  lockDueScheduledWorkflows,
  lockDueSchedules,
  markFailed,
  markFired,
  pruneTicks,
  reclaimStaleTicks,
  scheduledWorkflowFiring,
  scheduleFiring,
  setNextFireAt,
  type ClaimedTick,
  type TickSource,
} from './sql/ticks';
import { cadenceOf, timetableCadence } from './timetable';

/**
 * The cron role's work, one pass at a time (the role runs `pass` every GYRE_CRON_INTERVAL_MS):
 *
 * 1. Reads the scheduled workflows of projects whose default branch compiled a newer config.
 * 2. Claims due ticks: in one transaction, the due schedules and scheduled workflows are locked
 *    (`FOR UPDATE SKIP LOCKED`), the tick to fire is inserted (unique per schedule and fire time,
 *    so it is claimed once whatever the number of processes) and each one's next tick written. The
 *    missed-tick policy (./catch-up.ts) decides which tick fires: the latest due, if within the hour.
 * 3. Fires each claimed tick through the trigger path, as the schedule's actor with its
 *    parameters. The pipeline is created in a transaction that marks the tick fired only while it
 *    holds the claim, so a tick fires once even when a slow process and one that took over its
 *    claim both try.
 * 4. Takes over claims left by a process that stopped between claiming and firing (older than
 *    the claim timeout), if the tick is still within the catch-up window; older ones are given up.
 *
 * Time comes from `now`, so tests drive it.
 */
export interface Cron {
  pass(): Promise<CronPass>;
  /** Reads scheduled workflows from new default-branch configs; returns how many projects were read. */
  readScheduledWorkflows(): Promise<number>;
}

/** What one pass did, for tests and the log. */
export interface CronPass {
  readonly fired: readonly { readonly tick: string; readonly source: TickSource; readonly fireAt: Date; readonly pipelineId: string }[];
  readonly failed: readonly { readonly tick: string; readonly source: TickSource; readonly error: string }[];
  readonly skipped: number;
}

export interface CronDeps {
  readonly store: Store;
  readonly triggers: Triggers;
  readonly log: Logger;
  readonly now?: () => Date;
  /** A claim older than this that has not fired is taken over. @default 5 minutes */
  readonly claimTimeoutMs?: number;
  /** Schedules claimed per transaction. @default 100 */
  readonly batch?: number;
}

/** Handled ticks are kept this long (what fired when, for people and tests), then forgotten. */
const TICK_KEEP_MS = 7 * 24 * 3600_000;

export function createCron({ store, triggers, log, now = () => new Date(), claimTimeoutMs = 5 * 60_000, batch = 100 }: CronDeps): Cron {
  let lastPrune = 0;

  /** Claims the ticks due now, and advances every due schedule past now. */
  const claimDue = async (at: Date): Promise<{ claimed: ClaimedTick[]; skipped: number }> =>
    store.transaction(async (tx) => {
      const claimed: ClaimedTick[] = [];
      let skipped = 0;
      const due = [
        ...(await lockDueSchedules(tx, at, batch)).map((s) => ({ source: { kind: 'schedule', id: s.id } as TickSource, next: s.next_fire_at, cadence: () => timetableCadence(s.timetable) })),
        ...(await lockDueScheduledWorkflows(tx, at, batch)).map((w) => ({ source: { kind: 'workflow', id: w.id } as TickSource, next: w.next_fire_at, cadence: () => cadenceOf(w.cron) })),
      ];
      for (const d of due) {
        let plan;
        try {
          plan = planDueTicks(d.cadence(), d.next, at);
        } catch (error) {
          // A timetable or cron that no longer parses stops (next tick unset) rather than blocking the others.
          log.error('a schedule cannot be read and will not fire again until it is changed', { source: d.source, error: (error as Error).message });
          await setNextFireAt(tx, d.source, undefined);
          continue;
        }
        if (plan.skipped > 0) log.warn('schedule ticks missed (older than the catch-up window, or before the one that fires)', { source: d.source, skipped: plan.skipped, since: d.next.toISOString() });
        skipped += plan.skipped;
        if (plan.fire) {
          const tick = { id: randomUUID(), source: d.source, fireAt: plan.fire, claim: randomUUID() };
          if (await insertTick(tx, { ...tick, now: at })) claimed.push(tick);
        }
        await setNextFireAt(tx, d.source, plan.next);
      }
      return { claimed, skipped };
    });

  /**
   * Starts the tick's pipeline. The trigger path records its audit inside the transaction that
   * inserts the pipeline; that record is where the tick is marked fired, so the pipeline and the
   * tick commit together, and a claim another process took over rolls the pipeline back.
   */
  const fire = async (tick: ClaimedTick): Promise<string> => {
    let pipelineId: string | undefined;
    const fence = async (tx: Parameters<Audit['record']>[0], id: string) => {
      // The claim was taken over (this process was too slow): the pipeline must not be created twice.
      if (!(await markFired(tx, tick.id, tick.claim, id))) throw new ConflictError(`tick ${tick.id} was claimed by another process`);
      pipelineId = id;
    };
    if (tick.source.kind === 'schedule') {
      const s = await scheduleFiring(store, tick.source.id);
      if (!s) throw new ConflictError(`schedule ${tick.source.id} was deleted`);
      const { branch, tag, ...parameters } = s.parameters;
      const userId = s.attribution_actor === 'current' ? (s.actor_id ?? undefined) : undefined;
      const actor: AuditActor = userId ? { userId, login: s.actor_login ?? '' } : SYSTEM_ACTOR;
      await triggers.trigger({
        slug: s.slug,
        ...(tag !== undefined ? { tag: String(tag) } : { branch: String(branch) }),
        parameters,
        actorId: userId,
        type: 'scheduled_pipeline',
        audit: {
          async record(tx, detail = {}) {
            await fence(tx, detail.target!.id);
            await appendAudit(tx, { actor, action: 'schedule.fire', result: 'success', target: detail.target, org: s.slug.split('/')[1], project: s.slug, detail: { ...detail.detail, schedule: s.schedule_id, schedule_name: s.name, fire_at: tick.fireAt.toISOString() } });
          },
        },
      });
    } else {
      const w = await scheduledWorkflowFiring(store, tick.source.id);
      if (!w) throw new ConflictError(`scheduled workflow ${tick.source.id} is no longer in the config`);
      await triggers.trigger({
        slug: w.slug,
        branch: w.branch,
        type: 'schedule',
        audit: {
          async record(tx, detail = {}) {
            await fence(tx, detail.target!.id);
            await appendAudit(tx, { actor: SYSTEM_ACTOR, action: 'schedule.fire', result: 'success', target: detail.target, org: w.slug.split('/')[1], project: w.slug, detail: { ...detail.detail, cron: w.cron, workflows: w.workflows, fire_at: tick.fireAt.toISOString() } });
          },
        },
      });
    }
    return pipelineId!;
  };

  const cron: Cron = {
    async readScheduledWorkflows() {
      const at = now();
      let read = 0;
      for (const c of await configsToRead(store, 50)) {
        const found = c.config ? scheduledWorkflowsIn(c.config, c.default_branch) : { schedules: [], problems: [] };
        for (const problem of found.problems) log.warn('a scheduled workflow is not scheduled', { project: c.project_id, pipeline: c.pipeline_id, problem });
        await store.transaction(async (tx) => {
          if (!(await claimSource(tx, c.project_id, c.pipeline_id, c.pipeline_number, at))) return;
          for (const s of found.schedules) {
            await upsertScheduledWorkflow(tx, { id: randomUUID(), projectId: c.project_id, cron: s.cron, branch: s.branch, workflows: s.workflows, nextFireAt: cadenceOf(s.cron).next(at), now: at });
          }
          await deleteOtherScheduledWorkflows(tx, c.project_id, found.schedules);
          read++;
        });
      }
      return read;
    },

    async pass() {
      await cron.readScheduledWorkflows().catch((error) => log.error('reading scheduled workflows failed', { error: (error as Error).message }));
      const at = now();
      const { claimed, skipped } = await claimDue(at);
      const stale = await store.transaction((tx) => reclaimStaleTicks(tx, randomUUID(), at, new Date(at.getTime() - claimTimeoutMs), new Date(at.getTime() - CATCH_UP_WINDOW_MS), batch));
      const givenUp = await giveUpStaleTicks(store, new Date(at.getTime() - claimTimeoutMs), new Date(at.getTime() - CATCH_UP_WINDOW_MS));
      if (givenUp > 0) log.warn('schedule ticks claimed by a stopped process were too old to fire', { ticks: givenUp });
      const fired: CronPass['fired'][number][] = [];
      const failed: CronPass['failed'][number][] = [];
      // One at a time: each resolves its revision in git; a burst of schedules must not stall the process.
      for (const tick of [...claimed, ...stale]) {
        try {
          const pipelineId = await fire(tick);
          fired.push({ tick: tick.id, source: tick.source, fireAt: tick.fireAt, pipelineId });
        } catch (error) {
          const message = (error as Error).message;
          // A tick is always finished: fired, or failed with the reason (unless another process holds its claim now).
          await markFailed(store, tick.id, tick.claim, message).catch(() => undefined);
          failed.push({ tick: tick.id, source: tick.source, error: message });
          log.error('a scheduled pipeline could not be started', { source: tick.source, fireAt: tick.fireAt.toISOString(), error: message });
        }
      }
      if (at.getTime() - lastPrune > 3600_000) {
        lastPrune = at.getTime();
        await pruneTicks(store, new Date(at.getTime() - TICK_KEEP_MS)).catch((error) => log.error('forgetting old schedule ticks failed', { error: (error as Error).message }));
      }
      return { fired, failed, skipped };
    },
  };
  return cron;
}
