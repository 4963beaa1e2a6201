import { randomBytes } from 'node:crypto';
import type { Audit } from '../audit/audit-log';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import { hashToken } from '../identity/identity';
import type { Store } from '../store/store';
import { isPlatformClass } from './unserved-classes';

export const DRIVERS = ['builtin', 'runner', 'nomad'] as const;
export type DriverName = (typeof DRIVERS)[number];

/** A resource class as the admin defined it: where (driver) and how big (cpu, memory) a job runs. */
export interface ResourceClass {
  readonly name: string;
  readonly cpu: number;
  readonly memoryMb: number;
  readonly driver: DriverName;
}

export interface ResourceClasses {
  /** `audit`, here and below, is recorded in the transaction of the change. */
  add(rc: ResourceClass, audit?: Audit): Promise<ResourceClass>;
  list(): Promise<ResourceClass[]>;
  get(name: string): Promise<ResourceClass | undefined>;
  /** Issues a runner token for a class and returns it in clear, once. */
  createRunnerToken(name: string, label?: string, audit?: Audit): Promise<string>;
  /** The class a runner token belongs to, or undefined for an unknown token. */
  classOfRunnerToken(token: string): Promise<string | undefined>;
  /** The runner tokens of a class (never the tokens themselves): id, label, when made and last used. */
  listRunnerTokens(name: string): Promise<RunnerTokenView[]>;
  /** Revokes a runner token at once: its next claim is refused. */
  revokeRunnerToken(id: string, audit?: Audit): Promise<void>;
  /** Records that a runner asked for work (for the runners list). */
  runnerSeen(runnerId: string, resourceClass: string): Promise<void>;
  /** Sets (or with `undefined` removes) the concurrency limit of a project slug or an organisation. */
  setLimit(scope: 'project' | 'org', key: string, maxRunning: number | undefined, audit?: Audit): Promise<void>;
}

const NAME = /^[a-z0-9][a-z0-9._/-]{0,99}$/i;
/**
 * A runner class is `<namespace>/<name>`, as CircleCI's are; the namespace is the organisation
 * whose jobs its runners may claim (the org segment of project slugs).
 */
const RUNNER_CLASS = /^([A-Za-z0-9][A-Za-z0-9._-]{0,99})\/([a-z0-9][a-z0-9._-]{0,99})$/i;

export interface RunnerTokenView {
  readonly id: string;
  readonly label: string;
  readonly createdAt: string;
  readonly lastUsedAt: string | null;
}

/** The organisation a resource class's runners may serve: the namespace of a runner class, else none. */
export function namespaceOf(resourceClass: string): string | undefined {
  return RUNNER_CLASS.exec(resourceClass)?.[1];
}

export function validateResourceClass(input: { name?: unknown; cpu?: unknown; memory?: unknown; memory_mb?: unknown; driver?: unknown }): ResourceClass {
  const name = String(input.name ?? '');
  if (!NAME.test(name)) throw new InputError(`name '${name}' must be 1-100 letters, digits, '.', '_', '/' or '-'`, 'name');
  const cpu = Number(input.cpu);
  if (!Number.isFinite(cpu) || cpu <= 0 || cpu > 256) throw new InputError(`cpu (${String(input.cpu)}) must be a number of cores above 0 and at most 256`, 'cpu');
  const memoryMb = Number(input.memory_mb ?? input.memory);
  if (!Number.isInteger(memoryMb) || memoryMb < 64 || memoryMb > 4_194_304) {
    throw new InputError(`memory (${String(input.memory_mb ?? input.memory)}) must be whole MiB between 64 and 4194304`, 'memory');
  }
  const driver = String(input.driver ?? 'runner');
  if (!(DRIVERS as readonly string[]).includes(driver)) throw new InputError(`driver '${driver}' is not one of ${DRIVERS.join(', ')}`, 'driver');
  // A platform class (macos.*, windows.*, arm.*) is the class jobs ask for by CircleCI's name;
  // its runners serve every organisation's jobs of that class (unserved-classes.ts).
  if (driver === 'runner' && !RUNNER_CLASS.test(name) && !isPlatformClass(name)) {
    throw new InputError(`a runner resource class is named <namespace>/<name>, the namespace being the organisation whose jobs it runs (e.g. acme/linux-large), or is a macOS, Windows or Arm class (macos.m1.medium.gen1, windows.medium, arm.medium); '${name}' is not`, 'name');
  }
  return { name, cpu, memoryMb, driver: driver as DriverName };
}

export function createResourceClasses({ store }: { store: Store }): ResourceClasses {
  const row = (r: { name: string; cpu: number; memory_mb: number; driver: DriverName }): ResourceClass => ({
    name: r.name,
    cpu: Number(r.cpu),
    memoryMb: r.memory_mb,
    driver: r.driver,
  });
  return {
    async add(rc, audit) {
      return store.transaction(async (tx) => {
        const rows = await tx.query<{ name: string }>(
          `INSERT INTO resource_classes (name, cpu, memory_mb, driver) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING name`,
          [rc.name, rc.cpu, rc.memoryMb, rc.driver],
        );
        if (rows.length === 0) throw new ConflictError(`resource class '${rc.name}' already exists`);
        await audit?.record(tx, { target: { type: 'resource-class', id: rc.name }, detail: { cpu: rc.cpu, memory_mb: rc.memoryMb, driver: rc.driver } });
        return rc;
      });
    },
    async list() {
      return (await store.query<any>('SELECT name, cpu, memory_mb, driver FROM resource_classes ORDER BY name')).map(row);
    },
    async get(name) {
      const [r] = await store.query<any>('SELECT name, cpu, memory_mb, driver FROM resource_classes WHERE name = $1', [name]);
      return r ? row(r) : undefined;
    },
    async createRunnerToken(name, label = '', audit) {
      const rc = await this.get(name);
      if (!rc) throw new NotFoundError('resource class', name);
      const token = `gyre-rc.${randomBytes(24).toString('base64url')}`;
      await store.transaction(async (tx) => {
        await tx.query('INSERT INTO runner_tokens (token_hash, resource_class, label) VALUES ($1, $2, $3)', [hashToken(token), name, label]);
        await audit?.record(tx, { target: { type: 'resource-class', id: name }, detail: { label } });
      });
      return token;
    },
    async runnerSeen(runnerId, resourceClass) {
      await store.query(
        `INSERT INTO runners (id, resource_class, last_seen_at) VALUES ($1, $2, now())
         ON CONFLICT (id) DO UPDATE SET resource_class = EXCLUDED.resource_class, last_seen_at = now()`,
        [runnerId, resourceClass],
      );
    },
    async classOfRunnerToken(token) {
      // Last use is written at most once a minute per token, not on every claim.
      const [r] = await store.query<{ resource_class: string }>(
        `WITH t AS (SELECT token_hash, resource_class, last_used_at FROM runner_tokens WHERE token_hash = $1),
              touched AS (UPDATE runner_tokens r SET last_used_at = now() FROM t
                           WHERE r.token_hash = t.token_hash AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'))
         SELECT resource_class FROM t`,
        [hashToken(token)],
      );
      return r?.resource_class;
    },
    async listRunnerTokens(name) {
      if (!(await this.get(name))) throw new NotFoundError('resource class', name);
      const rows = await store.query<{ id: string; label: string; created_at: Date; last_used_at: Date | null }>(
        'SELECT id, label, created_at, last_used_at FROM runner_tokens WHERE resource_class = $1 ORDER BY created_at, id',
        [name],
      );
      return rows.map((r) => ({ id: r.id, label: r.label, createdAt: new Date(r.created_at).toISOString(), lastUsedAt: r.last_used_at ? new Date(r.last_used_at).toISOString() : null }));
    },
    async revokeRunnerToken(id, audit) {
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new NotFoundError('runner token', id);
      await store.transaction(async (tx) => {
        const rows = await tx.query<{ resource_class: string; label: string }>('DELETE FROM runner_tokens WHERE id = $1 RETURNING resource_class, label', [id]);
        if (rows.length === 0) throw new NotFoundError('runner token', id);
        await audit?.record(tx, { target: { type: 'runner-token', id }, detail: { resource_class: rows[0].resource_class, label: rows[0].label } });
      });
    },
    async setLimit(scope, key, maxRunning, audit) {
      await store.transaction(async (tx) => {
        if (maxRunning === undefined) await tx.query('DELETE FROM concurrency_limits WHERE scope = $1 AND key = $2', [scope, key]);
        else {
          await tx.query(
            `INSERT INTO concurrency_limits (scope, key, max_running) VALUES ($1, $2, $3)
             ON CONFLICT (scope, key) DO UPDATE SET max_running = EXCLUDED.max_running`,
            [scope, key, maxRunning],
          );
        }
        await audit?.record(tx, { target: { type: `${scope}-limit`, id: key }, detail: { max_running: maxRunning ?? null } });
      });
    },
  };
}
