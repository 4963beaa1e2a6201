import { readFileSync } from 'node:fs';

/**
 * A process as the owner of what it leaves on the host (task directories, containers): its pid and
 * its start time, so a pid the kernel gave to another process since does not pass for it.
 */

/** The start time of a process (clock ticks since boot), or undefined when it is gone. */
export function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** This process as an owner: `pid start`. */
export function processOwner(): string {
  return `${process.pid} ${startTimeOf(process.pid) ?? ''}`;
}

/** Whether the process an owner string (`pid start`) names still runs. */
export function ownerAlive(owner: string): boolean {
  const [pid, start] = owner.trim().split(' ');
  if (!/^\d+$/.test(pid ?? '') || !start) return false;
  return startTimeOf(Number(pid)) === start;
}
