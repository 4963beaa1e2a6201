import { createLogger } from '../../runtime/logger';
import { DeliveryRefused, enqueue, type Delivery, type OutboxHandler } from '../../runtime/outbox/outbox';
import { backoffMs, createOutboxSender, DEFAULT_RETRY } from '../../runtime/outbox/sender';
import { openStore } from '../../runtime/store/open-store';
import type { Store } from '../../runtime/store/store';

/** The outbox on its own (PGlite): claims, leases, order per key, retries and refusals. */

const log = createLogger({ level: 'silent' });

describe('the outbox', () => {
  let store: Store;
  beforeAll(async () => {
    store = await openStore({});
  });
  afterAll(async () => {
    await store?.close();
  });
  beforeEach(async () => {
    await store.query('DELETE FROM outbox');
  });

  const rows = () => store.query<{ state: string; attempts: number; last_error: string | null; payload: { n: number } }>('SELECT state, attempts, last_error, payload FROM outbox ORDER BY seq');

  test('backoff doubles from the base up to the cap, within ±20%', () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4].map((a) => backoffMs(DEFAULT_RETRY, a, mid))).toEqual([1000, 2000, 4000, 8000]);
    expect(backoffMs(DEFAULT_RETRY, 30, mid)).toBe(600_000);
    expect(backoffMs(DEFAULT_RETRY, 1, () => 0)).toBe(800);
    expect(backoffMs(DEFAULT_RETRY, 1, () => 1)).toBe(1200);
  });

  test('a rolled-back change writes nothing; deliveries of one key go out in order, a retried one first', async () => {
    await store.transaction(async (tx) => {
      await enqueue(tx, 'test', { n: 0 });
      throw new Error('the change failed');
    }).catch(() => undefined);
    expect(await rows()).toEqual([]);

    const seen: number[] = [];
    let failures = 1;
    const handler: OutboxHandler<{ n: number }> = {
      async deliver({ payload }) {
        if (payload.n === 1 && failures-- > 0) throw new Error('HTTP 502');
        seen.push(payload.n);
      },
    };
    const sender = createOutboxSender({ store, log, handlers: { test: handler }, retry: { baseDelayMs: 20, maxDelayMs: 50, maxAttempts: 5 } });
    await store.transaction(async (tx) => {
      for (const n of [1, 2, 3]) await enqueue(tx, 'test', { n }, { orderingKey: 'k' });
      await enqueue(tx, 'test', { n: 9 }, { orderingKey: 'other' });
    });
    await sender.pass();
    // 1 failed and waits for its retry; 2 and 3 wait behind it; the other key went out.
    expect(seen).toEqual([9]);
    for (let i = 0; i < 50 && seen.length < 4; i++) {
      await new Promise((r) => setTimeout(r, 20));
      await sender.pass();
    }
    expect(seen).toEqual([9, 1, 2, 3]);
    expect((await rows()).map((r) => [r.payload.n, r.state, r.attempts])).toEqual([
      [1, 'delivered', 2],
      [2, 'delivered', 1],
      [3, 'delivered', 1],
      [9, 'delivered', 1],
    ]);
  });

  test('a refusal is final: not retried, recorded with its reason, and told to the handler in the same transaction', async () => {
    const told: string[] = [];
    let calls = 0;
    const handler: OutboxHandler<{ n: number }> = {
      async deliver() {
        calls++;
        throw new DeliveryRefused('HTTP 422: Validation Failed');
      },
      async failed(tx, delivery: Delivery<{ n: number }>, reason) {
        const [{ state }] = await tx.query<{ state: string }>('SELECT state FROM outbox WHERE id = $1', [delivery.id]);
        told.push(`${delivery.payload.n} ${state} ${reason}`);
      },
    };
    const sender = createOutboxSender({ store, log, handlers: { test: handler } });
    await store.transaction((tx) => enqueue(tx, 'test', { n: 4 }));
    await sender.pass();
    await sender.pass();
    expect(calls).toBe(1);
    expect(told).toEqual(['4 failed HTTP 422: Validation Failed']);
    expect(await rows()).toEqual([{ state: 'failed', attempts: 1, last_error: 'HTTP 422: Validation Failed', payload: { n: 4 } }]);
  });

  test('out of attempts, a delivery fails for good and says how many it took', async () => {
    const handler: OutboxHandler = {
      async deliver() {
        throw new Error('connect ECONNREFUSED');
      },
    };
    const sender = createOutboxSender({ store, log, handlers: { test: handler }, retry: { baseDelayMs: 1, maxDelayMs: 1, maxAttempts: 3 } });
    await store.transaction((tx) => enqueue(tx, 'test', { n: 5 }));
    for (let i = 0; i < 6; i++) {
      await sender.pass();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await rows()).toEqual([{ state: 'failed', attempts: 3, last_error: 'gave up after 3 attempts: connect ECONNREFUSED', payload: { n: 5 } }]);
  });

  test("a sender that stalls past its lease loses the delivery to another, and its late outcome is not recorded", async () => {
    let release!: () => void;
    const stalled = new Promise<void>((resolve) => (release = resolve));
    let claimed!: () => void;
    const inHand = new Promise<void>((resolve) => (claimed = resolve));
    const delivered: string[] = [];
    const slow = createOutboxSender({
      store,
      log,
      leaseMs: 60_000,
      handlers: {
        test: {
          async deliver() {
            claimed();
            await stalled;
            throw new Error('too late anyway');
          },
        },
      },
    });
    const quick = createOutboxSender({ store, log, handlers: { test: { deliver: async (d) => void delivered.push(d.id) } } });
    await store.transaction((tx) => enqueue(tx, 'test', { n: 6 }));
    const first = slow.pass();
    await inHand;
    expect(await quick.pass()).toBe(0); // claimed, within its lease
    // The slow sender's lease runs out (moved in the database, so a slow machine cannot run it
    // out before the first look).
    await store.query("UPDATE outbox SET next_attempt_at = now() - interval '1 second' WHERE state = 'pending'");
    expect(await quick.pass()).toBe(1);
    release();
    await first;
    expect(delivered).toHaveLength(1);
    expect(await rows()).toEqual([{ state: 'delivered', attempts: 2, last_error: null, payload: { n: 6 } }]);
  });
});
