/**
 * Every route of the agent API: its method and its path as the server registers it (`:name` is a
 * path parameter). The server registers exactly these; the agent builds its URLs from them with
 * `agentPath`, so neither side spells a path of its own.
 *
 * Two kinds of caller: runners with a resource-class token (`claim`), and agents with a task token
 * (everything under `task/:id`, for that task only).
 */
export const AGENT_ROUTES = {
  /** Runners long-poll for a task of their class. */
  claim: { method: 'POST', path: '/api/v2/agent/claim' },
  /** The task and its lease; renews the lease. */
  task: { method: 'GET', path: '/api/v2/agent/task/:id' },
  secrets: { method: 'GET', path: '/api/v2/agent/task/:id/secrets' },
  heartbeat: { method: 'POST', path: '/api/v2/agent/task/:id/heartbeat' },
  /** Long-polls for a cancel (`?wait_ms=`). */
  cancellation: { method: 'GET', path: '/api/v2/agent/task/:id/cancellation' },
  stepStarted: { method: 'POST', path: '/api/v2/agent/task/:id/step/:index/started' },
  /** One chunk of a step's output, numbered from 0 (gzip with `X-Gyre-Output-Bytes`, or raw bytes). */
  stepOutput: { method: 'PUT', path: '/api/v2/agent/task/:id/step/:index/output/:seq' },
  stepFinished: { method: 'POST', path: '/api/v2/agent/task/:id/step/:index/finished' },
  complete: { method: 'POST', path: '/api/v2/agent/task/:id/complete' },
  testTimings: { method: 'GET', path: '/api/v2/agent/task/:id/test-timings' },
  previousTestResults: { method: 'GET', path: '/api/v2/agent/task/:id/previous-test-results' },
  // The file steps (artifacts, caches, workspaces, test results): runtime/api/agent-output-routes.ts.
  uploadArtifact: { method: 'PUT', path: '/api/v2/agent/task/:id/artifacts' },
  cacheExists: { method: 'GET', path: '/api/v2/agent/task/:id/cache' },
  saveCache: { method: 'PUT', path: '/api/v2/agent/task/:id/cache' },
  findCache: { method: 'POST', path: '/api/v2/agent/task/:id/cache/find' },
  openCache: { method: 'GET', path: '/api/v2/agent/task/:id/cache/:cache' },
  persistWorkspace: { method: 'POST', path: '/api/v2/agent/task/:id/workspace' },
  workspaceLayers: { method: 'GET', path: '/api/v2/agent/task/:id/workspace/layers' },
  openWorkspaceLayer: { method: 'GET', path: '/api/v2/agent/task/:id/workspace/layers/:layer' },
  storeTestResults: { method: 'PUT', path: '/api/v2/agent/task/:id/test-results' },
  /** What agents before NDJSON sent (`{ cases }`); served for them, not sent by this agent. */
  storeTestResultsJson: { method: 'POST', path: '/api/v2/agent/task/:id/test-results' },
} as const satisfies Record<string, { method: 'GET' | 'POST' | 'PUT'; path: string }>;

export type AgentRoute = keyof typeof AGENT_ROUTES;

/** The names of a path's `:parameters`. */
type ParamNames<P extends string> = P extends `${string}:${infer Name}/${infer Rest}` ? Name | ParamNames<Rest> : P extends `${string}:${infer Name}` ? Name : never;

/** The values a route's path needs. */
export type AgentPathParams<R extends AgentRoute> = { readonly [K in ParamNames<(typeof AGENT_ROUTES)[R]['path']>]: string | number };

/** The path of one call, each parameter URL-encoded: `agentPath('stepOutput', { id, index: 2, seq: 0 })`. */
export function agentPath<R extends AgentRoute>(route: R, params: AgentPathParams<R>): string {
  const values = params as Readonly<Record<string, string | number>>;
  return AGENT_ROUTES[route].path.replace(/:([A-Za-z]+)/g, (_, name: string) => encodeURIComponent(String(values[name])));
}
