import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';

/**
 * GitHub's REST API description from @octokit/openapi, for the GitHub stand-ins: where an operation
 * lives (on api.github.com and on the oldest GitHub Enterprise Server release described), and
 * checks of request and answer bodies against its schemas, objects closed to unlisted fields so a
 * misspelt field in a stand-in is caught too.
 */

type Description = { paths: Record<string, Record<string, { operationId?: string; responses?: Record<string, any>; requestBody?: any }>>; components: Record<string, Record<string, unknown>> };
let description: Description | undefined;
/** GitHub's REST API description (api.github.com) from @octokit/openapi, read once per test file. */
export function githubDescription(): Description {
  description ??= JSON.parse(readFileSync(require.resolve('@octokit/openapi/generated/api.github.com.json'), 'utf8'));
  return description!;
}

/** Where a description puts an operation. */
export function describedOperation(operationId: string, doc: Description = githubDescription()): { path: string; method: string } | undefined {
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) if (op && typeof op === 'object' && op.operationId === operationId) return { path, method };
  }
  return undefined;
}

/** Where GitHub Enterprise Server's description (the oldest release @octokit/openapi has) puts an operation. */
export function describedOperationOnGhes(operationId: string): { path: string; method: string; release: string } | undefined {
  if (!ghes) {
    const dir = dirname(require.resolve('@octokit/openapi/generated/api.github.com.json'));
    const releases = readdirSync(dir).map((f) => /^ghes-(\d+\.\d+)\.json$/.exec(f)?.[1]).filter((r): r is string => Boolean(r)).sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
    ghes = { release: releases[0], doc: JSON.parse(readFileSync(join(dir, `ghes-${releases[0]}.json`), 'utf8')) as Description };
  }
  const at = describedOperation(operationId, ghes.doc);
  return at ? { ...at, release: ghes.release } : undefined;
}
let ghes: { release: string; doc: Description } | undefined;

const compiled = new Map<string, ValidateFunction | undefined>();

/** Errors of one body against the description's schema for it; empty when it conforms. */
export type GitHubSchemaCheck = (body: unknown) => string[];

/** A check of a JSON answer (or, with status 'request', a request body) against the description, objects closed to unlisted fields; undefined when it describes none. */
export function githubSchemaCheck(operationId: string, status: number | 'request' = 200): GitHubSchemaCheck | undefined {
  const key = `${operationId} ${status}`;
  if (!compiled.has(key)) compiled.set(key, compile(operationId, status));
  const validate = compiled.get(key);
  if (!validate) return undefined;
  return (body) => (validate(body) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}${e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : ''}`));
}

function compile(operationId: string, status: number | 'request'): ValidateFunction | undefined {
  const doc = githubDescription();
  const at = describedOperation(operationId);
  if (!at) throw new Error(`GitHub's OpenAPI description has no operation ${operationId}`);
  const op = doc.paths[at.path][at.method];
  let part = status === 'request' ? op.requestBody : op.responses?.[String(status)];
  if (part?.$ref) part = pointer(doc, part.$ref);
  const schema = part?.content?.['application/json']?.schema;
  if (!schema) return undefined;
  const schemas: Record<string, unknown> = {};
  const reach = (node: unknown) => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(reach);
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')) {
        const name = v.slice('#/components/schemas/'.length);
        if (!(name in schemas)) {
          schemas[name] = structuredClone(doc.components.schemas[name]);
          reach(schemas[name]);
        }
      } else reach(v);
    }
  };
  const root = structuredClone(schema) as Record<string, unknown>;
  reach(root);
  close(root);
  close(schemas);
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
  return ajv.compile({ ...root, components: { schemas } });
}

function pointer(doc: unknown, ref: string): any {
  return ref
    .slice(2)
    .split('/')
    .reduce<unknown>((node, part) => (node as Record<string, unknown>)?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
}

function close(node: unknown): void {
  if (!node || typeof node !== 'object') return;
  if (Array.isArray(node)) return node.forEach(close);
  const schema = node as Record<string, unknown>;
  // OpenAPI 3.0's `nullable` beside a `$ref` or `allOf` (no `type`), which Ajv refuses: as JSON Schema says it.
  if (schema.nullable === true && schema.type === undefined) {
    const rest = { ...schema };
    delete rest.nullable;
    for (const key of Object.keys(schema)) delete schema[key];
    schema.anyOf = [rest, { type: 'null' }];
  }
  if (schema.properties && typeof schema.properties === 'object' && schema.additionalProperties === undefined) schema.additionalProperties = false;
  for (const value of Object.values(schema)) close(value);
}

/**
 * GitHub's "simple user" object for an account, as its REST API and webhook payloads embed it: the
 * addresses under `apiUrl` (…/api/v3 on Enterprise Server) and `webUrl`. A bot's login
 * (`name[bot]`) is percent-encoded in its addresses, as GitHub's are.
 */
export function githubSimpleUser(account: { login: string; id: number; type?: string }, apiUrl: string, webUrl: string) {
  const api = `${apiUrl}/users/${encodeURIComponent(account.login)}`;
  return {
    login: account.login,
    id: account.id,
    node_id: Buffer.from(`04:User${account.id}`).toString('base64'),
    avatar_url: `${webUrl}/avatars/u/${account.id}`,
    gravatar_id: '',
    url: api,
    html_url: `${webUrl}/${encodeURIComponent(account.login)}`,
    followers_url: `${api}/followers`,
    following_url: `${api}/following{/other_user}`,
    gists_url: `${api}/gists{/gist_id}`,
    starred_url: `${api}/starred{/owner}{/repo}`,
    subscriptions_url: `${api}/subscriptions`,
    organizations_url: `${api}/orgs`,
    repos_url: `${api}/repos`,
    events_url: `${api}/events{/privacy}`,
    received_events_url: `${api}/received_events`,
    type: account.type ?? 'User',
    site_admin: false,
  };
}
