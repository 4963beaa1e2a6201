import type { Queryable } from '../../store/store';

/**
 * The outbox's statements (580_outbox.sql), each one statement in the caller's transaction or on
 * its own. Claims take `FOR UPDATE SKIP LOCKED`: any number of senders, each row claimed by one.
 */

export interface DeliveryRow {
  id: string;
  kind: string;
  payload: unknown;
  attempts: number;
  claim_id: string;
}

/** A delivery, pending from now. */
export async function insertDelivery(tx: Queryable, row: { id: string; kind: string; payload: unknown; orderingKey?: string }): Promise<void> {
  await tx.query('INSERT INTO outbox (id, kind, payload, ordering_key) VALUES ($1, $2, $3, $4)', [row.id, row.kind, JSON.stringify(row.payload), row.orderingKey ?? null]);
}

/**
 * Claims up to `limit` due deliveries of these kinds: the earliest pending row of each ordering key
 * (a later one waits while an earlier one is pending, in flight or waiting for its retry). A claim
 * counts the attempt and makes the row due again only after `leaseMs`, so a sender that dies while
 * sending leaves it to another after that.
 */
export function claimDue(db: Queryable, options: { kinds: readonly string[]; limit: number; claimId: string; leaseMs: number }): Promise<DeliveryRow[]> {
  return db.query<DeliveryRow>(
    `UPDATE outbox o SET attempts = o.attempts + 1, claim_id = $2, next_attempt_at = now() + make_interval(secs => $3::double precision / 1000)
      WHERE o.id IN (
        SELECT c.id FROM outbox c
         WHERE c.state = 'pending' AND c.next_attempt_at <= now() AND c.kind = ANY($4::text[])
           AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.ordering_key = c.ordering_key AND e.state = 'pending' AND e.seq < c.seq)
         ORDER BY c.seq LIMIT $1
         FOR UPDATE SKIP LOCKED)
      RETURNING o.id, o.kind, o.payload, o.attempts, o.claim_id`,
    [options.limit, options.claimId, options.leaseMs, [...options.kinds]],
  );
}

/** Ends a claimed delivery (`delivered`, `skipped` or `failed`); false when the claim was lost meanwhile. */
export async function finishDelivery(db: Queryable, row: { id: string; claimId: string }, state: 'delivered' | 'skipped' | 'failed', error?: string): Promise<boolean> {
  const rows = await db.query(
    `UPDATE outbox SET state = $3, last_error = $4, claim_id = NULL, finished_at = now() WHERE id = $1 AND claim_id = $2 AND state = 'pending' RETURNING id`,
    [row.id, row.claimId, state, error?.slice(0, 2000) ?? null],
  );
  return rows.length > 0;
}

/** Puts a claimed delivery back, due again in `delayMs`, with why this attempt failed. */
export async function retryDelivery(db: Queryable, row: { id: string; claimId: string }, delayMs: number, error: string): Promise<void> {
  await db.query(
    `UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $3::double precision / 1000), last_error = $4, claim_id = NULL
      WHERE id = $1 AND claim_id = $2 AND state = 'pending'`,
    [row.id, row.claimId, delayMs, error.slice(0, 2000)],
  );
}

/**
 * Milliseconds until the next delivery of these kinds that a claim could take is due (0 when one
 * is due now); undefined when none is pending. A delivery waiting behind an earlier one of its
 * ordering key does not count: it is due when that one ends.
 */
export async function msUntilNextDue(db: Queryable, kinds: readonly string[]): Promise<number | undefined> {
  const [row] = await db.query<{ ms: number | null }>(
    `SELECT (EXTRACT(EPOCH FROM (min(c.next_attempt_at) - now())) * 1000)::double precision AS ms FROM outbox c
      WHERE c.state = 'pending' AND c.kind = ANY($1::text[])
        AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.ordering_key = c.ordering_key AND e.state = 'pending' AND e.seq < c.seq)`,
    [[...kinds]],
  );
  return row?.ms === null || row?.ms === undefined ? undefined : Math.max(0, Number(row.ms));
}

/** Deletes finished deliveries older than `days`; answers how many. */
export async function sweepFinished(db: Queryable, days: number): Promise<number> {
  const rows = await db.query(`DELETE FROM outbox WHERE state <> 'pending' AND finished_at < now() - make_interval(days => $1) RETURNING id`, [days]);
  return rows.length;
}
