/**
 * A remote agent for the log ingestion benchmark, in a process of its own as `gyre runner` and
 * `gyre agent` are: claims `runs` tasks with a runner token, one at a time, runs each with the
 * printing step (bench/log-printer.ts), and prints one JSON line per task: `{"seconds", "lines"}`.
 *
 * Usage: node bin/run-ts.js bench/remote-agent.ts <url> <runner-token> <bytes> <runs> <work-dir>
 */
import { createAgentClient } from '../runtime/agent/http-reporter';
import type { TaskContext } from '../runtime/dispatcher/dispatcher';
import { timedLoudStep } from './log-printer';

async function main(): Promise<void> {
  const [url, runnerToken, bytes, runs, workDir] = process.argv.slice(2);
  if (!workDir) throw new Error('usage: remote-agent <url> <runner-token> <bytes> <runs> <work-dir>');
  for (let run = 0; run < Number(runs); ) {
    const res = await fetch(`${url}/api/v2/agent/claim`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${runnerToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ runner_id: 'bench-remote-agent', wait_ms: 10_000 }),
    });
    if (res.status !== 200) {
      await res.arrayBuffer();
      if (res.status !== 204) throw new Error(`claim answered ${res.status}`);
      continue;
    }
    const { token, task } = (await res.json()) as { token: string; task: TaskContext };
    const reporter = createAgentClient({ url, token, taskId: task.taskId }).reporter();
    console.log(JSON.stringify(await timedLoudStep(task, reporter, Number(bytes), workDir)));
    run++;
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
