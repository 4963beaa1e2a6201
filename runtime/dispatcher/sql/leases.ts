import { StaleLeaseError } from '../../domain/errors';
import type { LeaseHolder } from '../../domain/leases';
import type { Queryable } from '../../store/store';
import type { Lease } from '../../agent-contract/task-context';

/** The proof that an agent holds a task (the agent contract's: it is what a task token carries). */
export type { Lease };

/**
 * The one rule for "this lease is current", on the task row `t` with `$1` task id, `$2` lease id,
 * `$3` attempt: the task is running under this very lease and attempt, and the lease has not
 * expired on the database's clock. Every write an agent makes, the cancellation check and the
 * Nomad driver's "is this attempt still ours" use it, and nothing else decides it.
 */
export const LEASE_IS_CURRENT = `(t.id = $1 AND t.lease_id = $2 AND t.attempt = $3 AND t.status = 'running' AND t.lease_expires_at > now())`;

const params = (lease: Lease) => [lease.taskId, lease.leaseId, lease.attempt];

/**
 * Locks the task row for the rest of the caller's transaction if `lease` is current; otherwise
 * throws StaleLeaseError. A write made after this in the same transaction is fenced.
 */
export async function lockCurrentLease(tx: Queryable, lease: Lease): Promise<void> {
  const rows = await tx.query(`SELECT 1 FROM tasks t WHERE ${LEASE_IS_CURRENT} FOR UPDATE`, params(lease));
  if (rows.length === 0) throw new StaleLeaseError(lease.taskId, lease.leaseId);
}

/**
 * One write fenced by `lease` in one statement (one round trip, no transaction of its own): the
 * task row is locked as in lockCurrentLease, in a CTE named `lease` (one row, `id`, when the lease
 * is current, none otherwise), and `write` takes its rows FROM `lease`, so it writes nothing under
 * a stale lease. `then` is the statement's result (`SELECT 1 FROM lease` unless given; a NOTIFY
 * there is sent only if the write was made, at commit). StaleLeaseError when the lease is not current.
 * `$1`–`$3` are the lease's; `values` are `$4` on.
 */
export async function writeUnderLease(q: Queryable, lease: Lease, write: string, values: readonly unknown[], then = 'SELECT 1 FROM lease'): Promise<void> {
  await queryUnderLease(q, lease, `written AS (${write})`, values, then);
}

/**
 * writeUnderLease with several CTEs after `lease` (`ctes`, e.g. `a AS (…), b AS (…)`, the first
 * taking its rows FROM `lease`) and the rows of `select`, which must give at least one row when
 * the lease is current and none otherwise (select FROM `lease`, or from a CTE that does).
 */
export async function queryUnderLease<T>(q: Queryable, lease: Lease, ctes: string, values: readonly unknown[], select: string): Promise<T[]> {
  const rows = await q.query<T>(`WITH lease AS (SELECT t.id FROM tasks t WHERE ${LEASE_IS_CURRENT} FOR UPDATE), ${ctes} ${select}`, [...params(lease), ...values]);
  if (rows.length === 0) throw new StaleLeaseError(lease.taskId, lease.leaseId);
  return rows;
}

/** Extends a current lease by `ttl` (an interval, e.g. `30000 milliseconds`) from now; StaleLeaseError otherwise. */
export async function renewLease(q: Queryable, lease: Lease, ttl: string): Promise<{ leaseExpiresAt: Date; cancelRequested: boolean }> {
  const [row] = await q.query<{ lease_expires_at: Date; cancel_requested: boolean }>(
    `UPDATE tasks t SET lease_expires_at = now() + $4::interval WHERE ${LEASE_IS_CURRENT}
     RETURNING t.lease_expires_at, t.cancel_requested`,
    [...params(lease), ttl],
  );
  if (!row) throw new StaleLeaseError(lease.taskId, lease.leaseId);
  return { leaseExpiresAt: new Date(row.lease_expires_at), cancelRequested: row.cancel_requested };
}

/** Whether `lease` is current, and whether its task was asked to stop (read without locking). */
export async function leaseState(q: Queryable, lease: Lease): Promise<{ current: boolean; cancelRequested: boolean }> {
  const [row] = await q.query<{ current: boolean; cancel_requested: boolean }>(
    `SELECT ${LEASE_IS_CURRENT} AS current, t.cancel_requested FROM tasks t WHERE t.id = $1`,
    params(lease),
  );
  return { current: row?.current === true, cancelRequested: row?.cancel_requested === true };
}

/** A running attempt the dispatcher is about to end. */
export interface EndingAttempt {
  readonly id: string;
  readonly attempt: number;
  readonly max_attempts: number;
  readonly cancel_requested: boolean;
}

const ENDING_COLUMNS = 'id, attempt, max_attempts, cancel_requested';

/**
 * Running attempts whose lease expired more than `graceMs` ago, locked (others' locks skipped).
 * The grace is longer than the margin by which agents stop before their lease expires
 * (`runtime/domain/leases.ts`), so an attempt ends only once its steps are dead.
 */
export function lockLapsedAttempts(tx: Queryable, graceMs: number): Promise<EndingAttempt[]> {
  return tx.query<EndingAttempt>(
    `SELECT ${ENDING_COLUMNS} FROM tasks
      WHERE status = 'running' AND lease_expires_at + $1::interval <= now()
      ORDER BY id FOR UPDATE SKIP LOCKED`,
    [`${Math.max(0, Math.round(graceMs))} milliseconds`],
  );
}

/**
 * Running attempts whose lease `holder` holds, whatever their expiry, locked: at start of a
 * server on the embedded database, the attempts of its own built-in runner, which died with the
 * process before (its steps died with it).
 */
export function lockAttemptsHeldBy(tx: Queryable, holder: LeaseHolder): Promise<EndingAttempt[]> {
  return tx.query<EndingAttempt>(
    `SELECT ${ENDING_COLUMNS} FROM tasks WHERE status = 'running' AND lease_holder = $1 ORDER BY id FOR UPDATE SKIP LOCKED`,
    [holder],
  );
}

/**
 * The attempt of `lease`, locked, if the task still runs under it (expired or not): a driver that
 * knows the agent is gone ends it at once rather than waiting out the lease and its grace.
 */
export function lockAttemptOf(tx: Queryable, lease: Lease): Promise<EndingAttempt[]> {
  return tx.query<EndingAttempt>(
    `SELECT ${ENDING_COLUMNS} FROM tasks t
      WHERE t.id = $1 AND t.lease_id = $2 AND t.attempt = $3 AND t.status = 'running' FOR UPDATE`,
    params(lease),
  );
}
