import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cancelRedundantWorkflows } from '../../runtime/conductor/auto-cancel';
import { flowStore, startTestGyre, commitFiles, type TestGyre } from '../support/gyre';

/**
 * Auto-cancel of redundant workflows (CircleCI's `autocancel_builds`), through a whole Gyre with the
 * shell executor: a new pipeline on a branch other than the default one cancels the unfinished
 * workflows of the older pipelines on that branch, and a running job's process is stopped. Left
 * alone: the default branch, tags, other branches, newer pipelines, and every project with the
 * setting off. A workflow waiting for approval stands in for "unfinished" where no process is
 * needed: it stays on hold until something cancels it. On PGlite and, with DATABASE_URL, PostgreSQL.
 */

const configIn = (pidDir: string) => `version: 2.1
parameters:
  sleep: { type: integer, default: 0 }
  hold: { type: boolean, default: false }
jobs:
  work:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: sleep
          command: |
            echo $$ > "${pidDir}/pid-<< pipeline.number >>"
            exec sleep << pipeline.parameters.sleep >>
workflows:
  build:
    when:
      not: << pipeline.parameters.hold >>
    jobs:
      - work: { filters: { tags: { only: /.*/ } } }
  held:
    when: << pipeline.parameters.hold >>
    jobs:
      - wait: { type: approval, filters: { tags: { only: /.*/ } } }
`;

/** Whether a process runs (a zombie waiting to be reaped does not). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.each(flowStore())('auto-cancel of redundant workflows (%s)', (store) => {
  let g: TestGyre;
  let pidDir: string;

  beforeAll(async () => {
    g = await startTestGyre({ store });
    pidDir = mkdtempSync(join(tmpdir(), 'gyre-auto-cancel-'));
    for (const name of ['auto', 'plain']) {
      const repo = await g.addProject(`gh/acme/${name}`, { '.circleci/config.yml': configIn(pidDir) });
      commitFiles(repo, 'feature', { 'feature.txt': 'f' });
      commitFiles(repo, 'other', { 'other.txt': 'o' });
      execFileSync('git', ['tag', 'v1', 'main'], { cwd: repo, stdio: 'pipe' });
    }
    await g.api('PATCH', '/api/v2/project/gh/acme/auto/settings', { advanced: { autocancel_builds: true } });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    if (pidDir) rmSync(pidDir, { recursive: true, force: true });
  });

  const trigger = (project: string, ref: { branch?: string; tag?: string }, parameters: Record<string, unknown> = {}) => g.trigger(`gh/acme/${project}`, { ...ref, parameters });
  /** The pipeline's (one) workflow, once `accept` takes its status. */
  const workflowOf = (pipelineId: string, accept: (status: string) => boolean) =>
    until(`a workflow of pipeline ${pipelineId}`, async () => {
      const [workflow] = (await g.api('GET', `/api/v2/pipeline/${pipelineId}/workflow`)).items;
      return workflow && accept(workflow.status) ? (workflow as { id: string; status: string; canceled_by?: string }) : undefined;
    });
  const held = async (project: string, ref: { branch?: string; tag?: string }) => {
    const pipeline = await trigger(project, ref, { hold: true });
    return { ...pipeline, workflow: await workflowOf(pipeline.id, (s) => s === 'on_hold') };
  };
  const statusOf = async (workflowId: string) => (await g.api('GET', `/api/v2/workflow/${workflowId}`)).status;

  it('a new pipeline on a branch cancels the older ones’ unfinished workflows there: a running job’s process is stopped, the new pipeline runs', async () => {
    const onOther = await held('auto', { branch: 'other' });
    const waiting = await held('auto', { branch: 'feature' });

    const slow = await trigger('auto', { branch: 'feature' }, { sleep: 30 });
    // The workflow on hold was older on the same branch: canceled, and its approval job with it.
    const { workflows: waitingWorkflows, jobs: waitingJobs } = await g.waitForPipeline(waiting.id, 30_000);
    expect([waitingWorkflows[0].status, waitingJobs.wait.status]).toEqual(['canceled', 'canceled']);

    const pid = await until('the slow job’s process', () => {
      try {
        return Number(readFileSync(join(pidDir, `pid-${slow.number}`), 'utf8'));
      } catch {
        return undefined;
      }
    });
    // The pid is written just before the shell becomes `sleep` (exec): wait for that, not race it.
    const comm = () => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        return undefined;
      }
    };
    await until('the slow job’s shell to exec sleep', () => (comm() === 'sleep' ? true : undefined));
    expect(comm()).toBe('sleep');
    const slowWorkflow = await workflowOf(slow.id, (s) => s === 'running');

    const fresh = await trigger('auto', { branch: 'feature' });
    // The older workflow is canceled in the transaction that creates the new one's: from then on,
    // what is left is stopping the process (timed from there, so a slow compile is not counted).
    await workflowOf(fresh.id, () => true);
    const started = Date.now();
    const { workflows, jobs } = await g.waitForPipeline(slow.id, 30_000);
    expect([workflows[0].status, jobs.work.status]).toEqual(['canceled', 'canceled']);
    await until('the slow job’s process to end', () => (running(pid) ? undefined : true), 15_000);
    // About 1 s when idle; the bound leaves room for a loaded machine and is half the step's sleep.
    expect(Date.now() - started).toBeLessThan(15_000);

    const freshRun = await g.waitForPipeline(fresh.id, 20_000);
    expect([freshRun.workflows[0].status, freshRun.jobs.work.status]).toEqual(['success', 'success']);
    // Another branch's workflow is not redundant.
    expect(await statusOf(onOther.workflow.id)).toBe('on_hold');

    // In the audit log: canceled by the system, on behalf of the new pipeline. No user canceled it.
    const audit = (await g.api('GET', '/api/v2/audit?limit=100')).items.filter((i: any) => i.action === 'workflow.cancel');
    expect(audit).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          actor: expect.objectContaining({ id: null, login: 'gyre' }),
          result: 'success',
          target: { type: 'workflow', id: slowWorkflow.id },
          project: 'gh/acme/auto',
          organization: 'acme',
          detail: { reason: 'autocancel_builds', branch: 'feature', pipeline_number: slow.number, canceled_by_pipeline: { id: fresh.id, number: fresh.number } },
        }),
        expect.objectContaining({ target: { type: 'workflow', id: waiting.workflow.id }, detail: expect.objectContaining({ canceled_by_pipeline: { id: slow.id, number: slow.number } }) }),
      ]),
    );
    expect(workflows[0].canceled_by).toBeUndefined();
  }, 120_000);

  it('leaves the default branch, tags and newer pipelines alone', async () => {
    const onMain = await held('auto', { branch: 'main' });
    const onTag = await held('auto', { tag: 'v1' });
    for (const ref of [{ branch: 'main' }, { tag: 'v1' }]) {
      const { id } = await trigger('auto', ref);
      expect((await g.waitForPipeline(id, 20_000)).workflows[0].status).toBe('success');
    }
    expect([await statusOf(onMain.workflow.id), await statusOf(onTag.workflow.id)]).toEqual(['on_hold', 'on_hold']);

    // An older pipeline created (or started) late does not cancel a newer one: auto-cancel run for
    // the older pipeline finds nothing, though the newer one's workflow on the same branch waits.
    const older = await trigger('auto', { branch: 'feature' });
    await g.waitForPipeline(older.id, 20_000);
    const newer = await held('auto', { branch: 'feature' });
    const asked: string[] = [];
    const canceled = await g.gyre.store.transaction((tx) => cancelRedundantWorkflows(tx, older.id, async (_tx, id) => void asked.push(id)));
    expect([canceled, asked]).toEqual([[], []]);
    expect(await statusOf(newer.workflow.id)).toBe('on_hold');
  }, 40_000);

  it('with the setting off, nothing is canceled', async () => {
    expect((await g.api('GET', '/api/v2/project/gh/acme/plain/settings')).advanced.autocancel_builds).toBe(false);
    const waiting = await held('plain', { branch: 'feature' });
    const { id } = await trigger('plain', { branch: 'feature' });
    expect((await g.waitForPipeline(id, 20_000)).workflows[0].status).toBe('success');
    expect(await statusOf(waiting.workflow.id)).toBe('on_hold');
  }, 30_000);
});
