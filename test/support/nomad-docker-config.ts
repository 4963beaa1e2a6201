import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

/**
 * The docker task driver's `config` as Nomad's source defines it (taskConfigSpec in
 * drivers/docker/config.go; test/fixtures/nomad-docker-task-config.json says which commit), and a
 * check of a job's task `Config` against it as a Nomad client does before it starts the task: it
 * reads the map as HCL's JSON syntax against the spec (hclutils.ParseHclInterface), and any
 * diagnostic fails the task with a "Failed Validation" event. Messages are HCL's.
 */
interface Spec {
  readonly attr?: string;
  readonly required?: boolean;
  readonly attrs?: string;
  readonly block?: Record<string, Spec>;
  readonly blocks?: Record<string, Spec>;
}

const FIXTURE = resolve(__dirname, '../fixtures/nomad-docker-task-config.json');
let taskConfig: Record<string, Spec> | undefined;

/** The errors of a docker task's `Config`; empty when a Nomad client would accept it. */
export function dockerTaskConfigErrors(config: unknown): string[] {
  taskConfig ??= (JSON.parse(readFileSync(FIXTURE, 'utf8')) as { taskConfig: Record<string, Spec> }).taskConfig;
  return checkBody(config, taskConfig, 'config');
}

function checkBody(value: unknown, body: Record<string, Spec>, where: string): string[] {
  if (!isObject(value)) return [`${where}: Incorrect JSON value type; A JSON object is required here, to define arguments and child blocks.`];
  const errors: string[] = [];
  for (const key of Object.keys(value)) {
    if (!(key in body)) errors.push(`${where}: Extraneous JSON object property; No argument or block type is named "${key}".`);
  }
  for (const [key, spec] of Object.entries(body)) {
    const v = value[key];
    const at = `${where}.${key}`;
    if (v === undefined || v === null) {
      if (spec.required) errors.push(`${where}: Missing required argument; The argument "${key}" is required, but no definition was found.`);
      continue;
    }
    if (spec.attr) {
      if (!conforms(v, spec.attr)) errors.push(`${at}: Incorrect attribute value type; Inappropriate value for attribute "${key}": ${describe(spec.attr)} required.`);
    } else if (spec.attrs) {
      if (!isObject(v) || !Object.values(v).every((x) => conforms(x, spec.attrs!))) errors.push(`${at}: Incorrect attribute value type; Inappropriate value for "${key}": map of ${describe(spec.attrs)} required.`);
    } else if (spec.block) {
      // HCL's JSON syntax takes a block as an object, or as an array of one.
      const items = Array.isArray(v) ? v : [v];
      if (items.length > 1) errors.push(`${at}: Duplicate ${key} block; Only one ${key} block is allowed.`);
      for (const item of items) errors.push(...checkBody(item, spec.block, at));
    } else if (spec.blocks) {
      const items = Array.isArray(v) ? v : [v];
      items.forEach((item, i) => errors.push(...checkBody(item, spec.blocks!, `${at}[${i}]`)));
    }
  }
  return errors;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether a JSON value converts to an hclspec type (cty's conversions: numbers and bools from their strings, as HCL allows). */
function conforms(v: unknown, type: string): boolean {
  if (type === 'string') return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
  if (type === 'number') return typeof v === 'number' || (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)));
  if (type === 'bool') return typeof v === 'boolean' || v === 'true' || v === 'false';
  const list = /^list\((.*)\)$/.exec(type);
  if (list) {
    const inner = list[1];
    // A list of maps also comes as one map (`labels = { … }`), which Nomad's decoder takes too.
    if (inner.startsWith('map(') && isObject(v)) return conforms(v, inner);
    return Array.isArray(v) && v.every((x) => conforms(x, inner));
  }
  const map = /^map\((.*)\)$/.exec(type);
  if (map) return isObject(v) && Object.values(v).every((x) => conforms(x, map[1]));
  return false;
}

function describe(type: string): string {
  const list = /^list\((.*)\)$/.exec(type);
  if (list) return `list of ${describe(list[1])}`;
  const map = /^map\((.*)\)$/.exec(type);
  if (map) return `map of ${describe(map[1])}`;
  return type;
}
