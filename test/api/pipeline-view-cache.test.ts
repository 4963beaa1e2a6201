/**
 * The answers of `GET /api/v2/pipeline/{id}` kept in memory (runtime/api/pipeline-view-cache.ts):
 * a poll costs no query, and a change is never hidden for longer than it takes its NOTIFY to
 * arrive (DEFAULT_PIPELINE_VIEW_TTL_MS at most). The flow through a server, with a change made
 * straight to the database as another process would, is in test/api-clients/credential-cache.test.ts.
 */
import { createPipelineViewCache, DEFAULT_PIPELINE_VIEW_TTL_MS, PIPELINE_CHANGED_CHANNEL } from '../../runtime/api/pipeline-view-cache';
import { IDENTITY_CHANGED_CHANNEL } from '../../runtime/identity/credential-cache';
import { readGate } from '../support/read-gate';

interface View {
  id: string;
  state: string;
  errors: string[];
}

async function setup() {
  let clock = 1_000_000;
  const listeners = new Map<string, (payload: string) => void>();
  const rows = new Map<string, View>([
    ['p1', { id: 'p1', state: 'created', errors: [] }],
    ['p2', { id: 'p2', state: 'created', errors: [] }],
    ['p3', { id: 'p3', state: 'pending', errors: [] }],
  ]);
  let reads = 0;
  const gate = readGate();
  const cache = await createPipelineViewCache({
    store: {
      async listen(channel, handler) {
        listeners.set(channel, handler);
        return async () => void listeners.delete(channel);
      },
    },
    now: () => clock,
  });
  const get = (id: string) =>
    cache.get(
      id,
      async () => {
        reads++;
        const row = { ...rows.get(id)! };
        await gate.passed();
        return row;
      },
      (v) => v.state === 'created' || v.state === 'errored',
    );
  return {
    cache,
    get,
    reads: () => reads,
    change: (id: string, errors: string[]) => rows.set(id, { ...rows.get(id)!, errors }),
    notify: (channel: string, payload: string) => listeners.get(channel)!(payload),
    listening: () => [...listeners.keys()].sort(),
    tick: (ms: number) => (clock += ms),
    holdReads: gate.hold,
  };
}

describe('the pipeline answer cache', () => {
  it('answers a settled pipeline from memory until its time is up', async () => {
    const t = await setup();
    await t.get('p1');
    t.change('p1', ['a GitHub status could not be set']);
    expect((await t.get('p1')).errors).toEqual([]);
    expect(t.reads()).toBe(1);
    t.tick(DEFAULT_PIPELINE_VIEW_TTL_MS + 1);
    expect((await t.get('p1')).errors).toEqual(['a GitHub status could not be set']);
    expect(t.reads()).toBe(2);
  });

  it("drops a pipeline's answer when its change is announced, and only that one", async () => {
    const t = await setup();
    await t.get('p1');
    await t.get('p2');
    t.change('p1', ['changed']);
    t.change('p2', ['changed too']);
    t.notify(PIPELINE_CHANGED_CHANNEL, 'p1');
    expect((await t.get('p1')).errors).toEqual(['changed']);
    expect((await t.get('p2')).errors).toEqual([]);
    t.notify(PIPELINE_CHANGED_CHANNEL, '*');
    expect((await t.get('p2')).errors).toEqual(['changed too']);
  });

  it('drops everything on a change to projects or users, whose names every answer shows', async () => {
    const t = await setup();
    expect(t.listening()).toEqual([PIPELINE_CHANGED_CHANNEL, IDENTITY_CHANGED_CHANNEL].sort());
    await t.get('p1');
    t.change('p1', ['renamed']);
    t.notify(IDENTITY_CHANGED_CHANNEL, 'projects');
    expect((await t.get('p1')).errors).toEqual(['renamed']);
  });

  it('reads a pipeline still being set up every time', async () => {
    const t = await setup();
    await t.get('p3');
    await t.get('p3');
    expect(t.reads()).toBe(2);
  });

  it('does not keep an answer read while a change was announced', async () => {
    const t = await setup();
    const release = t.holdReads();
    const slow = t.get('p1');
    t.change('p1', ['made while the read was under way']);
    t.notify(PIPELINE_CHANGED_CHANNEL, 'p1');
    release();
    expect((await slow).errors).toEqual([]);
    expect((await t.get('p1')).errors).toEqual(['made while the read was under way']);
  });

  it('stops listening when closed', async () => {
    const t = await setup();
    await t.cache.close();
    expect(t.listening()).toEqual([]);
  });
});
