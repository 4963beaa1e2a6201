/**
 * A view is what one page owns while it is on screen: its timers and its event streams. Leaving
 * the page disposes the view, which stops them all; work that finishes after that checks
 * `view.alive` and draws nothing.
 */
import { SignInRequired } from './api.js';
import { flash, requireSignIn } from './dom.js';

export const POLL_MS = 2000;
export const IDLE_POLL_MS = 10000;

export function createView() {
  const view = {
    alive: true,
    timers: new Set(),
    sources: new Set(),
    cleanups: [],
    /** Runs `fn` when the page is left (to let go of what a library holds, such as a chart). */
    onDispose(fn) {
      view.cleanups.push(fn);
    },
    /** Runs `fn` now and again after `delay(result)` ms (null stops) until the page is left. */
    poll(fn, delay) {
      const tick = async () => {
        if (!view.alive) return;
        let next = null;
        try {
          next = delay(await fn());
        } catch (err) {
          if (!view.alive) return;
          if (err instanceof SignInRequired) return requireSignIn();
          flash(err.message);
          next = POLL_MS * 2;
        }
        if (view.alive && next !== null) view.later(tick, next);
      };
      return tick();
    },
    later(fn, ms) {
      const timer = setTimeout(() => {
        view.timers.delete(timer);
        if (view.alive) fn();
      }, ms);
      view.timers.add(timer);
    },
    stream(url, handlers) {
      const source = new EventSource(url);
      view.sources.add(source);
      for (const [event, handler] of Object.entries(handlers)) source.addEventListener(event, (e) => view.alive && handler(e, source));
      return source;
    },
    close(source) {
      source.close();
      view.sources.delete(source);
    },
    dispose() {
      view.alive = false;
      for (const timer of view.timers) clearTimeout(timer);
      for (const source of view.sources) source.close();
      view.timers.clear();
      view.sources.clear();
      for (const fn of view.cleanups.splice(0)) fn();
    },
  };
  return view;
}
