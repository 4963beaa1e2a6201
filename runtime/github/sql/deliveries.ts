import type { Queryable } from '../../store/store';

/**
 * Webhook deliveries by `X-GitHub-Delivery` (560_github.sql). A delivery is recorded before it is
 * acted on: a second delivery with the same id is a duplicate and changes nothing. One left
 * `received` for longer than `RETAKE_AFTER` (its process died before it finished) may be taken up
 * by a redelivery.
 */
const RETAKE_AFTER = `interval '10 minutes'`;

/** Records a delivery; false when it was recorded before (a redelivery, or one being acted on now). */
export async function claimDelivery(db: Queryable, delivery: { id: string; event: string; action?: string }): Promise<boolean> {
  const rows = await db.query(
    `INSERT INTO github_deliveries (delivery_id, event, action, state) VALUES ($1, $2, $3, 'received')
     ON CONFLICT (delivery_id) DO UPDATE SET received_at = now()
       WHERE github_deliveries.state = 'received' AND github_deliveries.received_at < now() - ${RETAKE_AFTER}
     RETURNING delivery_id`,
    [delivery.id, delivery.event, delivery.action ?? null],
  );
  return rows.length > 0;
}

/** What became of a delivery (in the transaction of its effects, when it had any). */
export async function finishDelivery(db: Queryable, id: string, outcome: string, pipelineId?: string): Promise<void> {
  await db.query(`UPDATE github_deliveries SET state = 'done', outcome = $2, pipeline_id = $3, finished_at = now() WHERE delivery_id = $1`, [id, outcome.slice(0, 500), pipelineId ?? null]);
}

/** Forgets a delivery whose handling failed, so that GitHub's redelivery of it is acted on. */
export async function forgetDelivery(db: Queryable, id: string): Promise<void> {
  await db.query(`DELETE FROM github_deliveries WHERE delivery_id = $1 AND state = 'received'`, [id]);
}

export async function deliveryOf(db: Queryable, id: string): Promise<{ state: string; outcome: string | null; pipeline_id: string | null } | undefined> {
  const [row] = await db.query<{ state: string; outcome: string | null; pipeline_id: string | null }>('SELECT state, outcome, pipeline_id FROM github_deliveries WHERE delivery_id = $1', [id]);
  return row;
}

/** Deletes deliveries older than `days` (GitHub redelivers only recent ones); answers how many. */
export async function sweepDeliveries(db: Queryable, days: number): Promise<number> {
  const rows = await db.query(`DELETE FROM github_deliveries WHERE received_at < now() - make_interval(days => $1) RETURNING delivery_id`, [days]);
  return rows.length;
}
