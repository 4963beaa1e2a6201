/**
 * The timing of a lease, shared by the dispatcher (which grants and ends leases on the database's
 * clock) and the agents (which measure on their own monotonic clock since their last renewal).
 *
 *   renewal sent ──── TTL − margin ────► the agent kills its steps and sends nothing more
 *   renewal committed ── TTL ──► the lease is no longer current: every write under it is refused
 *                                 ── grace ──► the dispatcher ends the attempt (queued again)
 *
 * The agent counts from when it *sent* the renewal, which is never later than when the database
 * granted it, so its deadline falls at least `margin` before the lease expires; the attempt ends a
 * `grace` after that. An agent's steps are therefore dead for `margin + grace` before another
 * attempt of the task can be claimed: no two attempts of a task run at once.
 */

const clamp = (value: number, min: number, max: number) => Math.max(min, Math.min(max, value));

/** How long before its lease would expire an agent that has not renewed it stops its steps. */
export function leaseMarginMs(leaseTtlMs: number): number {
  return Math.round(clamp(leaseTtlMs / 10, 50, 5_000));
}

/** How long after a lease expired the dispatcher ends the attempt; always longer than the margin. */
export function leaseGraceMs(leaseTtlMs: number): number {
  return Math.round(clamp(leaseTtlMs / 5, 100, 10_000));
}

/** Who holds a lease (recorded on the task): a server's built-in runner, a self-hosted runner, the Nomad driver, the machine driver. */
export type LeaseHolder = 'builtin' | 'runner' | 'nomad' | 'machine';
