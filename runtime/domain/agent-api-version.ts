import { InputError } from './errors';

/**
 * The agent API's version, which agents and runners send on every call (`X-Gyre-Agent-Version`)
 * and the server answers with its own. Routes and shapes stay as they are within a version; a
 * change an older agent cannot follow makes a new version, and the server keeps serving the
 * previous one, so the agents and runners of the previous release keep working while a cluster
 * is upgraded (and runners upgraded after it).
 *
 * 1: agents before the header (release 9030804 and earlier), which send none.
 * 2: this build.
 */
export const AGENT_API_VERSION = 2;

/** What this server serves: its own version and the one before. */
export const ACCEPTED_AGENT_API_VERSIONS: readonly number[] = [1, 2];

export const AGENT_API_VERSION_HEADER = 'X-Gyre-Agent-Version';

/** The agent API version a call asks for (1 without the header); an InputError (400) for one this server does not serve. */
export function agentApiVersionOf(header: string | string[] | undefined): number {
  const raw = header === undefined ? '1' : Array.isArray(header) ? header[0] : header;
  const version = /^\s*\d{1,6}\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(version)) {
    throw new InputError(`${AGENT_API_VERSION_HEADER} '${raw.slice(0, 40)}' is not a version number (this server serves ${ACCEPTED_AGENT_API_VERSIONS.join(' and ')})`, AGENT_API_VERSION_HEADER);
  }
  if (!ACCEPTED_AGENT_API_VERSIONS.includes(version)) {
    const advice = version > AGENT_API_VERSION ? 'upgrade the server before its agents and runners' : 'upgrade the agent or runner to a release this server serves';
    const sent = header === undefined ? `agent API version 1 (no ${AGENT_API_VERSION_HEADER} header)` : `agent API version ${version}`;
    throw new InputError(`${sent} is not served here (this server serves ${ACCEPTED_AGENT_API_VERSIONS.join(' and ')}): ${advice}`, AGENT_API_VERSION_HEADER);
  }
  return version;
}
