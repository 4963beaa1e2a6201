/**
 * The `Driver` seam: what starts task agents. The embedded default runs agents in this process
 * (built-in slots); self-hosted runners and Nomad batch jobs come behind the same interface.
 */
export interface Driver {
  readonly name: string;
  start(): Promise<void>;
  /** Stops taking work; tasks in hand are stopped and left for their leases to expire or finish. */
  stop(): Promise<void>;
}
