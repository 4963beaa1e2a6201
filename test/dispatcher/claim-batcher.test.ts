import { createClaimBatcher, type ClaimRequest } from '../../runtime/dispatcher/claim-batcher';

/** A fake claim statement over an in-memory queue that records each batch it was asked for. */
function fakeQueue(tasks: string[], options: { hold?: Promise<void>; fail?: Error } = {}) {
  const batches: string[][] = [];
  const batcher = createClaimBatcher<string>({
    maxBatch: 4,
    maxInFlight: 1,
    async claimFor(_classes, requests: readonly ClaimRequest<string>[]) {
      batches.push(requests.map((r) => r.agentId));
      await options.hold;
      if (options.fail) throw options.fail;
      for (const request of requests) request.resolve(tasks.shift());
    },
  });
  return { batcher, batches };
}

describe('claim batcher', () => {
  it('sends claims made together as one batch, up to the batch size, and gives each its own task', async () => {
    const { batcher, batches } = fakeQueue(['t1', 't2', 't3', 't4', 't5', 't6']);
    const got = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((agent) => batcher.claim(agent, ['medium'])));
    expect(got).toEqual(['t1', 't2', 't3', 't4', 't5', 't6']);
    expect(batches).toEqual([['a', 'b', 'c', 'd'], ['e', 'f']]);
  });

  it('answers nothing to the requests the queue cannot serve', async () => {
    const { batcher } = fakeQueue(['only']);
    expect(await Promise.all([batcher.claim('a', ['x']), batcher.claim('b', ['x'])])).toEqual(['only', undefined]);
  });

  it('collects requests that arrive while a batch is in flight into the next batch', async () => {
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const { batcher, batches } = fakeQueue(['t1', 't2', 't3'], { hold });
    const first = batcher.claim('a', ['x']);
    await new Promise((r) => setImmediate(r));
    const later = [batcher.claim('b', ['x']), batcher.claim('c', ['x'])];
    await new Promise((r) => setImmediate(r));
    expect(batches).toEqual([['a']]);
    release();
    expect(await Promise.all([first, ...later])).toEqual(['t1', 't2', 't3']);
    expect(batches).toEqual([['a'], ['b', 'c']]);
  });

  it('keeps different resource classes in separate batches', async () => {
    const { batcher, batches } = fakeQueue(['t1', 't2']);
    await Promise.all([batcher.claim('a', ['small']), batcher.claim('b', ['large'])]);
    expect(batches).toEqual([['a'], ['b']]);
  });

  it('fails every request of a batch whose statement failed, and serves the next batch', async () => {
    const failing = createClaimBatcher<string>({
      async claimFor(_c, requests) {
        if (requests.some((r) => r.agentId === 'doomed')) throw new Error('connection lost');
        for (const r of requests) r.resolve('ok');
      },
    });
    await expect(Promise.all([failing.claim('doomed', ['x']), failing.claim('b', ['x'])])).rejects.toThrow('connection lost');
    await expect(failing.claim('c', ['x'])).resolves.toBe('ok');
  });

  it('tries a request that lost a limit race again in a later batch', async () => {
    let round = 0;
    const batcher = createClaimBatcher<string>({
      async claimFor(_c, requests, retry) {
        round++;
        for (const r of requests) {
          if (round === 1) retry(r);
          else r.resolve(`round-${round}-races-${r.races}`);
        }
      },
    });
    expect(await batcher.claim('a', ['x'])).toBe('round-2-races-1');
  });
});
