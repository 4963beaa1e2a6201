/**
 * The agent contract: what the agent (runtime/agent/, on runner hosts and Nomad clients) and the
 * control plane's agent API (runtime/api/agent-routes.ts, agent-output-routes.ts) say to each
 * other. Both sides import it; it imports nothing of either (only the domain's and the plan's
 * types). See docs/execution.md, "The agent contract".
 */
export * from './task-context';
export * from './paths';
export * from './wire';
export * from './validate';
export { AGENT_API_VERSION, AGENT_API_VERSION_HEADER } from '../domain/agent-api-version';
