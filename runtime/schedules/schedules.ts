import { randomUUID } from 'node:crypto';
import type { Audit } from '../audit/audit-log';
import { decodePageToken, encodePageToken } from '../api/read-model';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import { SYSTEM_ACTOR_ID, type Principal } from '../domain/principal';
import type { Project } from '../projects/projects';
import type { Store } from '../store/store';
import { deleteSchedule, insertSchedule, scheduleById, scheduleNamed, schedulesOfProject, updateSchedule, type AttributionActor, type ScheduleParameters, type ScheduleRow } from './sql/schedules';
import { checkTimetable, DEFAULT_TIME_ZONE, mergeTimetable, timetableCadence, type Timetable } from './timetable';

/**
 * Schedules (CircleCI API v2 `/project/{slug}/schedule`, `/schedule/{id}`): what the API creates,
 * lists, reads, changes and deletes. The cron role fires them (./cron.ts). Every change is checked
 * here, so the routes only parse: a refusal is an InputError naming the field and what is allowed.
 */

/** The schedule's actor as the API shows it when pipelines run as no user (`attribution-actor: system`). */
export const SYSTEM_ACTOR_VIEW = { id: SYSTEM_ACTOR_ID, login: 'system-actor', name: 'Scheduled' } as const;

/** A schedule as API v2 shows it. */
export interface ScheduleView {
  readonly id: string;
  readonly name: string;
  readonly description: string | null;
  readonly timetable: Timetable;
  readonly 'project-slug': string;
  readonly actor: { readonly id: string; readonly login: string; readonly name: string };
  readonly parameters: ScheduleParameters;
  readonly 'created-at': string;
  readonly 'updated-at': string;
}

export interface ScheduleInput {
  readonly name?: string;
  readonly description?: string | null;
  readonly timetable?: Record<string, unknown>;
  readonly 'attribution-actor'?: AttributionActor;
  readonly parameters?: ScheduleParameters;
}

export interface Schedules {
  create(project: Project, input: ScheduleInput, by: Principal, audit?: Audit): Promise<ScheduleView>;
  list(project: Project, options?: { pageToken?: string }): Promise<{ items: ScheduleView[]; next_page_token: string | null }>;
  get(id: string): Promise<ScheduleView>;
  /** Changes the fields given; the caller becomes the schedule's actor (for `attribution-actor: current`). */
  update(id: string, change: ScheduleInput, by: Principal, audit?: Audit): Promise<ScheduleView>;
  delete(id: string, audit?: Audit): Promise<void>;
}

const PAGE_SIZE = 20;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function createSchedules({ store, now = () => new Date() }: { store: Store; now?: () => Date }): Schedules {
  const find = async (tx: Parameters<typeof scheduleById>[0], id: string, forUpdate = false): Promise<ScheduleRow> => {
    const row = UUID.test(id) ? await scheduleById(tx, id, { forUpdate }) : undefined;
    if (!row) throw new NotFoundError('schedule', id);
    return row;
  };

  return {
    async create(project, input, by, audit) {
      const name = checkName(input.name);
      const timetable = checkTimetable(input.timetable);
      const parameters = checkParameters(input.parameters);
      const attributionActor = input['attribution-actor'];
      if (attributionActor === undefined) throw new InputError("attribution-actor is required (allowed: 'current', 'system')", 'attribution-actor');
      const id = randomUUID();
      const at = now();
      return store.transaction(async (tx) => {
        const made = await insertSchedule(tx, {
          id,
          projectId: project.id,
          name,
          description: input.description ?? null,
          timetable,
          attributionActor,
          actorId: by.userId,
          parameters,
          nextFireAt: timetableCadence(timetable).next(at),
          now: at,
        });
        if (!made) throw new ConflictError(`${project.slug} has a schedule named '${name}' already`);
        await audit?.record(tx, { target: { type: 'schedule', id }, project: project.slug, detail: { name, attribution_actor: attributionActor } });
        return viewOf(await find(tx, id));
      });
    },

    async list(project, options = {}) {
      const cursor = decodePageToken<{ after: string; id: string }>(options.pageToken, (c) => typeof c.after === 'string' && !Number.isNaN(Date.parse(c.after)) && typeof c.id === 'string' && UUID.test(c.id));
      const rows = await schedulesOfProject(store, project.id, cursor ? { createdAt: cursor.after, id: cursor.id } : undefined, PAGE_SIZE + 1);
      const items = rows.slice(0, PAGE_SIZE);
      const last = items[items.length - 1];
      return { items: items.map(viewOf), next_page_token: rows.length > PAGE_SIZE ? encodePageToken({ after: new Date(last.created_at).toISOString(), id: last.id }) : null };
    },

    async get(id) {
      return viewOf(await find(store, id));
    },

    async update(id, change, by, audit) {
      const at = now();
      return store.transaction(async (tx) => {
        const row = await find(tx, id, true);
        const name = change.name === undefined ? row.name : checkName(change.name);
        const timetable = change.timetable === undefined ? row.timetable : checkTimetable(mergeTimetable(row.timetable, change.timetable));
        const parameters = change.parameters === undefined ? row.parameters : checkParameters(change.parameters);
        const description = change.description === undefined ? row.description : change.description;
        const attributionActor = change['attribution-actor'] ?? row.attribution_actor;
        if (name !== row.name && (await scheduleNamed(tx, row.project_id, name, id))) throw new ConflictError(`${row.slug} has a schedule named '${name}' already`);
        // A changed timetable starts from now; an unchanged one keeps the tick it was waiting for.
        const nextFireAt = change.timetable === undefined ? (row.next_fire_at ? new Date(row.next_fire_at) : undefined) : timetableCadence(timetable).next(at);
        await updateSchedule(tx, id, { name, description, timetable, attributionActor, actorId: by.userId, parameters, nextFireAt, now: at });
        await audit?.record(tx, { target: { type: 'schedule', id }, project: row.slug, detail: { name, changed: Object.keys(change).filter((k) => change[k as keyof ScheduleInput] !== undefined) } });
        return viewOf(await find(tx, id));
      });
    },

    async delete(id, audit) {
      await store.transaction(async (tx) => {
        const row = await find(tx, id, true);
        await deleteSchedule(tx, id);
        await audit?.record(tx, { target: { type: 'schedule', id }, project: row.slug, detail: { name: row.name } });
      });
    },
  };
}

function viewOf(row: ScheduleRow): ScheduleView {
  const user = row.attribution_actor === 'current' && row.actor_id ? { id: row.actor_id, login: row.actor_login ?? '', name: row.actor_name ?? row.actor_login ?? '' } : SYSTEM_ACTOR_VIEW;
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    // Timetables stored before time zones existed have none: they are UTC.
    timetable: { ...row.timetable, 'time-zone': row.timetable['time-zone'] ?? DEFAULT_TIME_ZONE },
    'project-slug': row.slug,
    actor: user,
    parameters: row.parameters,
    'created-at': new Date(row.created_at).toISOString(),
    'updated-at': new Date(row.updated_at).toISOString(),
  };
}

function checkName(name: string | undefined): string {
  if (name === undefined) throw new InputError('name is required', 'name');
  const trimmed = name.trim();
  if (trimmed === '') throw new InputError('name must not be empty', 'name');
  return trimmed;
}

/**
 * The schedule's pipeline parameters: `branch` or `tag` (the ref its pipelines build; not both) and
 * the config's pipeline parameters, which the compiler checks against `parameters:` when it fires.
 */
export function checkParameters(parameters: ScheduleParameters | undefined): ScheduleParameters {
  if (parameters === undefined) throw new InputError('parameters is required and must hold branch or tag (e.g. {"branch": "main"})', 'parameters');
  const { branch, tag } = parameters;
  if (branch !== undefined && tag !== undefined) throw new InputError('parameters must hold branch or tag, not both', 'parameters.tag');
  if (branch === undefined && tag === undefined) throw new InputError('parameters must hold branch or tag (the ref the scheduled pipelines build, e.g. {"branch": "main"})', 'parameters.branch');
  const ref = branch !== undefined ? 'branch' : 'tag';
  const value = parameters[ref];
  if (typeof value !== 'string' || value.trim() === '') throw new InputError(`parameters.${ref} must be a non-empty string naming a ${ref}`, `parameters.${ref}`);
  return parameters;
}
