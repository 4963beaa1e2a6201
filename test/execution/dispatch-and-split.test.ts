import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type CliIo } from '../../runtime/cli/main';
import { splitFiles } from '../../runtime/cli/tests-command';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';

function captureIo(env: Record<string, string | undefined> = {}) {
  let out = '';
  let err = '';
  const io: CliIo = { stdout: (t) => (out += t), stderr: (t) => (err += t), env };
  return { io, out: () => out, err: () => err };
}

describe.each(flowStore())('dispatching on %s: resource classes, limits, fair queueing', (store) => {
  let g: TestGyre;
  const work = mkdtempSync(join(tmpdir(), 'gyre-limits-'));
  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '4' } });
  });
  afterAll(async () => {
    await g.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('gyre resource-class add/list/token and gyre limit, as an admin; bad values are refused naming the field', async () => {
    const env = { GYRE_URL: g.url, GYRE_TOKEN: g.token };
    const add = captureIo(env);
    expect(await run(['resource-class', 'add', 'acme/xl', '--cpu', '8', '--memory', '16384', '--driver', 'nomad'], add.io)).toBe(0);
    expect(add.out()).toBe('resource class acme/xl: 8 cpu, 16384 MiB, driver nomad\n');
    const list = captureIo(env);
    expect(await run(['resource-class', 'list'], list.io)).toBe(0);
    expect(list.out()).toContain('acme/xl\t8\t16384\tnomad\n');
    const token = captureIo(env);
    expect(await run(['resource-class', 'token', 'acme/xl'], token.io)).toBe(0);
    expect(token.out()).toMatch(/^gyre-rc\.\S+\n$/);
    const dup = captureIo(env);
    expect(await run(['resource-class', 'add', 'acme/xl', '--cpu', '1', '--memory', '512'], dup.io)).toBe(1);
    expect(dup.err()).toMatch(/already exists/);
    const bad = await g.raw('POST', '/api/v2/resource-classes', { body: JSON.stringify({ name: 'x', cpu: 1, memory_mb: 10, driver: 'runner' }) });
    expect(bad).toMatchObject({ status: 400, body: { message: expect.stringMatching(/^memory \(10\)/) } });
    const limit = captureIo(env);
    expect(await run(['limit', 'org', 'nobody', '2'], limit.io)).toBe(0);
    expect(limit.out()).toBe('org nobody: at most 2 running\n');
  });

  it('a project limit of 1 runs a parallel job one task at a time; an organisation limit applies across its projects', async () => {
    const lock = join(work, 'lock');
    const ledger = join(work, 'ledger');
    const cmd = `if mkdir ${lock} 2>/dev/null; then sleep 0.3; rmdir ${lock}; echo ok >> ${ledger}; else echo OVERLAP >> ${ledger}; fi`;
    const cfg = `version: 2.1
jobs:
  par:
    machine: true
    parallelism: 3
    steps:
      - run: ${JSON.stringify(cmd)}
workflows:
  w:
    jobs: [par]
`;
    await g.api('PUT', '/api/v2/concurrency-limits/project/gh/limited/one', { max_running: 1 });
    await g.addProject('limited/one', { '.circleci/config.yml': cfg });
    const { id } = await g.trigger('limited/one');
    expect((await g.waitForPipeline(id)).jobs.par.status).toBe('success');
    expect(readFileSync(ledger, 'utf8')).toBe('ok\nok\nok\n');

    writeFileSync(ledger, '');
    await g.api('PUT', '/api/v2/concurrency-limits/org/orgcap', { max_running: 1 });
    await g.addProject('orgcap/a', { '.circleci/config.yml': cfg.replace('parallelism: 3', 'parallelism: 2') });
    await g.addProject('orgcap/b', { '.circleci/config.yml': cfg.replace('parallelism: 3', 'parallelism: 2') });
    const [a, b] = [await g.trigger('orgcap/a'), await g.trigger('orgcap/b')];
    expect((await g.waitForPipeline(a.id)).jobs.par.status).toBe('success');
    expect((await g.waitForPipeline(b.id)).jobs.par.status).toBe('success');
    expect(readFileSync(ledger, 'utf8')).toBe('ok\nok\nok\nok\n');
  }, 60_000);

  it('queues fairly: a project that queues one task after another queued many is served second, not last', async () => {
    await g.api('POST', '/api/v2/resource-classes', { name: 'fair/rc', cpu: 1, memory_mb: 512, driver: 'runner' });
    const token = (await g.api('POST', '/api/v2/resource-classes/fair%2Frc/tokens', {})).token;
    const cfg = (n: number) => `version: 2.1
jobs:
  j:
    machine: true
    resource_class: fair/rc
    parallelism: ${n}
    steps: [{ run: "true" }]
workflows:
  w:
    jobs: [j]
`;
    await g.addProject('fair/big', { '.circleci/config.yml': cfg(5) });
    await g.addProject('fair/small', { '.circleci/config.yml': cfg(1) });
    const big = await g.trigger('fair/big');
    const queued = async (slug: string) =>
      (await g.gyre.store.query(`SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN projects p ON p.id = j.project_id WHERE p.slug = $1`, [slug])).length;
    await until('big to queue its five tasks', async () => (await queued('gh/fair/big')) >= 5, 30_000, 50);
    await g.trigger('fair/small');
    await until('small to queue its task', async () => (await queued('gh/fair/small')) >= 1, 30_000, 50);
    const order: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${g.url}/api/v2/agent/claim`, { method: 'POST', headers: { Authorization: `Bearer ${token}` }, body: '{}' });
      const body = (await res.json()) as any;
      order.push(body.task.projectSlug);
    }
    expect(order.slice(0, 2).sort()).toEqual(['gh/fair/big', 'gh/fair/small']);
    expect(order.filter((s) => s === 'gh/fair/big')).toHaveLength(5);
    expect(big.id).toBeDefined();
  });
});

describe('gyre tests glob and split', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gyre-split-'));
  const cwd = process.cwd();
  beforeAll(() => {
    for (const f of ['a/one.test.ts', 'a/two.test.ts', 'b/c/three.test.ts', 'b/four.spec.js', 'b/skip.txt', 'node_modules/x.test.ts']) {
      mkdirSync(join(dir, f, '..'), { recursive: true });
      writeFileSync(join(dir, f), 'x'.repeat(f.length * 100));
    }
    process.chdir(dir);
  });
  afterAll(() => {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  });

  it('globs with **, * and braces, sorted, skipping node_modules', async () => {
    const c = captureIo();
    expect(await run(['tests', 'glob', '**/*.{test.ts,spec.js}'], c.io)).toBe(0);
    expect(c.out()).toBe('a/one.test.ts\na/two.test.ts\nb/c/three.test.ts\nb/four.spec.js\n'.split('\n').filter(Boolean).sort().join('\n') + '\n');
  });

  it('splits by name across CIRCLE_NODE_TOTAL nodes: every file on exactly one node', async () => {
    const files = ['a/one.test.ts', 'a/two.test.ts', 'b/c/three.test.ts', 'b/four.spec.js'];
    const shares: string[] = [];
    for (const index of [0, 1, 2]) {
      const c = captureIo({ CIRCLE_NODE_INDEX: String(index), CIRCLE_NODE_TOTAL: '3' });
      expect(await run(['tests', 'split', ...files], c.io)).toBe(0);
      shares.push(...c.out().split('\n').filter(Boolean));
    }
    expect(shares.sort()).toEqual([...files].sort());
  });

  it('splits by timings into balanced nodes, and by name (with a note) when no timings exist', async () => {
    writeFileSync(join(dir, 'timings.json'), JSON.stringify({ 'a/one.test.ts': 10, 'a/two.test.ts': 6, 'b/c/three.test.ts': 5, 'b/four.spec.js': 1 }));
    const node = async (index: number) => {
      const c = captureIo({ CIRCLE_NODE_INDEX: String(index), CIRCLE_NODE_TOTAL: '2' });
      await run(['tests', 'split', '--split-by=timings', '--timings-file', 'timings.json', 'a/one.test.ts', 'a/two.test.ts', 'b/c/three.test.ts', 'b/four.spec.js'], c.io);
      return c.out().split('\n').filter(Boolean);
    };
    // 10 + 1 against 6 + 5: eleven seconds each.
    expect(await node(0)).toEqual(['a/one.test.ts', 'b/four.spec.js']);
    expect(await node(1)).toEqual(['a/two.test.ts', 'b/c/three.test.ts']);
    const none = captureIo({ CIRCLE_NODE_INDEX: '0', CIRCLE_NODE_TOTAL: '2' });
    await run(['tests', 'split', '--split-by=timings', 'a/one.test.ts', 'a/two.test.ts'], none.io);
    expect(none.err()).toMatch(/no timing data found; splitting by name/);
    expect(none.out()).toBe('a/one.test.ts\n');
    expect(splitFiles(['x', 'y', 'z'], 1, 2, new Map([['x', 1], ['y', 1], ['z', 5]]))).toEqual(['x', 'y']);
  });

  it('splits by file size', async () => {
    const c = captureIo({ CIRCLE_NODE_INDEX: '0', CIRCLE_NODE_TOTAL: '2' });
    await run(['tests', 'split', '--split-by=filesize', 'a/one.test.ts', 'b/c/three.test.ts', 'b/four.spec.js'], c.io);
    expect(c.out()).toBe('b/c/three.test.ts\n');
  });
});
