import type { RouteInfo } from '../api/http-app';
import type { Core } from './core';
import type { RoleName } from './names';

/** A role: what one `--roles` name starts in a process, from the shared core. */
export interface Role {
  readonly name: RoleName;
  /** Starts the role's loops, listeners or drivers; the answer stops them. */
  start(core: Core): Promise<RunningRole>;
}

export interface RunningRole {
  /** The API listener's address, from the `api` role. */
  readonly url?: string;
  /** The API listener's routes, from the `api` role (the route-permission test reads them). */
  readonly routes?: readonly RouteInfo[];
  stop(): Promise<void>;
}

/** Runs `fn` every `ms`, logging (never throwing) its failures; the answer stops it. */
export function every(ms: number, fn: () => Promise<unknown>, onError: (error: unknown) => void): () => void {
  const timer = setInterval(() => void fn().catch(onError), ms);
  return () => clearInterval(timer);
}
