/**
 * A remote agent for the log ingestion benchmark, in a process of its own as `gyre runner` and
 * `gyre agent` are: claims `runs` tasks with a runner token, one at a time, runs each with the
 * printing step (bench/log-printer.ts), masking off and on in turn (off first), and prints one
 * JSON line per task: `{"masking", "seconds", "lines"}`.
 *
 * Usage: node bin/run-ts.js bench/remote-agent.ts <url> <runner-token> <bytes> <runs> <work-dir>
 */
import { useAgentHeapGrowth } from '../runtime/agent/agent-heap';
import { createAgentClient } from '../runtime/agent/http-reporter';
import { claimTasks } from '../test/support/runner-tasks';
import { timedLoudStep, type Masking } from './log-printer';

async function main(): Promise<void> {
  // As `gyre agent` and `gyre runner` do in a process of their own.
  useAgentHeapGrowth();
  const [url, runnerToken, bytes, runs, workDir] = process.argv.slice(2);
  if (!workDir) throw new Error('usage: remote-agent <url> <runner-token> <bytes> <runs> <work-dir>');
  for (let run = 0; run < Number(runs); run++) {
    const [{ token, task }] = await claimTasks(url, runnerToken, 1, 'bench-remote-agent');
    const reporter = createAgentClient({ url, token, taskId: task.taskId }).reporter();
    const masking: Masking = run % 2 === 0 ? 'off' : 'on';
    console.log(JSON.stringify({ masking, ...(await timedLoudStep(task, reporter, Number(bytes), workDir, masking)) }));
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
