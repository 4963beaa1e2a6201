/** Quotes a value for a POSIX shell. */
const q = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;

/**
 * What a machine runs at boot (EC2 user data, GCE's `startup-script`): `gyre agent` with this
 * task's own token, which is good for this one attempt of this one task and nothing else, never a
 * long-lived credential. The image needs `gyre` (and Node.js) on its PATH; steps run as its
 * `circleci` user when it has one, as CircleCI's machine images do. Once the agent is done the
 * machine powers off (EC2 then terminates it; the sweep deletes a stopped GCE machine).
 */
export function machineStartupScript(input: { gyreUrl: string; token: string; taskId: string; attempt: number }): string {
  return [
    '#!/bin/sh',
    `# Gyre machine for task ${input.taskId}, attempt ${input.attempt}: runs that task only, then powers off.`,
    `export GYRE_URL=${q(input.gyreUrl)}`,
    `export GYRE_TASK_TOKEN=${q(input.token)}`,
    'export GYRE_EXECUTOR=shell',
    'if id circleci >/dev/null 2>&1; then runuser -u circleci -- gyre agent; else gyre agent; fi',
    'poweroff || shutdown -h now',
    '',
  ].join('\n');
}

/** The agent's address and token in a startup script (what a stand-in machine boots with). */
export function parseStartupScript(script: string): { gyreUrl?: string; token?: string } {
  const value = (name: string) => new RegExp(`^export ${name}='([^']*)'$`, 'm').exec(script)?.[1];
  return { gyreUrl: value('GYRE_URL'), token: value('GYRE_TASK_TOKEN') };
}
