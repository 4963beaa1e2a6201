import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTask } from '../../runtime/agent/agent';
import { createAgentClient } from '../../runtime/agent/http-reporter';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import { createLogger } from '../../runtime/logger';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { claimTasks, runnerClass } from '../support/runner-tasks';

const CLASS = 'acme/noise';
const MiB = 1024 * 1024;
/** More than two full chunks of output. */
const BYTES = 9 * MiB + 12_345;

const configPrinting = (file: string) => `version: 2.1
jobs:
  noise:
    machine: true
    resource_class: ${CLASS}
    steps:
      - run: cat ${file}
workflows:
  main:
    jobs: [noise]
`;

/**
 * A step whose output does not compress (random bytes, a binary dumped to the log): a full chunk
 * compresses to a little more than it holds, and the server takes a compressed body no larger
 * than the most a chunk may hold. A remote agent's full chunks must still be taken, every byte.
 */
describe('a loud step whose output does not compress, run by a remote agent over HTTP', () => {
  let g: TestGyre;
  let dir: string;
  let noise: Buffer;
  beforeAll(async () => {
    g = await startTestGyre({ store: 'pglite', env: { GYRE_RUNNER_SLOTS: '0' } });
    dir = mkdtempSync(join(tmpdir(), 'gyre-noise-'));
    noise = randomBytes(BYTES);
    writeFileSync(join(dir, 'noise.bin'), noise);
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is stored whole: its log reads back byte for byte', async () => {
    const token = await runnerClass(g, CLASS);
    await g.addProject('acme/noise', { '.circleci/config.yml': configPrinting(join(dir, 'noise.bin')) });
    const { id } = await g.trigger('acme/noise');
    const [claimed] = await claimTasks(g.url, token, 1);
    const reporter = createAgentClient({ url: g.url, token: claimed.token, taskId: claimed.task.taskId }).reporter();
    const executor = await createShellExecutor({ taskDir: join(dir, 'task') });
    const result = await runTask({ task: claimed.task, reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
    expect(result).toEqual({ outcome: 'success' });

    const jobNumber = await g.firstJobNumber(id);
    const res = await fetch(`${g.url}/api/v2/project/gh/acme/noise/job/${jobNumber}/output?step=0`, { headers: { 'Circle-Token': g.token } });
    expect(res.status).toBe(200);
    const log = Buffer.from(await res.arrayBuffer());
    expect(log.length).toBe(BYTES);
    expect(log.equals(noise)).toBe(true);
    const { jobs } = await g.waitForPipeline(id, 30_000);
    expect(jobs.noise.status).toBe('success');
  }, 90_000);
});
