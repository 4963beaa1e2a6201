import { InputError } from '../domain/errors';
import type { Principal } from '../domain/principal';
import { decodePageToken, encodePageToken } from '../api/read-model';
import type { Queryable } from '../store/store';

/**
 * The audit log: who did what to which target, when, from which address, with what result. A
 * mutating action's record is appended by the service that makes the change, in the same
 * transaction (`Audit.record(tx, …)`), so the change and its record commit or roll back together;
 * refused (403, and 404 for what the caller may not see) and failed attempts are recorded by the
 * HTTP boundary after the answer is decided. Plain SQL, one function per statement.
 */

export type AuditResult = 'success' | 'denied' | 'failed';

/** What a service adds to the request's record: the exact target, and anything worth keeping. */
export interface AuditDetail {
  /** The action, when the service knows it more precisely than the route (`token.create` vs `token.revoke`). */
  readonly action?: string;
  readonly target?: { readonly type: string; readonly id: string };
  /** Organisation and project the target belongs to, when the route did not name them. */
  readonly org?: string;
  readonly project?: string;
  /** Small facts (a role given, a scope); never a secret. */
  readonly detail?: Record<string, unknown>;
}

/**
 * A mutating request's audit record, handed by the route to the service that makes the change.
 * The service calls `record(tx, …)` once, inside its transaction.
 */
export interface Audit {
  record(tx: Queryable, detail?: AuditDetail): Promise<void>;
  /**
   * The record as values (`auditValues`' order), for a service whose change is one statement that
   * inserts the record too (`auditInsert`): committed with the change or not at all, without a
   * transaction of its own around two statements. `done` once that statement has run. A service
   * that has none calls `record` in its transaction.
   */
  entry?(detail?: AuditDetail): { readonly values: readonly unknown[]; done(): void };
}

/** Who acted: the user and the token they used. */
export interface AuditActor {
  readonly userId?: string;
  readonly login: string;
  readonly tokenId?: string;
  readonly tokenKind?: string;
}

export function actorOf(principal: Principal): AuditActor {
  return { userId: principal.userId, login: principal.login, tokenId: principal.token?.id, tokenKind: principal.token?.kind ?? 'personal' };
}

/** The system itself (sweeps, start-up), for records no request caused. */
export const SYSTEM_ACTOR: AuditActor = { login: 'gyre' };

export interface AuditEvent extends AuditDetail {
  readonly actor: AuditActor;
  readonly action: string;
  readonly address?: string;
  readonly result: AuditResult;
  /** The HTTP status the request was answered with, for requests. */
  readonly status?: number;
}

/** A request's audit context, made by the HTTP boundary for routes that declare an `action`. */
export interface RequestAudit extends Audit {
  readonly actor: AuditActor;
  readonly action: string;
  readonly address: string;
  readonly org?: string;
  readonly project?: string;
  /** Set once the service recorded the change. */
  readonly recorded: boolean;
}

export function createRequestAudit(base: { actor: AuditActor; action: string; address: string; org?: string; project?: string }): RequestAudit {
  let recorded = false;
  return {
    ...base,
    get recorded() {
      return recorded;
    },
    async record(tx, detail = {}) {
      await appendAudit(tx, eventOf(detail));
      recorded = true;
    },
    entry(detail = {}) {
      return { values: auditValues(eventOf(detail)), done: () => void (recorded = true) };
    },
  };
  function eventOf(detail: AuditDetail): AuditEvent {
    return {
      actor: base.actor,
      address: base.address,
      result: 'success',
      status: undefined,
      ...detail,
      action: detail.action ?? base.action,
      org: detail.org ?? base.org,
      project: detail.project ?? base.project,
    };
  }
}

/** The columns a record sets, their types, and its values in that order. */
const AUDIT_COLUMNS = 'actor_id, actor_login, token_id, token_kind, action, target_type, target_id, org, project, address, result, status, detail';
const AUDIT_TYPES = ['text', 'text', 'uuid', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'integer', 'jsonb'] as const;

export function auditValues(event: AuditEvent): unknown[] {
  return [
    event.actor.userId ?? null,
    event.actor.login,
    event.actor.tokenId ?? null,
    event.actor.tokenKind ?? null,
    event.action,
    event.target?.type ?? null,
    event.target?.id ?? null,
    event.org ?? null,
    event.project ?? null,
    event.address ?? null,
    event.result,
    event.status ?? null,
    JSON.stringify(event.detail ?? {}),
  ];
}

/**
 * A record's INSERT for the WITH list of the statement that makes the change: its values are
 * parameters `$first` on (`auditValues`), one record for each row of `from` (the change's rows),
 * the detail merged with `detailFrom`, SQL of a jsonb object that may read those rows (a number
 * the change gave).
 */
export function auditInsert(first: number, from: string, detailFrom = `'{}'::jsonb`): string {
  const values = AUDIT_TYPES.map((type, i) => (type === 'jsonb' ? `$${first + i}::jsonb || ${detailFrom}` : `$${first + i}::${type}`));
  return `INSERT INTO audit_events (${AUDIT_COLUMNS}) SELECT ${values.join(', ')} FROM ${from}`;
}

/** Appends one record. */
export async function appendAudit(tx: Queryable, event: AuditEvent): Promise<void> {
  await tx.query(`INSERT INTO audit_events (${AUDIT_COLUMNS}) VALUES (${AUDIT_TYPES.map((_, i) => `$${i + 1}`).join(', ')})`, auditValues(event));
}

/** A record as the API shows it. */
export interface AuditEventView {
  readonly id: string;
  readonly time: string;
  readonly actor: { readonly id: string | null; readonly login: string; readonly token_id: string | null; readonly token_kind: string | null };
  readonly action: string;
  readonly target: { readonly type: string; readonly id: string } | null;
  readonly organization: string | null;
  readonly project: string | null;
  readonly address: string | null;
  readonly result: AuditResult;
  readonly status: number | null;
  readonly detail: Record<string, unknown>;
}

interface AuditRow {
  id: string | number;
  at: Date | string;
  actor_id: string | null;
  actor_login: string;
  token_id: string | null;
  token_kind: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  org: string | null;
  project: string | null;
  address: string | null;
  result: AuditResult;
  status: number | null;
  detail: Record<string, unknown> | null;
}

function view(r: AuditRow): AuditEventView {
  return {
    id: String(r.id),
    time: new Date(r.at).toISOString(),
    actor: { id: r.actor_id, login: r.actor_login, token_id: r.token_id, token_kind: r.token_kind },
    action: r.action,
    target: r.target_type ? { type: r.target_type, id: r.target_id ?? '' } : null,
    organization: r.org,
    project: r.project,
    address: r.address,
    result: r.result,
    status: r.status,
    detail: r.detail ?? {},
  };
}

export interface AuditQuery {
  /** Records at or after this time. */
  readonly since?: Date;
  /** Records before this time. */
  readonly until?: Date;
  /** Only this organisation's records (an organisation admin's view). */
  readonly org?: string;
  /** `desc` (newest first, the default) or `asc` (oldest first, for exports). */
  readonly order?: 'asc' | 'desc';
  readonly pageToken?: string;
  /** @default 100 */
  readonly limit?: number;
}

/** A page of records, in time order (ties by id), with a token for the next page. */
export async function listAudit(db: Queryable, query: AuditQuery): Promise<{ items: AuditEventView[]; next_page_token: string | null }> {
  const limit = query.limit ?? 100;
  const order = query.order ?? 'desc';
  const cursor = decodePageToken<{ at: string; id: string }>(
    query.pageToken,
    (c) => typeof c.at === 'string' && !Number.isNaN(Date.parse(c.at)) && typeof c.id === 'string' && /^\d{1,19}$/.test(c.id),
  );
  const cmp = order === 'asc' ? '>' : '<';
  const rows = await db.query<AuditRow>(
    `SELECT * FROM audit_events
      WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2) AND ($3::text IS NULL OR org = $3)
        AND ($4::timestamptz IS NULL OR (at, id) ${cmp} ($4::timestamptz, $5::bigint))
      ORDER BY at ${order}, id ${order} LIMIT $6`,
    [query.since ?? null, query.until ?? null, query.org ?? null, cursor ? cursor.at : null, cursor ? cursor.id : null, limit + 1],
  );
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return {
    items: page.map(view),
    next_page_token: rows.length > limit && last ? encodePageToken({ at: new Date(last.at).toISOString(), id: String(last.id) }) : null,
  };
}

/**
 * Deletes records older than `days` (0 keeps them all), `batch` at a time so a long backlog never
 * holds one long transaction; answers how many went.
 */
export async function sweepAudit(db: Queryable, days: number, batch = 5000): Promise<number> {
  if (days <= 0) return 0;
  let total = 0;
  for (;;) {
    const deleted = await db.query<{ id: string }>(
      `DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < now() - make_interval(days => $1) ORDER BY at LIMIT $2) RETURNING id`,
      [days, batch],
    );
    total += deleted.length;
    if (deleted.length < batch) return total;
  }
}

/** A time for `since`/`until`: an ISO 8601 time, or a span back from now (`30m`, `24h`, `7d`). */
export function parseAuditTime(value: string, field: string, now = Date.now()): Date {
  const span = /^(\d{1,6})([smhd])$/.exec(value.trim());
  if (span) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[span[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now - Number(span[1]) * unit);
  }
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value.trim()) || Number.isNaN(t)) {
    throw new InputError(`${field} '${value.slice(0, 100)}' is not a time (allowed: an ISO 8601 time such as 2026-01-31T12:00:00Z, or a span back from now such as 30m, 24h, 7d)`, field);
  }
  return new Date(t);
}
