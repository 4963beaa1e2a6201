import type { Queryable } from '../../store/store';
import type { Timetable } from '../timetable';
import type { AttributionActor, ScheduleParameters } from './schedules';

/**
 * Ticks: due schedules and scheduled workflows are claimed `FOR UPDATE SKIP LOCKED`, and the tick
 * to fire is inserted with a unique (schedule, fire time), so whichever process inserts it is the
 * one that fires it. Plain SQL, one function per statement.
 */

/** What fires a tick: a schedule (API v2) or a scheduled workflow (`triggers: schedule`). */
export type TickSource = { readonly kind: 'schedule'; readonly id: string } | { readonly kind: 'workflow'; readonly id: string };

export interface DueSchedule {
  id: string;
  timetable: Timetable;
  next_fire_at: Date;
}

export interface DueScheduledWorkflow {
  id: string;
  cron: string;
  next_fire_at: Date;
}

/** Schedules whose next tick has come, locked for this transaction; those another process holds are skipped. */
export async function lockDueSchedules(tx: Queryable, now: Date, limit: number): Promise<DueSchedule[]> {
  const rows = await tx.query<DueSchedule>(
    'SELECT id, timetable, next_fire_at FROM schedules WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED',
    [now, limit],
  );
  return rows.map((r) => ({ ...r, next_fire_at: new Date(r.next_fire_at) }));
}

export async function lockDueScheduledWorkflows(tx: Queryable, now: Date, limit: number): Promise<DueScheduledWorkflow[]> {
  const rows = await tx.query<DueScheduledWorkflow>(
    'SELECT id, cron, next_fire_at FROM scheduled_workflows WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED',
    [now, limit],
  );
  return rows.map((r) => ({ ...r, next_fire_at: new Date(r.next_fire_at) }));
}

export async function setNextFireAt(tx: Queryable, source: TickSource, next: Date | undefined): Promise<void> {
  await tx.query(`UPDATE ${source.kind === 'schedule' ? 'schedules' : 'scheduled_workflows'} SET next_fire_at = $2 WHERE id = $1`, [source.id, next ?? null]);
}

/** Inserts a claimed tick; false when the tick exists already (someone else claimed it). */
export async function insertTick(tx: Queryable, tick: { id: string; source: TickSource; fireAt: Date; claim: string; now: Date }): Promise<boolean> {
  const rows = await tx.query(
    `INSERT INTO schedule_ticks (id, schedule_id, scheduled_workflow_id, fire_at, claim, claimed_at) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT DO NOTHING RETURNING id`,
    [tick.id, tick.source.kind === 'schedule' ? tick.source.id : null, tick.source.kind === 'workflow' ? tick.source.id : null, tick.fireAt, tick.claim, tick.now],
  );
  return rows.length === 1;
}

/** Marks a tick fired with its pipeline, while `claim` is still the tick's claim; false otherwise. */
export async function markFired(tx: Queryable, tickId: string, claim: string, pipelineId: string): Promise<boolean> {
  const rows = await tx.query(`UPDATE schedule_ticks SET state = 'fired', pipeline_id = $3 WHERE id = $1 AND claim = $2 AND state = 'claimed' RETURNING id`, [tickId, claim, pipelineId]);
  return rows.length === 1;
}

/** Marks a tick failed (its pipeline could not be created), while `claim` is still the tick's claim. */
export async function markFailed(db: Queryable, tickId: string, claim: string, error: string): Promise<void> {
  await db.query(`UPDATE schedule_ticks SET state = 'failed', error = $3 WHERE id = $1 AND claim = $2 AND state = 'claimed'`, [tickId, claim, error.slice(0, 2000)]);
}

export interface ClaimedTick {
  id: string;
  source: TickSource;
  fireAt: Date;
  claim: string;
}

/**
 * Claims again the ticks whose claim was made before `staleBefore` and never fired (the process
 * that made it stopped), among those at or after `firedAfter` (within the catch-up window).
 */
export async function reclaimStaleTicks(tx: Queryable, claim: string, now: Date, staleBefore: Date, firedAfter: Date, limit: number): Promise<ClaimedTick[]> {
  const rows = await tx.query<{ id: string; schedule_id: string | null; scheduled_workflow_id: string | null; fire_at: Date; claim: string }>(
    `UPDATE schedule_ticks SET claim = $1, claimed_at = $2
      WHERE id IN (SELECT id FROM schedule_ticks WHERE state = 'claimed' AND claimed_at < $3 AND fire_at >= $4 ORDER BY claimed_at LIMIT $5 FOR UPDATE SKIP LOCKED)
      RETURNING id, schedule_id, scheduled_workflow_id, fire_at, claim`,
    [claim, now, staleBefore, firedAfter, limit],
  );
  return rows.map((r) => ({
    id: r.id,
    source: r.schedule_id ? { kind: 'schedule', id: r.schedule_id } : { kind: 'workflow', id: r.scheduled_workflow_id! },
    fireAt: new Date(r.fire_at),
    claim: r.claim,
  }));
}

/** Stale claims of ticks older than the catch-up window are given up: they will not fire. */
export async function giveUpStaleTicks(db: Queryable, staleBefore: Date, firedBefore: Date): Promise<number> {
  const rows = await db.query(
    `UPDATE schedule_ticks SET state = 'missed', error = 'claimed by a process that stopped before firing it, and now older than the catch-up window'
      WHERE state = 'claimed' AND claimed_at < $1 AND fire_at < $2 RETURNING id`,
    [staleBefore, firedBefore],
  );
  return rows.length;
}

/** Forgets handled ticks that fired before `before` (their pipelines stay). */
export async function pruneTicks(db: Queryable, before: Date): Promise<number> {
  return (await db.query(`DELETE FROM schedule_ticks WHERE fire_at < $1 AND state <> 'claimed' RETURNING id`, [before])).length;
}

/** What firing a schedule's tick needs. */
export interface ScheduleFiring {
  schedule_id: string;
  name: string;
  slug: string;
  parameters: ScheduleParameters;
  attribution_actor: AttributionActor;
  actor_id: string | null;
  actor_login: string | null;
}

export async function scheduleFiring(db: Queryable, scheduleId: string): Promise<ScheduleFiring | undefined> {
  const [row] = await db.query<ScheduleFiring>(
    `SELECT s.id AS schedule_id, s.name, pr.slug, s.parameters, s.attribution_actor, s.actor_id, u.login AS actor_login
       FROM schedules s JOIN projects pr ON pr.id = s.project_id LEFT JOIN users u ON u.id = s.actor_id WHERE s.id = $1`,
    [scheduleId],
  );
  return row;
}

/** What firing a scheduled workflow's tick needs. */
export interface ScheduledWorkflowFiring {
  slug: string;
  branch: string;
  cron: string;
  workflows: string[];
}

export async function scheduledWorkflowFiring(db: Queryable, id: string): Promise<ScheduledWorkflowFiring | undefined> {
  const [row] = await db.query<ScheduledWorkflowFiring>(
    'SELECT pr.slug, sw.branch, sw.cron, sw.workflows FROM scheduled_workflows sw JOIN projects pr ON pr.id = sw.project_id WHERE sw.id = $1',
    [id],
  );
  return row;
}
