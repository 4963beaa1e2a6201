import { randomUUID } from 'node:crypto';
import type { Logger } from '../logger';
import { createWakeableSleep } from '../scheduler/wakeable-sleep';
import type { Store } from '../store/store';
import { DeliveryRefused, OUTBOX_CHANNEL, RetryLater, type Delivery, type OutboxHandler } from './outbox';
import { claimDue, finishDelivery, msUntilNextDue, retryDelivery, sweepFinished, type DeliveryRow } from './sql/outbox';

/** How often a failed delivery is tried again. */
export interface RetryPolicy {
  /** Delay before the second attempt; each later one doubles it. @default 1000 */
  readonly baseDelayMs: number;
  /** The longest delay between attempts. @default 600000 (10 minutes) */
  readonly maxDelayMs: number;
  /** Attempts in all before a delivery fails for good. @default 20 (about two hours with the defaults) */
  readonly maxAttempts: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseDelayMs: 1000, maxDelayMs: 600_000, maxAttempts: 20 };

/** The delay before attempt `attempt + 1`: doubling from the base, capped, with ±20% jitter so a burst spreads out. */
export function backoffMs(policy: RetryPolicy, attempt: number, random = Math.random): number {
  const raw = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(raw * (0.8 + 0.4 * random()));
}

export interface OutboxSenderOptions {
  readonly store: Store;
  readonly log: Logger;
  /** Handlers by kind; the sender claims only the kinds it has a handler for. */
  readonly handlers: Readonly<Record<string, OutboxHandler>>;
  /** @default DEFAULT_RETRY */
  readonly retry?: RetryPolicy;
  /** Deliveries claimed (and sent concurrently) at once. @default 10 */
  readonly batch?: number;
  /**
   * How long a claim holds a delivery: longer than any handler's send may take (GitHub calls are
   * bounded by GYRE_GITHUB_TIMEOUT_MS, at most 5 minutes). A sender that dies mid-send leaves the
   * delivery to be claimed again after this. @default 360000 (6 minutes)
   */
  readonly leaseMs?: number;
  /** Longest sleep between looks when nothing wakes the loop. @default 5000 */
  readonly pollMs?: number;
  /** Finished deliveries are deleted after this many days. @default 7 */
  readonly keepDays?: number;
}

export interface OutboxSender {
  /** Claims the due deliveries (one batch) and sends them; answers how many it claimed. */
  pass(): Promise<number>;
  /** Runs passes until stopped: woken by enqueues (NOTIFY), by retries coming due, else every `pollMs`. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createOutboxSender(options: OutboxSenderOptions): OutboxSender {
  const { store, log, handlers } = options;
  const retry = options.retry ?? DEFAULT_RETRY;
  const batch = options.batch ?? 10;
  const leaseMs = options.leaseMs ?? 360_000;
  const pollMs = options.pollMs ?? 5000;
  const keepDays = options.keepDays ?? 7;
  const kinds = Object.keys(handlers);
  const sleeper = createWakeableSleep();
  let stopped = false;
  let loop: Promise<void> | undefined;
  let unlisten: (() => Promise<void>) | undefined;
  let lastSweep = 0;

  const messageOf = (error: unknown) => String((error as Error)?.message ?? error).slice(0, 1000);

  /** Sends one claimed delivery and records what became of it; never throws. */
  async function send(row: DeliveryRow): Promise<void> {
    const claim = { id: row.id, claimId: row.claim_id };
    const handler = handlers[row.kind];
    const delivery: Delivery<unknown> = { id: row.id, kind: row.kind, payload: row.payload, attempt: row.attempts };
    let sent: { outcome?: { skipped: string } } | undefined;
    let failure: unknown;
    try {
      sent = { outcome: ((await handler.deliver(delivery)) as { skipped: string } | undefined) ?? undefined };
    } catch (error) {
      failure = error;
    }
    try {
      if (sent) {
        await finishDelivery(store, claim, sent.outcome ? 'skipped' : 'delivered', sent.outcome?.skipped);
        return;
      }
      const reason = messageOf(failure);
      if (failure instanceof DeliveryRefused || row.attempts >= retry.maxAttempts) {
        const why = failure instanceof DeliveryRefused ? reason : `gave up after ${row.attempts} attempts: ${reason}`;
        log.warn('outbox delivery failed for good', { kind: row.kind, delivery: row.id, attempts: row.attempts, reason: why });
        // The failure and its visible trace commit together.
        await store.transaction(async (tx) => {
          if (await finishDelivery(tx, claim, 'failed', why)) await handler.failed?.(tx, delivery, why, failure);
        });
      } else {
        const delay = failure instanceof RetryLater ? Math.max(failure.afterMs, backoffMs(retry, row.attempts)) : backoffMs(retry, row.attempts);
        log.info('outbox delivery will be retried', { kind: row.kind, delivery: row.id, attempt: row.attempts, in_ms: delay, reason });
        await retryDelivery(store, claim, delay, reason);
      }
    } catch (recordError) {
      // Not recorded: the claim lapses after leaseMs and the delivery is tried again then (a
      // receiver may then see it twice, which the outbox allows).
      log.error('recording an outbox delivery failed', { kind: row.kind, delivery: row.id, error: messageOf(recordError) });
    }
  }

  const sender: OutboxSender = {
    async pass() {
      if (kinds.length === 0) return 0;
      const rows = await claimDue(store, { kinds, limit: batch, claimId: randomUUID(), leaseMs });
      await Promise.all(rows.map(send));
      return rows.length;
    },

    async start() {
      if (kinds.length === 0 || loop) return;
      unlisten = await store.listen(OUTBOX_CHANNEL, (kind) => {
        if (kinds.includes(kind)) sleeper.wakeAll();
      });
      loop = (async () => {
        while (!stopped) {
          let wait = pollMs;
          try {
            const claimed = await sender.pass();
            if (claimed >= batch) continue; // more may be due
            const next = await msUntilNextDue(store, kinds);
            if (next !== undefined) wait = Math.min(pollMs, Math.max(next, 10));
            if (Date.now() - lastSweep > 3600_000) {
              lastSweep = Date.now();
              const swept = await sweepFinished(store, keepDays);
              if (swept > 0) log.info('finished outbox deliveries deleted', { deliveries: swept, older_than_days: keepDays });
            }
          } catch (error) {
            log.error('outbox pass failed', { error: messageOf(error) });
          }
          if (!stopped) await sleeper.sleep(wait);
        }
      })();
    },

    async stop() {
      stopped = true;
      sleeper.wakeAll();
      await unlisten?.().catch(() => undefined);
      await loop;
    },
  };
  return sender;
}
