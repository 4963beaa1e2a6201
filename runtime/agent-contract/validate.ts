import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/**
 * An answer of the agent API that is not of the contract's shape: not JSON, or a field missing or
 * of the wrong type. It names the call (`POST /api/v2/agent/task/…/heartbeat`) and the field
 * (`lease_expires_at`), so an operator can tell which side is out of date. Never retried: the same
 * server gives the same answer again.
 */
export class AgentAnswerError extends Error {
  constructor(
    /** The method and path of the call. */
    readonly call: string,
    /** The field, as a path into the answer (`task.spec.steps`, `items[2].id`); '' for the whole answer. */
    readonly field: string,
    /** What is wrong with it. */
    readonly problem: string,
  ) {
    super(`${call}: the server's answer is not what this agent understands: ${field ? `${field}: ` : ''}${problem} (is the server of another release than this agent?)`);
    this.name = 'AgentAnswerError';
  }
}

/**
 * `body` (the answer's text) as `schema` says, or an AgentAnswerError naming `call` and the first
 * field that is not of the schema.
 */
export function parseAnswer<S extends TSchema>(schema: S, text: string, call: string): Static<S> {
  return checkAnswer(schema, answerJson(text, call), call);
}

/** An answer's text as JSON (undefined when empty), or an AgentAnswerError when it is not JSON. */
export function answerJson(text: string, call: string): unknown {
  try {
    return text === '' ? undefined : JSON.parse(text);
  } catch {
    throw new AgentAnswerError(call, '', `it is not JSON (it begins '${printable(text.slice(0, 60))}')`);
  }
}

/** `value` (an answer's parsed JSON) as `schema` says, or an AgentAnswerError. */
export function checkAnswer<S extends TSchema>(schema: S, value: unknown, call: string): Static<S> {
  if (value === undefined) throw new AgentAnswerError(call, '', 'it is empty');
  if (Value.Check(schema, value)) return value;
  const first = Value.Errors(schema, value).First();
  const field = fieldOf(first?.path ?? '');
  const got = first ? valueOf(first.value) : 'nothing';
  throw new AgentAnswerError(call, field, `${(first?.message ?? 'not of the expected shape').replace(/^Expected/, 'expected')}, got ${got}`);
}

/** A JSON pointer (`/items/0/id`) as a reader writes it (`items[0].id`). */
function fieldOf(pointer: string): string {
  let out = '';
  for (const raw of pointer.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(part) ? `[${part}]` : out ? `.${part}` : part;
  }
  return out;
}

function valueOf(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `'${printable(value.slice(0, 60))}'`;
  return `${typeof value} ${String(value)}`;
}

function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]/g, ' ');
}
