import { randomUUID } from 'node:crypto';
import type { Audit } from '../audit/audit-log';
import { cursorText, decodePageToken, encodePageToken } from '../api/read-model';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import type { Queryable, Store } from '../store/store';
import { ExpressionError, parseContextExpression, type ExpressionValue } from './expressions';
import type { SealedTable } from './rewrap';
import type { SecretBox } from './secret-box';
import * as sql from './sql/contexts';

/**
 * Contexts and project environment variables: named, encrypted variables a pipeline's jobs get
 * (CircleCI's contexts and Project Settings → Environment Variables).
 *
 * Values are sealed with the SecretBox as they arrive and stored sealed; every answer and every
 * audit record carries names and masked values (`xxxx` and the last four characters) only.
 * `resolveForTask` is the one place a value is opened: for a task whose project may use the
 * contexts it names, at the moment its agent needs them.
 *
 * Every change takes the request's `Audit` and records itself in the transaction that makes it.
 */
export interface Contexts {
  /** The organisation an API call names by id (`owner-id`) or slug (`owner-slug`, `gh/<org>`). */
  organization(ref: { readonly id?: string; readonly slug?: string }): Promise<{ id: string; name: string }>;
  /** Makes a context in an organisation; its name is unique there (409 otherwise). */
  create(orgId: string, name: string, audit?: Audit): Promise<ContextView>;
  /** An organisation's contexts by name, a page at a time (`page-token` from the last answer). */
  list(orgId: string, options?: PageOptions): Promise<Page<ContextView>>;
  /** A context; NotFoundError when there is none of that id. */
  get(contextId: string): Promise<ContextView & { readonly organization_id: string; readonly organization: string }>;
  /** Deletes a context with its variables and restrictions. */
  delete(contextId: string, audit?: Audit): Promise<void>;

  /**
   * Adds a variable to a context or replaces its value. The name is a shell variable name
   * (`^[A-Za-z_][A-Za-z0-9_]*$`, up to 300); the value at most 64 KiB of UTF-8 without NUL; a
   * context holds at most 1000 variables. Answers the variable without its value.
   */
  putVariable(contextId: string, name: string, value: string, audit?: Audit): Promise<ContextVariableView>;
  /** A context's variables by name with masked values. */
  listVariables(contextId: string, options?: PageOptions): Promise<Page<ContextVariableView>>;
  deleteVariable(contextId: string, name: string, audit?: Audit): Promise<void>;

  /**
   * Restricts who may use a context: `project` (a project id of the context's organisation),
   * `expression` (CircleCI's context expression language, runtime/secrets/expressions.ts) or
   * `group` (a group name from sign-in, taken as given). `projectId` is CircleCI's deprecated form of
   * a project restriction. At most 100 per context; the same one twice is a 409.
   */
  addRestriction(contextId: string, input: RestrictionInput, audit?: Audit): Promise<RestrictionView>;
  listRestrictions(contextId: string): Promise<Page<RestrictionView & { readonly context_id: string }>>;
  deleteRestriction(contextId: string, restrictionId: string, audit?: Audit): Promise<void>;

  /** Projects' own environment variables. */
  readonly projectVariables: ProjectVariables;

  /**
   * The environment a task gets: its project's variables, then each named context's in order (a
   * later one wins over an earlier one and over the project's, as in CircleCI). Refused (`ok:
   * false`, with a reason naming the context) when a context is not one of the project's
   * organisation, or any of its restrictions does not let this task through: the project must be
   * one of its project restrictions, the actor in one of its groups, and every expression true
   * (one that cannot be evaluated is false). A task of a forked pull request's pipeline, in a
   * project that does not pass secrets to forks, gets an empty environment, and is refused when it
   * names any context. The only place a value is opened; nothing is opened
   * for a refused task. Throws when a value cannot be opened (its wrapping key is gone, the KMS does
   * not answer, or the row was tampered with): that is no answer about the task.
   */
  resolveForTask(input: ResolveInput): Promise<{ ok: true; env: Record<string, string> } | { ok: false; reason: string }>;
  /**
   * Whether a task may have the contexts it names, by the same rules as `resolveForTask`, without
   * opening any value: the conductor asks this before it queues a job, and a job refused here ends
   * `unauthorized` without ever reaching an agent. `db`: the caller's transaction, if it has one.
   */
  authorize(input: ResolveInput, db?: Queryable): Promise<{ ok: true } | { ok: false; reason: string }>;
}

export interface ProjectVariables {
  /** Adds a variable to a project or replaces its value (the same rules as a context's). */
  put(project: ProjectRef, name: string, value: string, audit?: Audit): Promise<ProjectVariableView>;
  /** A project's variables by name with masked values. */
  list(projectId: string, options?: PageOptions): Promise<Page<ProjectVariableView>>;
  /** One variable with its masked value; NotFoundError when there is none of that name. */
  get(projectId: string, name: string): Promise<ProjectVariableView>;
  delete(project: ProjectRef, name: string, audit?: Audit): Promise<void>;
}

/** A project as the variable calls need it. */
export interface ProjectRef {
  readonly id: string;
  readonly slug: string;
  readonly org: string;
}

export interface PageOptions {
  readonly pageToken?: string;
  /** Items a page holds (1 to 1000). @default 100 */
  readonly limit?: number;
}

export interface Page<T> {
  readonly items: T[];
  readonly next_page_token: string | null;
}

/** CircleCI's `Context`. */
export interface ContextView {
  readonly id: string;
  readonly name: string;
  readonly created_at: string;
}

/** CircleCI's context environment variable, with the masked value (`xxxx1234`) as Gyre adds. */
export interface ContextVariableView {
  readonly variable: string;
  readonly context_id: string;
  readonly created_at: string;
  readonly updated_at: string;
  readonly value: string;
}

/** CircleCI's project `EnvironmentVariable`: the value is masked. */
export interface ProjectVariableView {
  readonly name: string;
  readonly value: string;
  readonly 'created-at': string;
}

export const RESTRICTION_TYPES = ['project', 'expression', 'group'] as const;
export type RestrictionType = (typeof RESTRICTION_TYPES)[number];

export interface RestrictionInput {
  readonly type?: string;
  readonly value?: string;
  /** CircleCI's deprecated form of a project restriction. */
  readonly projectId?: string;
}

/** CircleCI's restriction (`restriction_created`). */
export interface RestrictionView {
  readonly id: string;
  /** The project of a project restriction (CircleCI's deprecated field). */
  readonly project_id?: string;
  /** The project's slug for a project restriction; null otherwise. */
  readonly name: string | null;
  readonly restriction_type: RestrictionType;
  readonly restriction_value: string;
}

export interface ResolveInput {
  /** The project's organisation (`organizations.id`); contexts are looked up in it by name. */
  readonly orgId: string;
  readonly projectId: string;
  /** The job's `context:` names, in order. */
  readonly contextNames: readonly string[];
  readonly pipeline: {
    readonly branch?: string;
    readonly tag?: string;
    /**
     * The pipeline builds a pull request from a fork: unless the project allows it
     * (`forks_receive_secret_env_vars`), its tasks get no variables and naming a context is refused.
     */
    readonly fork?: boolean;
    /** Pipeline parameters: never read here (they cannot decide whether a context is available). */
    readonly parameters?: Readonly<Record<string, unknown>>;
    /**
     * Other pipeline values for expressions, by full name (`pipeline.number`, `pipeline.trigger_source`,
     * `job.ssh.enabled`, which is false unless given). A value not given makes an expression that reads it false.
     */
    readonly values?: Readonly<Record<string, ExpressionValue>>;
  };
  readonly actor: { readonly userId?: string; readonly groups?: readonly string[] };
  /**
   * The project's row (`projectId`'s) as read with the task (its facts, under its lease): the
   * checks use it instead of reading it again. Without it, or for another project, it is read.
   */
  readonly project?: sql.ProjectRow;
}

/** The tables whose values `rewrapAll` (runtime/secrets/rewrap.ts) moves to a new wrapping key. */
export const VARIABLE_TABLES: readonly SealedTable[] = [
  { table: 'context_variables', keyColumns: ['context_id', 'name'] },
  { table: 'project_variables', keyColumns: ['project_id', 'name'] },
];

/** Largest value, in bytes of UTF-8. */
export const MAX_VALUE_BYTES = 64 * 1024;
/** Most variables one context (or one project) holds. */
export const MAX_VARIABLES = 1000;
/** Most restrictions one context holds. */
export const MAX_RESTRICTIONS = 100;
/** Most contexts one task may name. */
const MAX_CONTEXTS_PER_TASK = 100;

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Control characters, and vertical whitespace beyond them. */
const CONTROL = /[\u0000-\u001f\u007f\u0085\u2028\u2029]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** What a list shows of a value: `xxxx` and its last four characters; `xxxx` alone for four or fewer (a list never shows a whole value). */
export function maskedValue(last4: string): string {
  return `xxxx${last4}`;
}

function last4Of(value: string): string {
  const chars = Array.from(value);
  return chars.length > 4 ? chars.slice(-4).join('') : '';
}

const quote = (s: string) => JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}…` : s);

/** A context name as CircleCI allows it: 1 to 200 characters, not blank, no leading, trailing or vertical whitespace. */
export function checkContextName(name: unknown): string {
  if (typeof name !== 'string') throw new InputError('name must be a string', 'name');
  if (name.length === 0 || name.length > 200) throw new InputError(`context name must be 1 to 200 characters (it has ${name.length})`, 'name');
  if (name.trim() === '') throw new InputError('context name must have a character that is not whitespace', 'name');
  if (name.trim() !== name) throw new InputError(`context name ${quote(name)} must not start or end with whitespace`, 'name');
  if (CONTROL.test(name)) throw new InputError(`context name ${quote(name)} must not hold control characters or line breaks`, 'name');
  return name;
}

/** An environment variable name: `^[A-Za-z_][A-Za-z0-9_]*$`, up to 300, and not `__proto__`. */
export function checkVariableName(name: unknown): string {
  if (typeof name !== 'string') throw new InputError('environment variable name must be a string', 'name');
  if (name.length === 0 || name.length > 300) throw new InputError(`environment variable name must be 1 to 300 characters (it has ${name.length})`, 'name');
  if (!VARIABLE_NAME.test(name)) throw new InputError(`environment variable name ${quote(name)} must start with a letter or _ and hold only letters, digits and _`, 'name');
  // A shell takes it, but JavaScript objects do not: env['__proto__'] = … sets a prototype.
  if (name === '__proto__') throw new InputError('environment variable name "__proto__" is reserved', 'name');
  return name;
}

/** A value: a string of at most 64 KiB of UTF-8, without NUL (no process environment can hold one). */
export function checkValue(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new InputError(`value of ${name} must be a string`, 'value');
  if (value.includes('\0')) throw new InputError(`value of ${name} holds a NUL character, which an environment variable cannot hold`, 'value');
  if (LONE_SURROGATE.test(value)) throw new InputError(`value of ${name} is not valid Unicode (it holds a lone surrogate)`, 'value');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_VALUE_BYTES) throw new InputError(`value of ${name} is ${bytes} bytes; a value may be at most ${MAX_VALUE_BYTES} bytes (64 KiB)`, 'value');
  return value;
}

const iso = (d: Date | string) => new Date(d).toISOString();

const contextView = (r: sql.ContextRow): ContextView => ({ id: r.id, name: r.name, created_at: iso(r.created_at) });

const contextVariableView = (contextId: string, r: sql.VariableRow): ContextVariableView => ({
  variable: r.name,
  context_id: contextId,
  created_at: iso(r.created_at),
  updated_at: iso(r.updated_at),
  value: maskedValue(r.last4),
});

const projectVariableView = (r: sql.VariableRow): ProjectVariableView => ({ name: r.name, value: maskedValue(r.last4), 'created-at': iso(r.created_at) });

function restrictionView(r: sql.RestrictionRow): RestrictionView {
  return {
    id: r.id,
    ...(r.restriction_type === 'project' ? { project_id: r.restriction_value } : {}),
    name: r.name,
    restriction_type: r.restriction_type,
    restriction_value: r.restriction_value,
  };
}

/** The additional data a value is sealed with: it opens only in its own row. */
const contextAad = (contextId: string, name: string) => `context-variable:${contextId}:${name}`;
const projectAad = (projectId: string, name: string) => `project-variable:${projectId}:${name}`;

function pageLimit(options: PageOptions | undefined): number {
  const limit = options?.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new InputError(`limit (${limit}) must be a whole number from 1 to 1000`, 'limit');
  return limit;
}

function afterOf(options: PageOptions | undefined): string | undefined {
  return decodePageToken<{ after?: string }>(options?.pageToken, (c) => cursorText(c.after) && typeof c.after === 'string')?.after;
}

/** Rows fetched one past the limit → a page and the token of the next. */
function pageOf<R extends { name: string }, T>(rows: R[], limit: number, view: (r: R) => T): Page<T> {
  const more = rows.length > limit;
  const shown = rows.slice(0, limit);
  return { items: shown.map(view), next_page_token: more ? encodePageToken({ after: shown[shown.length - 1].name }) : null };
}

export function createContexts({ store, box }: { store: Store; box: SecretBox }): Contexts {
  const contextOrFail = async (db: Parameters<typeof sql.contextById>[0], id: string, lock = false) => {
    const row = UUID.test(id) ? await sql.contextById(db, id, lock) : undefined;
    if (!row) throw new NotFoundError('context', id);
    return row;
  };

  /** Seals a value for its row and puts it; refuses a new name past MAX_VARIABLES. */
  const put = async (
    tx: Parameters<typeof sql.putVariable>[0],
    where: sql.VariableTable,
    ownerId: string,
    name: string,
    value: string,
    aad: string,
    what: string,
  ) => {
    if (!(await sql.variableExists(tx, where, ownerId, name)) && (await sql.countVariables(tx, where, ownerId)) >= MAX_VARIABLES) {
      throw new InputError(`${what} already holds ${MAX_VARIABLES} environment variables, the most it may; delete one before adding ${name}`, 'name');
    }
    const sealed = await box.seal(value, aad);
    return sql.putVariable(tx, where, ownerId, name, sealed, last4Of(value));
  };

  const projectVariables: ProjectVariables = {
    async put(project, rawName, rawValue, audit) {
      const name = checkVariableName(rawName);
      const value = checkValue(rawValue, name);
      return store.transaction(async (tx) => {
        // The project row is held while counting, so two writers cannot both add the 1000th.
        const [held] = await tx.query('SELECT id FROM projects WHERE id = $1 FOR UPDATE', [project.id]);
        if (!held) throw new NotFoundError('project', project.slug);
        const row = await put(tx, sql.PROJECT_VARIABLES, project.id, name, value, projectAad(project.id, name), `project ${project.slug}`);
        await audit?.record(tx, { target: { type: 'project', id: project.slug }, org: project.org, project: project.slug, detail: { variable: name, created: row.created } });
        return projectVariableView(row);
      });
    },
    async list(projectId, options) {
      const limit = pageLimit(options);
      return pageOf(await sql.listVariables(store, sql.PROJECT_VARIABLES, projectId, afterOf(options), limit + 1), limit, projectVariableView);
    },
    async get(projectId, name) {
      const row = await sql.variableByName(store, sql.PROJECT_VARIABLES, projectId, name);
      if (!row) throw new NotFoundError('environment variable', name);
      return projectVariableView(row);
    },
    async delete(project, name, audit) {
      await store.transaction(async (tx) => {
        if (!(await sql.deleteVariable(tx, sql.PROJECT_VARIABLES, project.id, name))) throw new NotFoundError('environment variable', name);
        await audit?.record(tx, { target: { type: 'project', id: project.slug }, org: project.org, project: project.slug, detail: { variable: name } });
      });
    },
  };

  return {
    projectVariables,

    async organization(ref) {
      if (ref.id !== undefined && ref.slug !== undefined) throw new InputError('give owner-id or owner-slug, not both', 'owner-id');
      if (ref.id !== undefined) {
        if (!UUID.test(ref.id)) throw new InputError(`owner-id '${ref.id.slice(0, 100)}' must be an organization id (a UUID)`, 'owner-id');
        const org = await sql.orgById(store, ref.id);
        if (!org) throw new NotFoundError('organization', ref.id);
        return org;
      }
      if (ref.slug !== undefined) {
        const m = /^(?:gh|github)\/([^/]+)$/.exec(ref.slug);
        if (!m) throw new InputError(`owner-slug '${ref.slug.slice(0, 100)}' must look like gh/<org>`, 'owner-slug');
        const org = await sql.orgByName(store, m[1]);
        if (!org) throw new NotFoundError('organization', `gh/${m[1]}`);
        return org;
      }
      throw new InputError('owner-id or owner-slug is required: the organization the contexts belong to', 'owner-id');
    },

    async create(orgId, rawName, audit) {
      const name = checkContextName(rawName);
      return store.transaction(async (tx) => {
        const org = await sql.orgById(tx, orgId);
        if (!org) throw new NotFoundError('organization', orgId);
        const row = await sql.insertContext(tx, { id: randomUUID(), orgId, name });
        if (!row) throw new ConflictError(`a context named ${quote(name)} already exists in organization gh/${org.name}`);
        await audit?.record(tx, { target: { type: 'context', id: row.id }, org: org.name, detail: { name } });
        return contextView(row);
      });
    },

    async list(orgId, options) {
      const limit = pageLimit(options);
      return pageOf(await sql.listContexts(store, orgId, afterOf(options), limit + 1), limit, contextView);
    },

    async get(contextId) {
      const row = await contextOrFail(store, contextId);
      return { ...contextView(row), organization_id: row.organization_id, organization: row.org };
    },

    async delete(contextId, audit) {
      await store.transaction(async (tx) => {
        const row = await contextOrFail(tx, contextId, true);
        const counts = await sql.deleteContext(tx, row.id);
        if (!counts) throw new NotFoundError('context', contextId);
        await audit?.record(tx, { target: { type: 'context', id: row.id }, org: row.org, detail: { name: row.name, ...counts } });
      });
    },

    async putVariable(contextId, rawName, rawValue, audit) {
      const name = checkVariableName(rawName);
      const value = checkValue(rawValue, name);
      return store.transaction(async (tx) => {
        // The context row is held while counting, so two writers cannot both add the 1000th.
        const context = await contextOrFail(tx, contextId, true);
        const row = await put(tx, sql.CONTEXT_VARIABLES, context.id, name, value, contextAad(context.id, name), `context ${quote(context.name)}`);
        await audit?.record(tx, { target: { type: 'context', id: context.id }, org: context.org, detail: { context: context.name, variable: name, created: row.created } });
        return contextVariableView(context.id, row);
      });
    },

    async listVariables(contextId, options) {
      const limit = pageLimit(options);
      const context = await contextOrFail(store, contextId);
      return pageOf(await sql.listVariables(store, sql.CONTEXT_VARIABLES, context.id, afterOf(options), limit + 1), limit, (r) => contextVariableView(context.id, r));
    },

    async deleteVariable(contextId, name, audit) {
      await store.transaction(async (tx) => {
        const context = await contextOrFail(tx, contextId);
        if (!(await sql.deleteVariable(tx, sql.CONTEXT_VARIABLES, context.id, name))) throw new NotFoundError('environment variable', name);
        await audit?.record(tx, { target: { type: 'context', id: context.id }, org: context.org, detail: { context: context.name, variable: name } });
      });
    },

    async addRestriction(contextId, input, audit) {
      let type = input.type;
      let value = input.value;
      if (input.projectId !== undefined) {
        if (type !== undefined || value !== undefined) throw new InputError('project_id is the deprecated form of a project restriction: send it alone, or restriction_type and restriction_value instead', 'project_id');
        type = 'project';
        value = input.projectId;
      }
      if (type === undefined) throw new InputError(`restriction_type is required (allowed: ${RESTRICTION_TYPES.join(', ')})`, 'restriction_type');
      if (!(RESTRICTION_TYPES as readonly string[]).includes(type)) throw new InputError(`restriction_type ${quote(type)} is not one of ${RESTRICTION_TYPES.join(', ')}`, 'restriction_type');
      if (typeof value !== 'string' || value === '') throw new InputError('restriction_value is required', 'restriction_value');
      return store.transaction(async (tx) => {
        const context = await contextOrFail(tx, contextId, true);
        let name: string | null = null;
        if (type === 'project') {
          const project = UUID.test(value!) ? await sql.projectById(tx, value!) : undefined;
          if (!project || project.organization_id !== context.organization_id) {
            throw new InputError(`restriction_value ${quote(value!)}: project does not exist in organization gh/${context.org} (a project restriction takes the id of one of its projects)`, 'restriction_value');
          }
          name = project.slug;
        } else if (type === 'expression') {
          try {
            parseContextExpression(value!);
          } catch (error) {
            if (error instanceof ExpressionError) throw new InputError(`restriction_value is not a context expression: ${error.message}`, 'restriction_value');
            throw error;
          }
        } else {
          if (value!.length > 256 || value!.trim() !== value || CONTROL.test(value!)) {
            throw new InputError('restriction_value of a group restriction is a group name: up to 256 characters, without control characters or surrounding whitespace', 'restriction_value');
          }
        }
        if ((await sql.countRestrictions(tx, context.id)) >= MAX_RESTRICTIONS) throw new InputError(`context ${quote(context.name)} already has ${MAX_RESTRICTIONS} restrictions, the most it may`, 'restriction_value');
        const row = await sql.insertRestriction(tx, { id: randomUUID(), contextId: context.id, type: type as RestrictionType, value: value!, name });
        if (!row) throw new ConflictError("The restriction you're trying to add already exists.");
        await audit?.record(tx, { target: { type: 'context', id: context.id }, org: context.org, detail: { context: context.name, restriction: row.id, restriction_type: row.restriction_type, restriction_value: row.restriction_value } });
        return restrictionView(row);
      });
    },

    async listRestrictions(contextId) {
      const context = await contextOrFail(store, contextId);
      const rows = await sql.listRestrictions(store, context.id);
      return { items: rows.map((r) => ({ context_id: r.context_id, ...restrictionView(r) })), next_page_token: null };
    },

    async deleteRestriction(contextId, restrictionId, audit) {
      await store.transaction(async (tx) => {
        const context = await contextOrFail(tx, contextId);
        const gone = UUID.test(restrictionId) ? await sql.deleteRestriction(tx, context.id, restrictionId) : undefined;
        if (!gone) throw new NotFoundError('restriction', restrictionId);
        await audit?.record(tx, { target: { type: 'context', id: context.id }, org: context.org, detail: { context: context.name, restriction: gone.id, restriction_type: gone.restriction_type, restriction_value: gone.restriction_value } });
      });
    },

    async resolveForTask(input) {
      // The project's sealed variables are read beside the checks (on the way to every task's first
      // command); nothing read is opened unless the checks let the task through.
      const projectRows = UUID.test(input.projectId) ? sql.sealedVariables(store, sql.PROJECT_VARIABLES, input.projectId) : Promise.resolve([]);
      projectRows.catch(() => undefined);
      const checked = await check(input);
      if (!checked.ok) return checked;
      const { project, contexts } = checked;
      const env: Record<string, string> = {};
      if (checked.withheld) return { ok: true, env };
      const open = async (rows: sql.SealedRow[], aad: (name: string) => string) => {
        for (const row of rows) {
          if (row.name === '__proto__') continue;
          env[row.name] = await box.open(sql.sealedOf(row), aad(row.name));
        }
      };
      await open(await projectRows, (name) => projectAad(project.id, name));
      for (const context of contexts) await open(await sql.sealedVariables(store, sql.CONTEXT_VARIABLES, context.id), (name) => contextAad(context.id, name));
      return { ok: true, env };
    },

    async authorize(input, db = store) {
      const checked = await check(input, db);
      return checked.ok ? { ok: true } : checked;
    },
  };

  /** The project and the contexts a task names, once every restriction let it through. */
  async function check(input: ResolveInput, db: Queryable = store) {
      const refuse = (reason: string) => ({ ok: false as const, reason });
      const project = input.project?.id === input.projectId ? input.project : UUID.test(input.projectId) ? await sql.projectById(db, input.projectId) : undefined;
      if (!project) return refuse(`project ${input.projectId} does not exist`);
      if (project.organization_id !== input.orgId) return refuse(`project ${project.slug} is not in organization ${input.orgId}`);
      if (input.contextNames.length > MAX_CONTEXTS_PER_TASK) return refuse(`a job may name at most ${MAX_CONTEXTS_PER_TASK} contexts (this one names ${input.contextNames.length})`);
      // A fork's author wrote this config: it gets none of the project's secrets unless the project
      // says forks may have them (CircleCI's "Pass secrets to builds from forked pull requests").
      const withheld = input.pipeline.fork === true && !project.forks_receive_secret_env_vars;
      if (withheld && input.contextNames.length > 0) {
        return refuse(`Unauthorized: contexts are not passed to pipelines of forked pull requests (project ${project.slug} does not pass secrets to forks: forks_receive_secret_env_vars is off)`);
      }

      const values: Record<string, ExpressionValue> = { 'job.ssh.enabled': false, ...(input.pipeline.values ?? {}) };
      if (input.pipeline.branch !== undefined) values['pipeline.git.branch'] = input.pipeline.branch;
      if (input.pipeline.tag !== undefined) values['pipeline.git.tag'] = input.pipeline.tag;
      values['pipeline.project.slug'] ??= project.slug;
      const groups = new Set(input.actor.groups ?? []);

      // Every context is found and let through before any value is opened.
      const contexts: sql.ContextRow[] = [];
      for (const name of input.contextNames) {
        const context = typeof name === 'string' ? await sql.contextByName(db, input.orgId, name) : undefined;
        if (!context) return refuse(`context ${quote(String(name))} does not exist in organization gh/${project.org}`);
        const restrictions = await sql.listRestrictions(db, context.id);
        const of = (type: RestrictionType) => restrictions.filter((r) => r.restriction_type === type);
        const projects = of('project');
        if (projects.length > 0 && !projects.some((r) => r.restriction_value === project.id)) {
          return refuse(`Unauthorized: context ${quote(context.name)} is restricted to other projects than ${project.slug}`);
        }
        const groupRestrictions = of('group');
        if (groupRestrictions.length > 0 && !groupRestrictions.some((r) => groups.has(r.restriction_value))) {
          return refuse(`Unauthorized: context ${quote(context.name)} is restricted to security groups the actor who started this job is not in`);
        }
        for (const r of of('expression')) {
          let verdict: { allowed: boolean; reason?: string };
          try {
            verdict = parseContextExpression(r.restriction_value).evaluate(values);
          } catch (error) {
            verdict = { allowed: false, reason: (error as Error).message };
          }
          if (!verdict.allowed) return refuse(`Unauthorized: context ${quote(context.name)} has an expression restriction this job does not meet: ${verdict.reason}`);
        }
        contexts.push(context);
      }

      return { ok: true as const, project, contexts, withheld };
  }
}
