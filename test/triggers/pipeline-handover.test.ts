import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequestAudit, type Audit } from '../../runtime/audit/audit-log';
import { readPendingPipeline, type Conductor } from '../../runtime/conductor/conductor';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createLogger } from '../../runtime/logger';
import { createProjects } from '../../runtime/projects/projects';
import { conductorRole } from '../../runtime/roles/conductor';
import type { Core } from '../../runtime/roles/core';
import type { Store } from '../../runtime/store/store';
import { createTriggers, PIPELINE_CREATED, type StartingPipeline, type Triggers } from '../../runtime/triggers/triggers';
import { openTestStore, testStores } from '../support/database';
import { makeGitRepo } from '../support/gyre';

/**
 * A pipeline triggered in a process whose conductor runs there too is handed over at once, with
 * what starting it reads, instead of its row read back after the NOTIFY: what is handed over must
 * be that row, field for field, and the pipeline must be started once, not by both ways.
 */
const CONFIG = `version: 2.1
parameters:
  n: { type: integer, default: 0 }
  who: { type: string, default: "" }
jobs:
  j:
    docker: [{ image: cimg/base:current }]
    steps: [{ run: echo hi }]
workflows:
  w:
    jobs: [j]
`;

describe.each(testStores())('a pipeline handed from its trigger to the conductor, on %s', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let triggers: Triggers;
  let cacheDir: string;
  let repo: string;
  const log = createLogger({ level: 'silent' });

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
    cacheDir = mkdtempSync(join(tmpdir(), 'gyre-handover-'));
    const forge = createGitForge({ cacheDir });
    const projects = createProjects({ store, forge });
    triggers = createTriggers({ store, forge, projects });
    repo = makeGitRepo({ '.circleci/config.yml': CONFIG });
    execFileSync('git', ['-C', repo, 'tag', 'v1']);
    await projects.add({ org: 'acme', name: `app-${kind}`, repoUrl: repo });
  });
  afterAll(async () => {
    await store.close();
    await drop?.();
    rmSync(cacheDir, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  });

  it('carries what starting it reads back, field for field', async () => {
    const handed: StartingPipeline[] = [];
    const told: string[] = [];
    const off = triggers.onCreated((id, created) => (told.push(id), void created.then((p) => p && handed.push(p))));
    try {
      const branch = await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'api', parameters: { n: 7, who: 'x "y"' } });
      const tag = await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'webhook', tag: 'v1', event: { name: 'push', action: null } as never });
      expect(told).toEqual([branch.id, tag.id]);
      expect(handed.map((p) => p.id)).toEqual([branch.id, tag.id]);
      for (const p of handed) {
        const read = await readPendingPipeline(store, p.id);
        expect(read).toEqual({ ...p, state: 'pending', base_revision: null, schedule_id: null, schedule_name: null, scheduled_workflow_cron: null });
      }
      expect(handed[0]).toMatchObject({ branch: 'main', tag: null, parameters: { n: 7, who: 'x "y"' }, trigger_type: 'api' });
      expect(handed[1]).toMatchObject({ branch: null, tag: 'v1' });
    } finally {
      off();
    }
  });

  it('is not handed over when its trigger wrote more in the transaction (a webhook, a schedule): the conductor reads it', async () => {
    const told: string[] = [];
    const off = triggers.onCreated((id) => told.push(id));
    try {
      await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'webhook', withinTransaction: async () => undefined });
      await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'scheduled_pipeline' });
      expect(told).toEqual([]);
    } finally {
      off();
    }
  });

  it('says so when the pipeline was not committed, and nothing of it is there', async () => {
    const outcomes: (StartingPipeline | undefined)[] = [];
    let told = '';
    const off = triggers.onCreated((id, created) => ((told = id), void created.then((p) => outcomes.push(p))));
    try {
      const refused = triggers.trigger({
        slug: `gh/acme/app-${kind}`,
        type: 'api',
        audit: {
          async record() {
            throw new Error('the audit log is full');
          },
        },
      });
      await expect(refused).rejects.toThrow('the audit log is full');
      await new Promise((r) => setImmediate(r));
      expect(outcomes).toEqual([undefined]);
      expect(await readPendingPipeline(store, told)).toBeUndefined();
    } finally {
      off();
    }
  });

  it("records the request's audit in the pipeline's own statement, or keeps neither when the record cannot be kept", async () => {
    const audit = createRequestAudit({ actor: { login: 'ann' }, action: 'pipeline.trigger', address: '10.0.0.7', org: 'acme' });
    const made = await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'api', audit });
    expect(audit.recorded).toBe(true);
    const [record] = await store.query<{ actor_login: string; target_type: string; detail: Record<string, unknown>; address: string; result: string }>(
      'SELECT actor_login, target_type, detail, address, result FROM audit_events WHERE target_id = $1',
      [made.id],
    );
    const [head] = await store.query<{ revision: string }>('SELECT revision FROM pipelines WHERE id = $1', [made.id]);
    expect(record).toEqual({ actor_login: 'ann', target_type: 'pipeline', detail: { number: made.number, branch: 'main', revision: head.revision }, address: '10.0.0.7', result: 'success' });

    // A record the database refuses (a result it does not allow): no pipeline, no record, and
    // the pipeline's number is not used up.
    let told = '';
    const outcomes: (StartingPipeline | undefined)[] = [];
    const off = triggers.onCreated((id, created) => ((told = id), void created.then((p) => outcomes.push(p))));
    try {
      const refused: Audit = {
        record: audit.record,
        entry: (detail) => {
          const { values } = audit.entry!(detail);
          return { values: values.map((v) => (v === 'success' ? 'bogus' : v)), done: () => undefined };
        },
      };
      await expect(triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'api', audit: refused })).rejects.toThrow();
      await new Promise((r) => setImmediate(r));
      expect(outcomes).toEqual([undefined]);
      expect(await readPendingPipeline(store, told)).toBeUndefined();
      expect(await store.query('SELECT 1 FROM audit_events WHERE target_id = $1', [told])).toEqual([]);
    } finally {
      off();
    }
    const next = await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'api', audit: createRequestAudit({ actor: { login: 'ann' }, action: 'pipeline.trigger', address: '10.0.0.7' }) });
    expect(next.number).toBe(made.number + 1);
  });

  it('is started once by the conductor role, by the hand-over; a pipeline another process made, by its NOTIFY', async () => {
    const starts: { id: string; handed: boolean }[] = [];
    const conductor = {
      async startPipeline(id: string, starting?: StartingPipeline) {
        starts.push({ id, handed: starting !== undefined });
      },
      async jobFinished() {},
      async sweep() {},
    } as unknown as Conductor;
    let warmed = 0;
    const running = await conductorRole.start({ store, conductor, triggers, log, outboxHandlers: {}, warmCompiler: () => void warmed++ } as unknown as Core);
    // The compiler's first thread is asked for as the role starts, before any pipeline.
    expect(warmed).toBe(1);
    try {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await triggers.trigger({ slug: `gh/acme/app-${kind}`, type: 'api' })).id);
      // Made elsewhere: only its NOTIFY comes here.
      const elsewhere = randomUUID();
      await store.notify(PIPELINE_CREATED, elsewhere);
      // Every NOTIFY has come by now (within moments of the commit).
      await new Promise((r) => setTimeout(r, 500));
      const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
      expect([...starts].sort(byId)).toEqual([...ids.map((id) => ({ id, handed: true })), { id: elsewhere, handed: false }].sort(byId));
    } finally {
      await running.stop();
    }
  });
});
