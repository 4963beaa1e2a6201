import type { Queryable } from '../../store/store';
import type { Timetable } from '../timetable';

/** Schedules (API v2): plain SQL, one function per statement. */

export type AttributionActor = 'current' | 'system';
export type ScheduleParameters = Record<string, string | number | boolean>;

export interface ScheduleRow {
  id: string;
  project_id: string;
  slug: string;
  name: string;
  description: string | null;
  timetable: Timetable;
  attribution_actor: AttributionActor;
  actor_id: string | null;
  actor_login: string | null;
  actor_name: string | null;
  parameters: ScheduleParameters;
  next_fire_at: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

const COLUMNS = `s.id, s.project_id, pr.slug, s.name, s.description, s.timetable, s.attribution_actor, s.actor_id,
  u.login AS actor_login, u.name AS actor_name, s.parameters, s.next_fire_at, s.created_at, s.updated_at`;
const FROM = 'schedules s JOIN projects pr ON pr.id = s.project_id LEFT JOIN users u ON u.id = s.actor_id';

/** A schedule to insert: what a change sets, and its id and project. */
export interface NewSchedule extends ScheduleChange {
  readonly id: string;
  readonly projectId: string;
}

/** Inserts a schedule; false when the project has one of that name already. */
export async function insertSchedule(db: Queryable, s: NewSchedule): Promise<boolean> {
  const rows = await db.query(
    `INSERT INTO schedules (id, project_id, name, description, timetable, attribution_actor, actor_id, parameters, next_fire_at, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT (project_id, name) DO NOTHING RETURNING id`,
    [s.id, s.projectId, s.name, s.description, JSON.stringify(s.timetable), s.attributionActor, s.actorId, JSON.stringify(s.parameters), s.nextFireAt ?? null, s.now],
  );
  return rows.length === 1;
}

export async function scheduleById(db: Queryable, id: string, options: { forUpdate?: boolean } = {}): Promise<ScheduleRow | undefined> {
  const [row] = await db.query<ScheduleRow>(`SELECT ${COLUMNS} FROM ${FROM} WHERE s.id = $1${options.forUpdate ? ' FOR UPDATE OF s' : ''}`, [id]);
  return row;
}

/** A project's schedules oldest first, after the cursor. */
export async function schedulesOfProject(db: Queryable, projectId: string, after: { createdAt: string; id: string } | undefined, limit: number): Promise<ScheduleRow[]> {
  return db.query<ScheduleRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE s.project_id = $1 AND ($2::timestamptz IS NULL OR (s.created_at, s.id) > ($2::timestamptz, $3::uuid))
      ORDER BY s.created_at, s.id LIMIT $4`,
    [projectId, after?.createdAt ?? null, after?.id ?? null, limit],
  );
}

export interface ScheduleChange {
  readonly name: string;
  readonly description: string | null;
  readonly timetable: Timetable;
  readonly attributionActor: AttributionActor;
  readonly actorId: string;
  readonly parameters: ScheduleParameters;
  readonly nextFireAt: Date | undefined;
  readonly now: Date;
}

/** A schedule of the project with this name, other than `exceptId`. */
export async function scheduleNamed(db: Queryable, projectId: string, name: string, exceptId: string): Promise<boolean> {
  return (await db.query('SELECT 1 FROM schedules WHERE project_id = $1 AND name = $2 AND id <> $3', [projectId, name, exceptId])).length > 0;
}

/** Writes a schedule's new state. */
export async function updateSchedule(db: Queryable, id: string, c: ScheduleChange): Promise<void> {
  await db.query(
    `UPDATE schedules SET name = $2, description = $3, timetable = $4, attribution_actor = $5, actor_id = $6, parameters = $7, next_fire_at = $8, updated_at = $9
      WHERE id = $1`,
    [id, c.name, c.description, JSON.stringify(c.timetable), c.attributionActor, c.actorId, JSON.stringify(c.parameters), c.nextFireAt ?? null, c.now],
  );
}

export async function deleteSchedule(db: Queryable, id: string): Promise<boolean> {
  return (await db.query('DELETE FROM schedules WHERE id = $1 RETURNING id', [id])).length === 1;
}
