import { InputError } from '../domain/errors';
import { createOrbBundle, type BundledOrb, type OrbBundle } from './orb-bundle';
import { validateOrbPublish } from './orb-registry';
import { loadYaml, Positions } from './yaml-loader';

/**
 * `gyre orb pull`: fetches orb versions, and every orb they import, from CircleCI's public orb
 * registry (or a CircleCI server) through its GraphQL API, with the query the circleci CLI sends for
 * `circleci orb source`, and returns them as one bundle (orb-bundle.ts).
 *
 * The registry resolves references itself, as it does for configs: `ns/orb@x.y.z`, `@x.y` and `@x`
 * (the newest matching version), `@volatile` (the newest) and `@dev:label`. A reference without a
 * version means `@volatile`, as in the circleci CLI.
 */

/** The circleci CLI's `orb source` query (api.OrbSource), field for field. */
export const ORB_SOURCE_QUERY = `query($orbVersionRef: String!) {
  orbVersion(orbVersionRef: $orbVersionRef) {
    id
    version
    orb { id }
    source
  }
}`;

/** The registry the circleci CLI talks to by default (its --host / CIRCLECI_CLI_HOST). */
export const DEFAULT_ORB_REGISTRY_HOST = 'https://circleci.com';

/** `ns/orb@version` with the versions configs may name; the version is optional for pull. */
const ORB_REFERENCE = /^([a-z0-9][\w-]*)\/([a-z0-9][\w-]*)(?:@(\d+(?:\.\d+){0,2}|volatile|dev:[\w.-]+))?$/i;
const CONCRETE_VERSION = /^(\d+\.\d+\.\d+|dev:[\w.-]+)$/;

/** Largest answer read for one orb version (the largest public orbs are a few hundred KiB). */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;
/** Most orb versions one pull fetches (imports included): a guard against an import loop that never converges. */
const MAX_ORBS = 500;

export interface ParsedOrbReference {
  readonly name: string;
  /** `x.y.z`, `x.y`, `x`, `volatile` or `dev:label`. */
  readonly version: string;
  /** `name@version`. */
  readonly ref: string;
}

/** Parses a reference as `gyre orb pull` takes it; throws InputError naming it and what is allowed. */
export function parseOrbReference(text: string): ParsedOrbReference {
  const m = ORB_REFERENCE.exec(text.trim());
  if (!m) throw new InputError(`'${text.slice(0, 200)}' is not an orb reference: use namespace/orb@version, with version x.y.z, x.y, x, volatile or dev:label`);
  const name = `${m[1]}/${m[2]}`;
  const version = m[3] ?? 'volatile';
  return { name, version, ref: `${name}@${version}` };
}

/**
 * The orbs a packed orb imports: the string values of its `orbs:` map, and those of inline orbs in
 * it, in the order written. References that are not `ns/orb@version` are reported by the caller.
 */
export function orbImportsOf(source: string): string[] {
  const loaded = loadYaml(source, new Positions());
  const out: string[] = [];
  const walk = (doc: unknown, depth: number) => {
    if (depth > 8 || doc === null || typeof doc !== 'object' || Array.isArray(doc)) return;
    const orbs = (doc as Record<string, unknown>).orbs;
    if (orbs === null || typeof orbs !== 'object' || Array.isArray(orbs)) return;
    for (const value of Object.values(orbs as Record<string, unknown>)) {
      if (typeof value === 'string') out.push(value.trim());
      else walk(value, depth + 1);
    }
  };
  walk(loaded.value, 0);
  return out;
}

export interface OrbVersionAnswer {
  readonly version: string;
  readonly source: string;
}

/** The one call `gyre orb pull` makes: an orb version by reference, or undefined when the registry has none. */
export interface OrbRegistryClient {
  /** The GraphQL endpoint, for messages and the bundle. */
  readonly endpoint: string;
  orbVersion(ref: string): Promise<OrbVersionAnswer | undefined>;
}

export interface OrbRegistryClientOptions {
  /** `https://circleci.com` (default), or a CircleCI server. */
  readonly host?: string;
  /** Needed only for private orbs (sent as the circleci CLI sends it: `Authorization: <token>`). */
  readonly token?: string;
  /** How long one request may take. @default 30000 */
  readonly timeoutMs?: number;
  readonly userAgent?: string;
}

export function createOrbRegistryClient(options: OrbRegistryClientOptions = {}): OrbRegistryClient {
  const host = options.host || DEFAULT_ORB_REGISTRY_HOST;
  let endpoint: string;
  try {
    const base = new URL(host);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new Error('not http(s)');
    // As the circleci CLI resolves its endpoint `graphql-unstable` against --host.
    endpoint = new URL('graphql-unstable', base).toString();
  } catch {
    throw new InputError(`--host '${host}' must be an http(s) URL such as ${DEFAULT_ORB_REGISTRY_HOST}`, 'host');
  }
  const timeoutMs = options.timeoutMs ?? 30_000;
  return {
    endpoint,
    async orbVersion(ref) {
      let res: Response;
      try {
        res = await fetch(endpoint, {
          method: 'POST',
          headers: {
            'Content-Type': 'application/json; charset=utf-8',
            Accept: 'application/json; charset=utf-8',
            'User-Agent': options.userAgent ?? 'gyre-orb-pull',
            ...(options.token ? { Authorization: options.token } : {}),
          },
          body: JSON.stringify({ query: ORB_SOURCE_QUERY, variables: { orbVersionRef: ref } }),
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (error) {
        const cause = (error as { cause?: { code?: string; message?: string } }).cause;
        const why = (error as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : (cause?.code ?? cause?.message ?? (error as Error).message);
        throw new Error(`cannot reach the orb registry at ${endpoint} (${why}); run gyre orb pull on a machine with internet access, or point --host at a CircleCI server that has the orbs`);
      }
      const text = await readCapped(res, MAX_ANSWER_BYTES, `the orb registry's answer for ${ref}`);
      if (res.status !== 200) throw new Error(`the orb registry at ${endpoint} answered ${res.status} ${res.statusText} for ${ref}${text ? `: ${text.slice(0, 300)}` : ''}`);
      let body: { data?: { orbVersion?: { version?: unknown; source?: unknown } | null }; errors?: { message?: unknown }[] };
      try {
        body = JSON.parse(text);
      } catch {
        throw new Error(`the orb registry at ${endpoint} answered ${ref} with something that is not JSON: ${text.slice(0, 200)}`);
      }
      if (Array.isArray(body.errors) && body.errors.length) {
        throw new Error(`the orb registry refused ${ref}: ${body.errors.map((e) => String(e?.message ?? 'error')).join('; ')}`);
      }
      const found = body.data?.orbVersion;
      if (found === null || found === undefined) return undefined;
      if (typeof found.version !== 'string' || !CONCRETE_VERSION.test(found.version) || typeof found.source !== 'string') {
        throw new Error(`the orb registry answered ${ref} without a version (x.y.z) and source`);
      }
      return { version: found.version, source: found.source };
    },
  };
}

async function readCapped(res: Response, max: number, what: string): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw new Error(`${what} is larger than ${max / 1024 / 1024} MiB`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export interface PullProgress {
  /** A reference resolved: `circleci/node@5` → `5.2.0`; `importedBy` is the orb that imports it, if any. */
  resolved(ref: string, version: string, importedBy: string | undefined): void;
}

/**
 * Fetches `refs` and, recursively, every orb they import. Each orb version is fetched once however
 * many references lead to it; a reference the registry does not have, or a source Gyre's registry
 * would refuse, fails the whole pull with a message naming it (and who imports it).
 */
export async function pullOrbs(deps: { client: OrbRegistryClient; refs: readonly string[]; progress?: PullProgress; now?: Date }): Promise<OrbBundle> {
  const requested = deps.refs.map(parseOrbReference);
  if (requested.length === 0) throw new InputError('gyre orb pull needs at least one orb reference (namespace/orb@version)');
  const byId = new Map<string, { name: string; version: string; source: string; refs: Set<string>; importedBy: Set<string> }>();
  const idOfRef = new Map<string, string>();
  const queue: { ref: ParsedOrbReference; importedBy?: string }[] = requested.map((ref) => ({ ref }));
  while (queue.length) {
    const { ref, importedBy } = queue.shift()!;
    let id = idOfRef.get(ref.ref);
    if (!id) {
      const found = await deps.client.orbVersion(ref.ref);
      if (!found) {
        throw new InputError(`${ref.ref}${importedBy ? ` (imported by ${importedBy})` : ''} is not in the orb registry at ${deps.client.endpoint}: check the name and version (circleci orb info ${ref.ref})`);
      }
      id = `${ref.name}@${found.version}`;
      idOfRef.set(ref.ref, id);
      deps.progress?.resolved(ref.ref, found.version, importedBy);
      if (!byId.has(id)) {
        if (byId.size >= MAX_ORBS) throw new InputError(`more than ${MAX_ORBS} orb versions in one pull; pull fewer at a time`);
        try {
          validateOrbPublish(ref.name, found.version, found.source);
        } catch (error) {
          throw new InputError(`${id} from ${deps.client.endpoint} is not an orb Gyre's registry accepts: ${(error as Error).message}`);
        }
        byId.set(id, { name: ref.name, version: found.version, source: found.source, refs: new Set(), importedBy: new Set() });
        for (const text of orbImportsOf(found.source)) {
          let imported: ParsedOrbReference;
          try {
            imported = parseOrbReference(text);
          } catch (error) {
            throw new InputError(`${id} imports ${(error as Error).message}`);
          }
          queue.push({ ref: imported, importedBy: id });
        }
      }
    }
    const entry = byId.get(id)!;
    entry.refs.add(ref.ref);
    if (importedBy) entry.importedBy.add(importedBy);
  }
  const orbs: Omit<BundledOrb, 'sha256'>[] = [...byId.values()].map((o) => ({ name: o.name, version: o.version, refs: [...o.refs], imported_by: [...o.importedBy], source: o.source }));
  return createOrbBundle({ registry: deps.client.endpoint, requested: requested.map((r) => r.ref), orbs, now: deps.now });
}
