import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';

/**
 * CircleCI's API v2 description (test/fixtures/circleci/circleci-api-v2.openapi.json, a copy of
 * ../shared/reference/), for checking Gyre's answers against it: which operation a request is, by
 * method and path, and whether a 2xx JSON answer has the shape the description gives it.
 *
 * The description is OpenAPI 3.0: `nullable: true` (and the older `x-nullable: true` some of its
 * schemas carry, as CircleCI answers `null` there) allow null. Objects are checked as the
 * description writes them (open unless it says `additionalProperties: false`): a field Gyre adds is
 * not a violation, a missing required field or a value of the wrong type or enum is.
 */

export interface SpecOperation {
  readonly method: string;
  /** The description's path (`/project/{project-slug}/pipeline/{pipeline-number}`). */
  readonly path: string;
  readonly operationId: string;
  readonly tags: readonly string[];
}

type Doc = { paths: Record<string, Record<string, any>>; components: Record<string, Record<string, any>> };

export const CIRCLECI_SPEC_FILE = join(__dirname, '..', 'fixtures', 'circleci', 'circleci-api-v2.openapi.json');

/**
 * Fields the description gives as always a time, which CircleCI itself answers `null` until there
 * is one (a job that has not started has no `started_at`; one blocked behind its requirements no
 * `queued_at`), as the description already allows for their neighbours (`stopped_at`). Read as
 * nullable, and nothing else is relaxed.
 */
const ANSWERED_NULL: [path: string, method: string, status: string, pointer: string[]][] = [
  ['/workflow/{id}/job', 'get', '200', ['properties', 'items', 'items', 'properties', 'started_at']],
  ['/project/{project-slug}/job/{job-number}', 'get', '200', ['properties', 'started_at']],
  ['/project/{project-slug}/job/{job-number}', 'get', '200', ['properties', 'queued_at']],
  ['/project/{project-slug}/job/{job-number}', 'get', '200', ['properties', 'created_at']],
];

/**
 * The same for fields of shared schemas (components), by schema name and pointer: a restriction's
 * `name`, which the description itself says "May be null" (an expression restriction has none).
 */
const COMPONENT_ANSWERED_NULL: [schema: string, pointer: string[]][] = [
  ['restriction_created', ['properties', 'name']],
  ['context_project_restrictions_list', ['properties', 'items', 'items', 'properties', 'name']],
];

/**
 * Where Gyre answers a value the description does not list, on purpose, and says so in its docs:
 * a context restricted to a group of the organisation (`restriction_type: group`,
 * docs/security.md), which CircleCI's cloud API has no type for. Nothing else is widened.
 */
const GYRE_EXTENSIONS: [schema: string, pointer: string[], value: string][] = [
  ['restriction_created', ['properties', 'restriction_type'], 'group'],
  ['context_project_restrictions_list', ['properties', 'items', 'items', 'properties', 'restriction_type'], 'group'],
];

let doc: Doc | undefined;
/** The description, read once per test file. */
export function circleciSpec(): Doc {
  if (!doc) {
    const read = JSON.parse(readFileSync(CIRCLECI_SPEC_FILE, 'utf8')) as Doc;
    for (const [path, method, status, pointer] of ANSWERED_NULL) {
      const field = pointer.reduce((o: any, k) => o?.[k], read.paths[path][method].responses[status].content['application/json'].schema);
      if (!field) throw new Error(`the description has no ${pointer.join('.')} in ${method.toUpperCase()} ${path}: update ANSWERED_NULL in ${__filename}`);
      field['x-nullable'] = true;
    }
    const componentField = (schema: string, pointer: string[]) => {
      const field = pointer.reduce((o: any, k) => o?.[k], read.components.schemas[schema]);
      if (!field) throw new Error(`the description has no ${pointer.join('.')} in components.schemas.${schema}: update ${__filename}`);
      return field;
    };
    for (const [schema, pointer] of COMPONENT_ANSWERED_NULL) componentField(schema, pointer)['x-nullable'] = true;
    for (const [schema, pointer, value] of GYRE_EXTENSIONS) {
      const field = componentField(schema, pointer);
      field.enum = [...(field.enum ?? []), value];
    }
    doc = read;
  }
  return doc;
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/** Every operation of the description. */
export function specOperations(): SpecOperation[] {
  const out: SpecOperation[] = [];
  for (const [path, item] of Object.entries(circleciSpec().paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (op) out.push({ method: method.toUpperCase(), path, operationId: op.operationId, tags: op.tags ?? [] });
    }
  }
  return out;
}

/** A path template's segments; a project slug (`{project-slug}`) stands for three (`gh/org/repo`). */
function segmentsOf(template: string): (string | null)[] {
  const out: (string | null)[] = [];
  for (const part of template.split('/').filter(Boolean)) {
    if (part === '{project-slug}') out.push(null, null, null);
    else if (part === '{org-slug}') out.push(null, null);
    else out.push(/^\{.+\}$/.test(part) ? null : part);
  }
  return out;
}

let matchers: { op: SpecOperation; segments: (string | null)[]; statics: number }[] | undefined;

/**
 * The operation a request is (`GET`, `/api/v2/project/gh/a/b/pipeline/3`), or undefined when the
 * description has none there: the most specific template that matches, static segments first.
 */
export function specOperationOf(method: string, requestPath: string): SpecOperation | undefined {
  matchers ??= specOperations().map((op) => {
    const segments = segmentsOf(op.path);
    return { op, segments, statics: segments.filter((s) => s !== null).length };
  });
  const path = requestPath.split('?')[0];
  if (!path.startsWith('/api/v2/')) return undefined;
  const parts = path.slice('/api/v2'.length).split('/').filter(Boolean);
  let best: { op: SpecOperation; statics: number } | undefined;
  for (const m of matchers) {
    if (m.op.method !== method.toUpperCase() || m.segments.length !== parts.length) continue;
    if (!m.segments.every((s, i) => s === null || s === parts[i])) continue;
    if (!best || m.statics > best.statics) best = m;
  }
  return best?.op;
}

/** An Ajv schema of the description with `x-nullable` read as `nullable`. */
function openApiFlavoured(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(openApiFlavoured);
  if (!node || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) out[k] = openApiFlavoured(v);
  if (out.$ref) return out;
  if (out['x-nullable'] !== true && out.nullable !== true) return out;
  delete out.nullable;
  // Ajv's `nullable` needs a `type` beside it, which some of these schemas lack: null is spelt out.
  if (typeof out.type === 'string') {
    out.type = [out.type, 'null'];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    return out;
  }
  return { anyOf: [out, { type: 'null' }] };
}

let ajv: Ajv | undefined;
const compiled = new Map<string, ValidateFunction | null>();

function resolve(value: any): any {
  let v = value;
  while (v && typeof v === 'object' && typeof v.$ref === 'string') {
    v = v.$ref
      .slice(2)
      .split('/')
      .map((s: string) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
      .reduce((o: any, k: string) => o?.[k], circleciSpec());
  }
  return v;
}

/** The validator of one answer of an operation, or null when the description gives it no JSON schema. */
function validatorOf(op: SpecOperation, status: string): ValidateFunction | null {
  const key = `${op.method} ${op.path} ${status}`;
  if (compiled.has(key)) return compiled.get(key)!;
  if (!ajv) {
    // Formats the description uses that are OpenAPI's type annotations (int64, integer), not checks.
    ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true, logger: false });
    addFormats(ajv);
    ajv.addSchema(openApiFlavoured(circleciSpec()) as object, 'spec');
  }
  const response = resolve(circleciSpec().paths[op.path][op.method.toLowerCase()].responses[status]);
  const hasSchema = Boolean(response?.content?.['application/json']?.schema);
  const pointer = `/paths/${op.path.replace(/~/g, '~0').replace(/\//g, '~1')}/${op.method.toLowerCase()}/responses/${status}`;
  // A response given by $ref is validated through the reference, so nested refs resolve in the spec.
  const raw = circleciSpec().paths[op.path][op.method.toLowerCase()].responses[status];
  const at = raw?.$ref ? `spec${raw.$ref}/content/application~1json/schema` : `spec#${pointer}/content/application~1json/schema`;
  const validate = hasSchema ? ajv.compile({ $ref: at }) : null;
  compiled.set(key, validate);
  return validate;
}

export interface SpecViolation {
  readonly request: string;
  readonly operation: string;
  readonly problems: string[];
}

/**
 * What is wrong with one answer, by the description: a 2xx status it does not list for the
 * operation, or a JSON body that does not fit the schema of that status. Empty for answers it says
 * nothing about (Gyre's own routes, error answers, bodies that are not JSON).
 */
export function checkAnswer(method: string, requestPath: string, status: number, body: unknown, contentType = 'application/json'): SpecViolation | undefined {
  if (status < 200 || status >= 300) return undefined;
  const op = specOperationOf(method, requestPath);
  if (!op) return undefined;
  const where = { request: `${method} ${requestPath.split('?')[0]} → ${status}`, operation: `${op.operationId} (${op.method} ${op.path})` };
  const responses = circleciSpec().paths[op.path][op.method.toLowerCase()].responses as Record<string, unknown>;
  const listed = Object.keys(responses).filter((s) => /^2\d\d$/.test(s));
  if (!listed.includes(String(status))) return { ...where, problems: [`status ${status} is not one the description gives (${listed.join(', ')})`] };
  if (!/json/.test(contentType)) return undefined;
  const validate = validatorOf(op, String(status));
  if (!validate || validate(body)) return undefined;
  const problems = (validate.errors ?? []).map(
    (e) => `${e.instancePath || '/'} ${e.message}${e.keyword === 'enum' ? ` (${JSON.stringify((e.params as { allowedValues?: unknown[] }).allowedValues)})` : ''}`
  );
  return { ...where, problems: [...new Set(problems)].slice(0, 20) };
}
