/**
 * Context expression restrictions: CircleCI's small language for "this context may be used only
 * when…" (`pipeline.git.branch == "main" and not job.ssh.enabled`), parsed once when a restriction
 * is added (a bad one is refused then, naming what is wrong) and evaluated for each task that names
 * the context.
 *
 * The language, as CircleCI documents it for context restrictions:
 * - operators, weakest first: `or`, `and`, `==` `!=`, `starts-with`, `>=` `>` `<=` `<`, `not` `!`;
 *   all left associative; parentheses group;
 * - literals: whole numbers (`768`), double-quoted strings (`\"` and `\\` are the only escapes),
 *   `true`, `false`;
 * - variables: pipeline values (`pipeline.git.branch`, `pipeline.git.tag`, …) and `job.ssh.enabled`.
 *   Pipeline parameters (`pipeline.parameters.*`) and `pipeline.trigger_parameters.*` are not
 *   available: whoever triggers a pipeline sets them, and trigger input must not decide whether a
 *   context is available. They, and names that are no pipeline value, are refused when the
 *   restriction is added.
 *
 * Evaluation fails closed: a variable the pipeline has no value for, a numeric comparison of
 * something that is not a number, `starts-with` on something that is not a string: the expression
 * is false and the context is refused, whatever `not` surrounds it. `==` of two different types is
 * false (`!=` true). Anything but the boolean `false` counts as true. `and` and `or` stop at the
 * first operand that decides them.
 *
 * Why a parser of our own: CircleCI evaluates these with its Go `expr` library, which has no
 * JavaScript counterpart. The JavaScript expression libraries speak other languages: jsep parses
 * JavaScript (calls, members, single quotes, floats) and takes `and`/`starts-with` only by
 * changing its operator table for the whole process; filtrex, expr-eval and jexl have their own
 * syntax and type rules, where a comparison of mismatched types is false rather than an error, so
 * `not (pipeline.number > "x")` would let a context through. The config compiler's evaluator
 * (runtime/config/logic.ts) has the same fail-open comparisons and also reads pipeline parameters.
 * The grammar is six precedence levels; it is written out below, bounded in length and depth.
 * (`=~`, regular expressions, is not part of CircleCI's context language and is refused.)
 */

/** A value an expression works with. */
export type ExpressionValue = string | number | boolean;

/** What an expression can read: pipeline values (and `job.ssh.enabled`) by their full name. */
export type ExpressionValues = Readonly<Record<string, ExpressionValue | undefined>>;

/** The variables a context expression may name (CircleCI's pipeline values and job values). */
export const CONTEXT_EXPRESSION_VARIABLES: readonly string[] = [
  'pipeline.id',
  'pipeline.number',
  'pipeline.project.git_url',
  'pipeline.project.type',
  'pipeline.project.slug',
  'pipeline.git.tag',
  'pipeline.git.branch',
  'pipeline.git.branch.is_default',
  'pipeline.git.default_branch',
  'pipeline.git.revision',
  'pipeline.git.base_revision',
  'pipeline.trigger_source',
  'pipeline.config_source',
  'pipeline.schedule.name',
  'pipeline.schedule.id',
  'pipeline.trigger.type',
  'pipeline.trigger.id',
  'pipeline.trigger.name',
  'pipeline.event.name',
  'pipeline.event.action',
  'job.ssh.enabled',
];

/** Longest expression accepted. */
export const MAX_EXPRESSION_LENGTH = 4096;
/** Deepest nesting of parentheses and `not`. */
const MAX_DEPTH = 64;

/** An expression that is not one of the language: the message says what and where. */
export class ExpressionError extends Error {}

/** A parsed context expression. */
export interface ContextExpression {
  readonly source: string;
  /** The variables it reads, in order of first use. */
  readonly variables: readonly string[];
  /**
   * True when the expression holds for these values; false (with why) when it does not, or when
   * evaluating it failed (an unset variable, a type error): it fails closed.
   */
  evaluate(values: ExpressionValues): { readonly allowed: boolean; readonly reason?: string };
}

type Node =
  | { readonly t: 'lit'; readonly v: ExpressionValue }
  | { readonly t: 'var'; readonly name: string }
  | { readonly t: 'not'; readonly x: Node }
  | { readonly t: 'bin'; readonly op: string; readonly l: Node; readonly r: Node };

type Token = { readonly k: 'str' | 'num' | 'name' | 'op' | 'end'; readonly v: string; readonly at: number };

const WORD_OPS = new Set(['and', 'or', 'not', 'starts-with']);

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    const at = i;
    if (c === '"') {
      let s = '';
      i++;
      for (;;) {
        if (i >= src.length) throw new ExpressionError(`the string starting at position ${at} has no closing "`);
        const d = src[i];
        if (d === '"') break;
        if (d === '\\') {
          const e = src[i + 1];
          if (e !== '"' && e !== '\\') throw new ExpressionError(`'\\${e ?? ''}' at position ${i} is not an escape (a string may escape only \\" and \\\\)`);
          s += e;
          i += 2;
          continue;
        }
        s += d;
        i++;
      }
      i++;
      tokens.push({ k: 'str', v: s, at });
      continue;
    }
    if (c >= '0' && c <= '9') {
      const digits = /^\d+/.exec(src.slice(i))![0];
      if (/^[A-Za-z_.]/.test(src.slice(i + digits.length))) throw new ExpressionError(`'${src.slice(i, i + digits.length + 1)}' at position ${at} is not a whole number`);
      if (!Number.isSafeInteger(Number(digits))) throw new ExpressionError(`the number ${digits.slice(0, 30)} at position ${at} is too large`);
      tokens.push({ k: 'num', v: digits, at });
      i += digits.length;
      continue;
    }
    if (src.startsWith('starts-with', i) && !/[A-Za-z0-9_.]/.test(src[i + 11] ?? '')) {
      tokens.push({ k: 'op', v: 'starts-with', at });
      i += 11;
      continue;
    }
    const word = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/.exec(src.slice(i));
    if (word) {
      tokens.push({ k: WORD_OPS.has(word[0]) ? 'op' : 'name', v: word[0], at });
      i += word[0].length;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '=~' || two === '!~') throw new ExpressionError(`'${two}' at position ${at} is not an operator of context expressions (regular expressions are not part of the language; use ==, != or starts-with)`);
    if (two === '==' || two === '!=' || two === '>=' || two === '<=' || two === '&&' || two === '||') {
      if (two === '&&' || two === '||') throw new ExpressionError(`'${two}' at position ${at} is not an operator of context expressions; write ${two === '&&' ? 'and' : 'or'}`);
      tokens.push({ k: 'op', v: two, at });
      i += 2;
      continue;
    }
    if (c === '>' || c === '<' || c === '!' || c === '(' || c === ')') {
      tokens.push({ k: 'op', v: c, at });
      i++;
      continue;
    }
    if (c === "'") throw new ExpressionError(`a string at position ${at} is in single quotes; strings take double quotes`);
    if (c === '=') throw new ExpressionError(`'=' at position ${at} is not an operator; compare with ==`);
    throw new ExpressionError(`'${describeChar(c)}' at position ${at} is not part of the language (operators: or, and, ==, !=, starts-with, >=, >, <=, <, not, !, parentheses)`);
  }
  tokens.push({ k: 'end', v: '', at: src.length });
  return tokens;
}

function describeChar(c: string): string {
  const code = c.codePointAt(0) ?? 0;
  return code < 0x20 || code === 0x7f ? `\\u${code.toString(16).padStart(4, '0')}` : c;
}

/** Where a variable name is refused, and why; undefined when it is one a context expression may read. */
function refusedVariable(name: string): string | undefined {
  if (name === 'true' || name === 'false') return undefined;
  if (name.startsWith('pipeline.parameters.') || name === 'pipeline.parameters') {
    return `pipeline parameters (${name}) cannot be used in a context restriction: whoever triggers a pipeline sets them`;
  }
  if (name.startsWith('pipeline.trigger_parameters.') || name === 'pipeline.trigger_parameters') {
    return `${name} cannot be used in a context restriction: trigger parameters are set by whoever triggers a pipeline`;
  }
  if (!CONTEXT_EXPRESSION_VARIABLES.includes(name)) return `'${name.slice(0, 100)}' is not a pipeline value a context restriction can use (allowed: ${CONTEXT_EXPRESSION_VARIABLES.join(', ')})`;
  return undefined;
}

/**
 * Parses a context expression; throws ExpressionError naming what is wrong and where (an unknown
 * variable, a pipeline parameter, an operator the language does not have).
 */
export function parseContextExpression(source: string): ContextExpression {
  if (source.length > MAX_EXPRESSION_LENGTH) throw new ExpressionError(`the expression is ${source.length} characters long; at most ${MAX_EXPRESSION_LENGTH}`);
  if (source.trim() === '') throw new ExpressionError('the expression is empty');
  const tokens = tokenize(source);
  let i = 0;
  let depth = 0;
  const variables: string[] = [];
  const peek = () => tokens[i];
  const isOp = (...ops: string[]) => tokens[i].k === 'op' && ops.includes(tokens[i].v);
  const deeper = () => {
    if (++depth > MAX_DEPTH) throw new ExpressionError(`the expression nests deeper than ${MAX_DEPTH} levels`);
  };
  const binary = (next: () => Node, ops: string[]) => (): Node => {
    let l = next();
    while (isOp(...ops)) {
      const op = tokens[i++].v;
      l = { t: 'bin', op, l, r: next() };
    }
    return l;
  };
  const unary = (): Node => {
    if (isOp('not', '!')) {
      i++;
      deeper();
      const x = unary();
      depth--;
      return { t: 'not', x };
    }
    return primary();
  };
  const comparison = binary(unary, ['>=', '>', '<=', '<']);
  const prefix = binary(comparison, ['starts-with']);
  const equality = binary(prefix, ['==', '!=']);
  const conjunction = binary(equality, ['and']);
  const disjunction = binary(conjunction, ['or']);
  function primary(): Node {
    const t = tokens[i++];
    switch (t.k) {
      case 'str':
        return { t: 'lit', v: t.v };
      case 'num':
        return { t: 'lit', v: Number(t.v) };
      case 'name': {
        if (t.v === 'true' || t.v === 'false') return { t: 'lit', v: t.v === 'true' };
        const refused = refusedVariable(t.v);
        if (refused) throw new ExpressionError(refused);
        if (!variables.includes(t.v)) variables.push(t.v);
        return { t: 'var', name: t.v };
      }
      case 'op':
        if (t.v === '(') {
          deeper();
          const inner = disjunction();
          depth--;
          if (!isOp(')')) throw new ExpressionError(`a ( at position ${t.at} is not closed (found ${describeToken(peek())} at position ${peek().at})`);
          i++;
          return inner;
        }
        throw new ExpressionError(`${describeToken(t)} at position ${t.at} needs a value before it`);
      default:
        throw new ExpressionError('the expression ends where a value is expected');
    }
  }
  const root = disjunction();
  if (peek().k !== 'end') throw new ExpressionError(`${describeToken(peek())} at position ${peek().at} does not follow from what comes before it`);
  return {
    source,
    variables,
    evaluate(values) {
      try {
        const v = evaluateNode(root, values);
        return v === false ? { allowed: false, reason: `${source} is false` } : { allowed: true };
      } catch (error) {
        if (error instanceof EvaluationError) return { allowed: false, reason: `${source} could not be evaluated: ${error.message}` };
        throw error;
      }
    },
  };
}

function describeToken(t: Token): string {
  if (t.k === 'end') return 'the end';
  if (t.k === 'str') return `the string "${t.v.slice(0, 50)}"`;
  return `'${t.v.slice(0, 100)}'`;
}

/** Evaluating failed: the expression fails closed. */
class EvaluationError extends Error {}

const truthy = (v: ExpressionValue) => v !== false;

function typeOf(v: ExpressionValue): string {
  return typeof v === 'number' ? 'a number' : typeof v === 'string' ? 'a string' : 'a boolean';
}

function evaluateNode(node: Node, values: ExpressionValues): ExpressionValue {
  switch (node.t) {
    case 'lit':
      return node.v;
    case 'var': {
      const v = Object.prototype.hasOwnProperty.call(values, node.name) ? values[node.name] : undefined;
      if (v === undefined) throw new EvaluationError(`${node.name} has no value in this pipeline`);
      if (typeof v !== 'string' && typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) throw new EvaluationError(`${node.name} has a value that is not a string, number or boolean`);
      return v;
    }
    case 'not':
      return !truthy(evaluateNode(node.x, values));
    case 'bin': {
      if (node.op === 'and') return truthy(evaluateNode(node.l, values)) && truthy(evaluateNode(node.r, values));
      if (node.op === 'or') return truthy(evaluateNode(node.l, values)) || truthy(evaluateNode(node.r, values));
      const l = evaluateNode(node.l, values);
      const r = evaluateNode(node.r, values);
      switch (node.op) {
        case '==':
          return typeof l === typeof r && l === r;
        case '!=':
          return typeof l !== typeof r || l !== r;
        case 'starts-with':
          if (typeof l !== 'string' || typeof r !== 'string') throw new EvaluationError(`starts-with needs two strings, not ${typeOf(typeof l !== 'string' ? l : r)}`);
          return l.startsWith(r);
        default: {
          if (typeof l !== 'number' || typeof r !== 'number') throw new EvaluationError(`${node.op} needs two numbers, not ${typeOf(typeof l !== 'number' ? l : r)}`);
          return node.op === '>=' ? l >= r : node.op === '>' ? l > r : node.op === '<=' ? l <= r : l < r;
        }
      }
    }
  }
}
