import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';

/**
 * HashiCorp's OpenAPI description of the Nomad HTTP API (hashicorp/nomad-openapi, v1), kept beside
 * the repository in the shared corpus. It is not copied into test/fixtures: the corpus is data to
 * test against, not ours to redistribute. A clone without it skips the checks that need it.
 */
export const NOMAD_OPENAPI = resolve(__dirname, '../..', '../shared/corpus/nomad/openapi.yaml');

/** Errors of one request body against a schema of the description; empty when it conforms. */
export type NomadBodyCheck = (body: unknown) => string[];

/**
 * A check of request bodies against `schemaName` (e.g. `JobRegisterRequest`, the body of
 * `POST /v1/jobs`), or undefined when the description is not there.
 *
 * Types, formats and nesting are checked as the description gives them. Beyond it, a field the
 * description does not list is an error too: Nomad's decoder ignores fields it does not know, so
 * a misspelt or misplaced field would be dropped without a word (a constraint that never applies,
 * resources that are never asked for). Maps the description types as maps (`Meta`, `Env`, a
 * task's driver `Config`) take any keys.
 */
export function nomadBodyCheck(schemaName: string, file = NOMAD_OPENAPI): NomadBodyCheck | undefined {
  const key = `${file}#${schemaName}`;
  if (!compiled.has(key)) compiled.set(key, compile(schemaName, file));
  return compiled.get(key);
}

/** Compiled checks, per file and schema: the description takes a moment to compile. */
const compiled = new Map<string, NomadBodyCheck | undefined>();

function compile(schemaName: string, file: string): NomadBodyCheck | undefined {
  if (!existsSync(file)) return undefined;
  const document = parse(readFileSync(file, 'utf8'));
  const schemas = closeObjects(structuredClone(document.components.schemas));
  if (!schemas[schemaName]) throw new Error(`${file} has no schema ${schemaName}`);
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  // Go's integers: the description gives int64 and uint64 bounds that JavaScript numbers round.
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
  const validate = ajv.compile({ $ref: `#/components/schemas/${schemaName}`, components: { schemas } });
  return (body) => {
    if (validate(body)) return [];
    return (validate.errors ?? []).map((e) => {
      const extra = e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : '';
      return `${e.instancePath || '/'} ${e.message}${extra}`;
    });
  };
}

/** Marks every object schema with listed properties as closed to other properties. */
function closeObjects(schemas: Record<string, any>): Record<string, any> {
  const walk = (node: unknown) => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    const schema = node as Record<string, any>;
    if (schema.properties && schema.additionalProperties === undefined) schema.additionalProperties = false;
    for (const value of Object.values(schema)) walk(value);
  };
  for (const schema of Object.values(schemas)) walk(schema);
  return schemas;
}
