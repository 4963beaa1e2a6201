import type { Cadence } from './timetable';

/**
 * The missed-tick policy, pure. A schedule keeps the first tick it has not handled yet
 * (`next_fire_at`). When the cron role finds it due, every tick from there up to now is handled at
 * once:
 *
 * - the latest of them fires, if it is at most CATCH_UP_WINDOW_MS old (one hour, as CircleCI: a
 *   schedule whose ticks were missed while Gyre was down, or busy, runs once when Gyre is back);
 * - every older one is skipped, so a long outage never starts a burst of pipelines;
 * - the schedule's next tick becomes the first one after now.
 *
 * On time, "the latest tick due" is simply the tick that just came, so the same rule serves both.
 */
export const CATCH_UP_WINDOW_MS = 60 * 60_000;

export interface TickPlan {
  /** The tick to fire now, if any. */
  readonly fire?: Date;
  /** Ticks due but not fired (older than the window, or earlier than the one fired); counted up to 1000. */
  readonly skipped: number;
  /** The schedule's next unhandled tick (undefined: it never fires again). */
  readonly next?: Date;
}

/** Counting skipped ticks (for the log) stops here: a per-minute schedule down for a month has 43,200. */
const MAX_COUNTED = 1000;

export function planDueTicks(cadence: Cadence, nextFireAt: Date, now: Date, windowMs = CATCH_UP_WINDOW_MS): TickPlan {
  if (nextFireAt.getTime() > now.getTime()) return { skipped: 0, next: nextFireAt };
  const latest = cadence.latest(now);
  const due = latest !== undefined && latest.getTime() >= nextFireAt.getTime();
  const fire = due && now.getTime() - latest.getTime() <= windowMs ? latest : undefined;
  let skipped = 0;
  if (due) {
    // The ticks from next_fire_at up to the latest, less the one fired.
    for (let t: Date | undefined = nextFireAt; t && t.getTime() <= latest.getTime() && skipped < MAX_COUNTED; t = cadence.next(t)) skipped++;
    if (fire) skipped--;
  }
  return { ...(fire ? { fire } : {}), skipped, next: cadence.next(now) };
}
