import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../runtime/logger';
import { startRunner } from '../../runtime/scheduler/runner';
import { validateResourceClass } from '../../runtime/scheduler/resource-classes';
import { startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Classes Gyre cannot run are refused, not faked: a macOS, Windows or Arm job waits for a runner
 * registered for its class (shown `not_running`, with the reason), never runs on the built-in
 * runner's Linux shell, and fails after GYRE_UNSERVED_CLASS_TIMEOUT_MS naming what to register.
 */
/** Long enough that the second case registers its class in time on a loaded machine (3 s did not always). */
const TIMEOUT_MS = 8000;

describe('jobs of classes no driver serves', () => {
  let g: TestGyre;
  const work = mkdtempSync(join(tmpdir(), 'gyre-unserved-'));
  const ledger = (name: string) => join(work, `ran-${name}`);
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_UNSERVED_CLASS_TIMEOUT_MS: String(TIMEOUT_MS) } });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const jobOf = (slug: string, number: number) => g.api('GET', `/api/v2/project/${slug}/job/${number}`);
  async function jobsOf(pipelineId: string): Promise<Record<string, any>> {
    for (const deadline = Date.now() + 10_000; ; ) {
      const [wf] = (await g.api('GET', `/api/v2/pipeline/${pipelineId}/workflow`)).items;
      const items = wf ? (await g.api('GET', `/api/v2/workflow/${wf.id}/job`)).items : [];
      if (items.length > 0 && items.every((j: any) => j.job_number)) return Object.fromEntries(items.map((j: any) => [j.name, j]));
      if (Date.now() > deadline) throw new Error('no jobs queued');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('a macOS or Windows job waits with the reason, is never claimed by the built-in runner, and fails after the timeout naming the runner to register', async () => {
    await g.addProject('gh/acme/apple', {
      '.circleci/config.yml': `version: 2.1
jobs:
  mac:
    macos: { xcode: 15.4.0 }
    steps:
      - run: touch ${ledger('mac')}
  win:
    machine: { image: windows-server-2022-gui:current }
    resource_class: windows.medium
    steps:
      - run: touch ${ledger('win')}
  linux:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: touch ${ledger('linux')}
workflows:
  w:
    jobs: [mac, win, linux]
`,
    });
    const started = Date.now();
    const { id } = await g.trigger('gh/acme/apple');
    const jobs = await jobsOf(id);
    const mac = await jobOf('gh/acme/apple', jobs.mac.job_number);
    expect(mac.status).toBe('not_running');
    expect(mac.executor.type).toBe('macos');
    expect(mac.messages).toEqual([
      expect.objectContaining({
        type: 'warning',
        reason: 'unserved_resource_class',
        message: expect.stringContaining('No runner serves resource class macos.m1.medium.gen1'),
      }),
    ]);
    expect(mac.messages[0].message).toContain('gyre resource-class add macos.m1.medium.gen1 --driver runner');
    expect(mac.messages[0].message).toContain('within 8 s (GYRE_UNSERVED_CLASS_TIMEOUT_MS)');
    expect(jobs.win.status).toBe('not_running');

    const done = await g.waitForPipeline(id, 30_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS);
    expect(done.jobs.linux.status).toBe('success');
    expect(done.jobs.mac.status).toBe('failed');
    expect(done.jobs.win.status).toBe('failed');
    expect(done.workflows[0].status).toBe('failed');
    const failedMac = await jobOf('gh/acme/apple', jobs.mac.job_number);
    expect(failedMac.messages).toEqual([expect.objectContaining({ type: 'error', reason: 'unserved_resource_class' })]);
    expect(failedMac.messages[0].message).toMatch(/^No runner was registered for resource class macos\.m1\.medium\.gen1 within 8 s .*so this macOS job did not run\. .*gyre resource-class token macos\.m1\.medium\.gen1.*gyre runner --url/);
    const failedWin = await jobOf('gh/acme/apple', jobs.win.job_number);
    expect(failedWin.messages[0].message).toContain('resource class windows.medium');
    // Never run on a Linux shell: no step, no attempt.
    expect(existsSync(ledger('linux'))).toBe(true);
    expect(existsSync(ledger('mac'))).toBe(false);
    expect(existsSync(ledger('win'))).toBe(false);
    expect((await g.api('GET', `/api/v2/project/gh/acme/apple/job/${jobs.mac.job_number}/steps`)).items).toEqual([]);
    const attempts = await g.gyre.store.query<{ attempt: number; status: string }>(
      `SELECT t.attempt, t.status FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.name IN ('mac', 'win') AND j.workflow_id = (SELECT id FROM workflows WHERE pipeline_id = $1)`,
      [id],
    );
    expect(attempts).toEqual([
      { attempt: 0, status: 'failed' },
      { attempt: 0, status: 'failed' },
    ]);
  }, 60_000);

  it('registering a runner for the class before the timeout lets the job run on it', async () => {
    await g.addProject('gh/acme/arm', {
      '.circleci/config.yml': `version: 2.1
jobs:
  arm:
    docker: [{ image: cimg/base:stable }]
    resource_class: arm.medium
    steps:
      - run: touch ${ledger('arm')}
workflows:
  w:
    jobs: [arm]
`,
    });
    const { id } = await g.trigger('gh/acme/arm');
    const jobs = await jobsOf(id);
    expect((await jobOf('gh/acme/arm', jobs.arm.job_number)).status).toBe('not_running');
    // An admin registers the class for runners and starts one: a platform class needs no namespace.
    await g.api('POST', '/api/v2/resource-classes', { name: 'arm.medium', cpu: 2, memory_mb: 4096, driver: 'runner' });
    const { token } = await g.api('POST', '/api/v2/resource-classes/arm.medium/tokens', {});
    const runner = startRunner({ url: g.url, token, log: createLogger({ level: 'silent' }), workRoot: join(work, 'runner'), executor: { choice: 'shell' }, pollMs: 1000 });
    try {
      const done = await g.waitForPipeline(id, 30_000);
      expect(done.jobs.arm.status).toBe('success');
      expect(existsSync(ledger('arm'))).toBe(true);
      // Run by the runner, and the reason it waited is gone.
      expect((await jobOf('gh/acme/arm', jobs.arm.job_number)).messages).toEqual([]);
      const [task] = await g.gyre.store.query<{ lease_holder: string | null; agent_id: string }>(
        `SELECT t.agent_id, t.lease_holder FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.name = 'arm' AND j.workflow_id = (SELECT id FROM workflows WHERE pipeline_id = $1)`,
        [id],
      );
      expect(task.agent_id).not.toMatch(/^builtin-/);
    } finally {
      runner.stop();
      await runner.done;
    }
  }, 60_000);

  it('takes platform classes for runners without a namespace, and still refuses other names', () => {
    expect(validateResourceClass({ name: 'macos.m1.medium.gen1', cpu: 4, memory: 8192, driver: 'runner' })).toMatchObject({ name: 'macos.m1.medium.gen1', driver: 'runner' });
    expect(() => validateResourceClass({ name: 'linux-large', cpu: 4, memory: 8192, driver: 'runner' })).toThrow(/<namespace>\/<name>.*'linux-large' is not/);
    expect(() => validateResourceClass({ name: 'arm.medium; DROP', cpu: 4, memory: 8192, driver: 'runner' })).toThrow(/name/);
  });
});
