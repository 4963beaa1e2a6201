import type { JobSpec } from '../config/plan';
import { platformResourceClass } from '../scheduler/unserved-classes';

/** The image key `machine: true` (no image) maps through. */
export const DEFAULT_MACHINE_IMAGE = 'default';

/**
 * Claim tags (passed among the resource classes of a claim; the dispatcher's claim reads them):
 * `@machine` claims only tasks of `machine:` jobs (the machine driver); `!machine` keeps a `*`
 * claim off them (the built-in runner of a process whose machine driver runs them).
 */
export const MACHINE_CLAIM = '@machine';
export const NO_MACHINE_TASKS = '!machine';

/**
 * The image a task of this job asks the machine executor for (recorded on the task), or null for
 * a job that is not a Linux `machine:` job (Windows images wait for a runner of their class).
 */
export function machineImageOf(spec: JobSpec): string | null {
  if (spec.executor.kind !== 'machine' || platformResourceClass(spec)) return null;
  return spec.executor.image || DEFAULT_MACHINE_IMAGE;
}
