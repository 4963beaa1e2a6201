import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import type { TestGyre } from './gyre';

/** A task claimed by hand with a runner token, as a runner claims it: its task token and context. */
export type Claimed = { token: string; task: TaskContext };

/** A project config whose one job, `work` (one `true` step), runs on the runner resource class `name`. */
export function configOnClass(name: string): string {
  return `version: 2.1
jobs:
  work:
    machine: true
    resource_class: ${name}
    steps: [{ run: 'true' }]
workflows:
  main:
    jobs: [work]
`;
}

/** Creates the runner resource class `name` and returns a runner token for it. */
export async function runnerClass(g: TestGyre, name: string): Promise<string> {
  await g.api('POST', '/api/v2/resource-classes', { name, cpu: 1, memory_mb: 512, driver: 'runner' });
  return (await g.api('POST', `/api/v2/resource-classes/${encodeURIComponent(name)}/tokens`, {})).token;
}

/** Claims `count` tasks with a runner token, waiting for them as a runner does (a refusal throws). */
export async function claimTasks(url: string, runnerToken: string, count: number, runnerId = 'by-hand'): Promise<Claimed[]> {
  const claimed: Claimed[] = [];
  while (claimed.length < count) {
    const res = await fetch(`${url}/api/v2/agent/claim`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${runnerToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ runner_id: runnerId, wait_ms: 10_000 }),
    });
    if (res.status === 200) {
      claimed.push((await res.json()) as Claimed);
      continue;
    }
    const text = await res.text();
    if (res.status !== 204) throw new Error(`claim answered ${res.status}: ${text}`);
  }
  return claimed;
}
