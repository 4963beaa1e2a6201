import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for CircleCI's orb registry GraphQL API (`POST <host>/graphql-unstable`), answering
 * only the query the circleci CLI sends for `circleci orb source` (api.OrbSource in
 * CircleCI-Public/circleci-cli, branch v0):
 *
 *   query($orbVersionRef: String!) { orbVersion(orbVersionRef: $orbVersionRef) { id version orb { id } source } }
 *
 * compared token for token (whitespace aside). Any other query is answered as a GraphQL server
 * answers a field it does not have: 200 with `errors`. `orbVersionRef` resolves as the registry
 * does for configs: `x.y.z` exactly, `x.y` / `x` / `volatile` to the newest match, `dev:label`
 * exactly; an unknown orb or version is `orbVersion: null`.
 */
export interface OrbRegistryStandIn {
  /** The --host to give `gyre orb pull` (the endpoint is `<host>/graphql-unstable`). */
  readonly host: string;
  /** Every request: its query (as sent), variables, headers, and whether the stand-in knew the query. */
  readonly requests: { query: string; variables: Record<string, unknown>; headers: IncomingMessage['headers']; known: boolean }[];
  publish(name: string, version: string, source: string): void;
  close(): Promise<void>;
}

const KNOWN_QUERY = 'query($orbVersionRef: String!) { orbVersion(orbVersionRef: $orbVersionRef) { id version orb { id } source } }';
const tokens = (q: string) => q.replace(/([{}():!$,])/g, ' $1 ').split(/\s+/).filter(Boolean).join(' ');

export async function startOrbRegistryStandIn(): Promise<OrbRegistryStandIn> {
  const orbs = new Map<string, Map<string, string>>();
  const requests: OrbRegistryStandIn['requests'] = [];

  const resolve = (ref: string): { name: string; version: string; source: string } | undefined => {
    const at = ref.lastIndexOf('@');
    if (at < 0) return undefined;
    const name = ref.slice(0, at);
    const wanted = ref.slice(at + 1);
    const versions = orbs.get(name);
    if (!versions) return undefined;
    if (wanted.startsWith('dev:') || /^\d+\.\d+\.\d+$/.test(wanted)) {
      const source = versions.get(wanted);
      return source === undefined ? undefined : { name, version: wanted, source };
    }
    const prefix = wanted === 'volatile' ? [] : wanted.split('.').map(Number);
    const matching = [...versions.keys()]
      .filter((v) => /^\d+\.\d+\.\d+$/.test(v))
      .map((v) => v.split('.').map(Number))
      .filter((v) => prefix.every((p, i) => v[i] === p))
      .sort((a, b) => b[0] - a[0] || b[1] - a[1] || b[2] - a[2]);
    if (!matching.length) return undefined;
    const version = matching[0].join('.');
    return { name, version, source: versions.get(version)! };
  };

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/graphql-unstable') return send(res, 404, { message: 'Not Found' });
      let body: { query?: unknown; variables?: Record<string, unknown> };
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(res, 400, { errors: [{ message: 'Malformed JSON body' }] });
      }
      const query = typeof body.query === 'string' ? body.query : '';
      const known = tokens(query) === tokens(KNOWN_QUERY);
      requests.push({ query, variables: body.variables ?? {}, headers: req.headers, known });
      if (!known) return send(res, 200, { errors: [{ message: 'Cannot query field on type "Query" (the stand-in answers only the orbVersion source query)' }] });
      const ref = body.variables?.orbVersionRef;
      if (typeof ref !== 'string') return send(res, 200, { errors: [{ message: 'Variable "$orbVersionRef" of required type "String!" was not provided.' }] });
      const found = resolve(ref);
      send(res, 200, {
        data: {
          orbVersion: found ? { id: `id-${found.name}-${found.version}`, version: found.version, orb: { id: `id-${found.name}` }, source: found.source } : null,
        },
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    host: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    publish(name, version, source) {
      if (!orbs.has(name)) orbs.set(name, new Map());
      orbs.get(name)!.set(version, source);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}
