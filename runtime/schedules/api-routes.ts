import { Type } from '@sinclair/typebox';
import { auditOf, principalOf, type GyreApp } from '../api/http-app';
import { OneOf, Segment, SlugParams } from '../api/schemas';
import type { Projects } from '../projects/projects';
import type { Schedules } from './schedules';
import { DAYS_OF_WEEK, MONTHS } from './timetable';

/**
 * Schedules over CircleCI's API v2 paths and shapes (`../shared/reference`, operations
 * createSchedule, listSchedulesForProject, getScheduleById, updateSchedule, deleteScheduleById):
 * anyone who may read the project sees its schedules; who may trigger its pipelines (the write
 * role, or a project token with the trigger scope) creates, changes and deletes them. The body's
 * shape is checked here; what it means (ranges, days of the week or of the month, the time zone,
 * branch or tag) by the service, whose refusals name the field and what is allowed. The timetable
 * takes one field CircleCI's does not: `time-zone` (./timetable.ts).
 */
export interface ScheduleRouteDeps {
  readonly schedules: Schedules;
  readonly projects: Projects;
}

const SCHEDULES = '/api/v2/project/:vcs/:org/:repo/schedule';
const SCHEDULE = '/api/v2/schedule/:id';
const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;

const Hours = Type.Array(Type.Integer(), { maxItems: 24 * 4 });
const Timetable = Type.Object(
  {
    'per-hour': Type.Optional(Type.Integer()),
    'hours-of-day': Type.Optional(Hours),
    'days-of-week': Type.Optional(Type.Array(OneOf(DAYS_OF_WEEK), { maxItems: 7 * 4 })),
    'days-of-month': Type.Optional(Type.Array(Type.Integer(), { maxItems: 31 * 4 })),
    months: Type.Optional(Type.Array(OneOf(MONTHS), { maxItems: 12 * 4 })),
    // Gyre's own field: an IANA time zone name, checked (and refused by name) by the service.
    'time-zone': Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
const ParameterValue = Type.Union([Type.String({ maxLength: 64 * 1024 }), Type.Integer(), Type.Boolean()]);
const Parameters = Type.Record(Type.String({ maxLength: 256 }), ParameterValue, { maxProperties: 1000 });
const Attribution = OneOf(['current', 'system'] as const);
const Name = Type.String({ maxLength: 1000 });
const Description = Type.Union([Type.String({ maxLength: 64 * 1024 }), Type.Null()]);

const CreateBody = Type.Object(
  { name: Name, timetable: Timetable, 'attribution-actor': Attribution, parameters: Parameters, description: Type.Optional(Description) },
  { additionalProperties: false },
);
const UpdateBody = Type.Object(
  {
    name: Type.Optional(Name),
    timetable: Type.Optional(Timetable),
    'attribution-actor': Type.Optional(Attribution),
    parameters: Type.Optional(Parameters),
    description: Type.Optional(Description),
  },
  { additionalProperties: false },
);
const IdParams = Type.Object({ id: Segment });

export function registerScheduleRoutes(app: GyreApp, deps: ScheduleRouteDeps): void {
  const { schedules, projects } = deps;

  app.post(
    SCHEDULES,
    { config: { permission: 'project:trigger', action: 'schedule.create' }, schema: { params: SlugParams, body: CreateBody } },
    async (request, reply) => {
      const project = await projects.get(slugOf(request.params));
      const made = await schedules.create(project, request.body, principalOf(request), auditOf(request));
      reply.code(201);
      return made;
    },
  );

  app.get(
    SCHEDULES,
    { config: { permission: 'project:read' }, schema: { params: SlugParams, querystring: Type.Object({ 'page-token': Type.Optional(Type.String({ maxLength: 1000 })) }) } },
    async (request) => schedules.list(await projects.get(slugOf(request.params)), { pageToken: request.query['page-token'] }),
  );

  app.get(SCHEDULE, { config: { permission: 'project:read', of: 'schedule' }, schema: { params: IdParams } }, async (request) => schedules.get(request.params.id));

  app.patch(
    SCHEDULE,
    { config: { permission: 'project:trigger', of: 'schedule', action: 'schedule.update' }, schema: { params: IdParams, body: UpdateBody } },
    async (request) => schedules.update(request.params.id, request.body, principalOf(request), auditOf(request)),
  );

  app.delete(SCHEDULE, { config: { permission: 'project:trigger', of: 'schedule', action: 'schedule.delete' }, schema: { params: IdParams } }, async (request) => {
    await schedules.delete(request.params.id, auditOf(request));
    return { message: 'Schedule deleted.' };
  });
}
