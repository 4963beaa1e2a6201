import { randomUUID } from 'node:crypto';
import type { Queryable } from '../store/store';
import { insertDelivery } from './sql/outbox';

/**
 * The outbox (DESIGN.md, "Effects leave through an outbox"): anything Gyre tells the outside world
 * about a state change is written here, by `enqueue`, in the transaction that makes the change, and
 * sent afterwards by the sender (./sender.ts) through the handler of its kind, with retries and
 * backoff. A rolled-back change never sends its notice; a committed one is never lost to a crash.
 * A receiver may see a notice more than once (a sender that dies after sending and before
 * recording it): handlers send what is safe to repeat, or the delivery id for the receiver to dedupe.
 */

/** NOTIFY channel an enqueue wakes the senders on (delivered at commit). */
export const OUTBOX_CHANNEL = 'gyre_outbox';

/** Writes a delivery of `kind` in the caller's transaction; answers its id. */
export async function enqueue(tx: Queryable, kind: string, payload: unknown, options: { orderingKey?: string } = {}): Promise<string> {
  const id = randomUUID();
  await insertDelivery(tx, { id, kind, payload, orderingKey: options.orderingKey });
  await tx.query('SELECT pg_notify($1, $2)', [OUTBOX_CHANNEL, kind]);
  return id;
}

/** One delivery as a handler sees it. */
export interface Delivery<P> {
  readonly id: string;
  readonly kind: string;
  readonly payload: P;
  /** 1 for the first attempt. */
  readonly attempt: number;
}

/**
 * Sends the deliveries of one kind. `deliver` resolves when the receiver took it (or answers
 * `{ skipped }` when there was nothing to send), throws `DeliveryRefused` when the receiver said no
 * for good, and throws anything else to be tried again later (`RetryLater` to say when).
 */
export interface OutboxHandler<P = any> {
  deliver(delivery: Delivery<P>): Promise<void | { skipped: string }>;
  /**
   * Called in the transaction that records a delivery as failed for good (refused, or out of
   * attempts), to make the failure visible where users look; it must not throw for a missing target.
   * `error` is what the last attempt threw (a `DeliveryRefused` for a refusal).
   */
  failed?(tx: Queryable, delivery: Delivery<P>, reason: string, error: unknown): Promise<void>;
}

/** The receiver refused the delivery for good (GitHub's 4xx other than 429): never tried again. */
export class DeliveryRefused extends Error {}

/** The receiver asked to be tried again after a while (a 429, a rate limit's reset). */
export class RetryLater extends Error {
  constructor(
    message: string,
    readonly afterMs: number,
  ) {
    super(message);
  }
}
