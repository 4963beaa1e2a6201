import { compileSafeRegex, RegexError } from './safe-regex';

/**
 * Logic statements (`and`, `or`, `not`, `equal`, `matches`, literals) and the newer expression
 * strings (`pipeline.git.branch == "main" and not (pipeline.git.tag starts-with "v")`), both
 * evaluated at compile time. Regexes go through the backtracking-free matcher.
 */

export class LogicError extends Error {}

/** Looks up a dotted name (`pipeline.git.branch`); undefined when it is not a known name. */
export type NameLookup = (name: string) => { value: unknown } | undefined;

export function truthy(v: unknown): boolean {
  if (v === null || v === undefined || v === false) return false;
  if (typeof v === 'number') return v !== 0 && !Number.isNaN(v);
  if (typeof v === 'string') return v.length > 0;
  return true;
}

const EXPRESSION_HINT = /(==|!=|<=|>=|<|>|\bmatches\b|\bstarts-with\b|\band\b|\bor\b|^\s*not\b|^\s*pipeline\.|^\s*\()/;

/** True when a string looks like an expression rather than a literal. */
export function looksLikeExpression(s: string): boolean {
  return EXPRESSION_HINT.test(s);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

export function regexMatchesWhole(pattern: string, value: string): boolean {
  let p = pattern;
  if (p.length >= 2 && p.startsWith('/') && p.endsWith('/')) p = p.slice(1, -1);
  try {
    return compileSafeRegex(p).matchesWhole(value);
  } catch (error) {
    if (error instanceof RegexError) throw new LogicError(`regex /${p}/ is not supported: ${error.message}`);
    throw error;
  }
}

/** Evaluates a logic statement (already substituted). Throws LogicError for malformed statements. */
export function evaluateLogic(statement: unknown, lookup: NameLookup): boolean {
  if (typeof statement === 'string' && looksLikeExpression(statement)) return truthy(evaluateExpression(statement, lookup));
  if (statement === null || typeof statement !== 'object') return truthy(statement);
  if (Array.isArray(statement)) throw new LogicError('a logic statement is a value or a map with one of and, or, not, equal, matches; found a list');
  const keys = Object.keys(statement);
  if (keys.length !== 1) throw new LogicError(`a logic statement has exactly one key (and, or, not, equal, matches); found ${keys.join(', ') || 'none'}`);
  const [key] = keys;
  const arg = (statement as Record<string, unknown>)[key];
  switch (key) {
    case 'and': {
      const list = asList(arg, key);
      return list.length > 0 && list.every((s) => evaluateLogic(s, lookup));
    }
    case 'or': {
      const list = asList(arg, key);
      return list.length > 0 && list.some((s) => evaluateLogic(s, lookup));
    }
    case 'not':
      if (arg === null || arg === undefined) return false;
      return !evaluateLogic(arg, lookup);
    case 'equal': {
      const list = asList(arg, key);
      if (list.length === 0) return false;
      return list.every((v) => deepEqual(v, list[0]));
    }
    case 'matches': {
      if (arg === null || typeof arg !== 'object' || Array.isArray(arg)) throw new LogicError('matches takes a map {pattern, value}');
      const { pattern, value } = arg as Record<string, unknown>;
      if (typeof pattern !== 'string') throw new LogicError('matches.pattern must be a string');
      if (value === null || value === undefined) return false;
      return regexMatchesWhole(pattern, String(value));
    }
    default:
      throw new LogicError(`unknown logic operator '${key}'; allowed: and, or, not, equal, matches`);
  }
}

function asList(v: unknown, key: string): unknown[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new LogicError(`${key} takes a list`);
  return v;
}

// ---- expression strings ----

type Tok = { k: 'id' | 'str' | 'num' | 'regex' | 'op' | 'end'; v: string };

function tokenize(src: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      let s = '';
      while (j < src.length && src[j] !== c) {
        if (src[j] === '\\' && j + 1 < src.length) j++;
        s += src[j++];
      }
      if (j >= src.length) throw new LogicError(`unterminated string in expression: ${src}`);
      toks.push({ k: 'str', v: s });
      i = j + 1;
      continue;
    }
    if (c === '/') {
      let j = i + 1;
      while (j < src.length && src[j] !== '/') {
        if (src[j] === '\\') j++;
        j++;
      }
      if (j >= src.length) throw new LogicError(`unterminated regex in expression: ${src}`);
      toks.push({ k: 'regex', v: src.slice(i + 1, j) });
      i = j + 1;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (['==', '!=', '<=', '>='].includes(two)) {
      toks.push({ k: 'op', v: two });
      i += 2;
      continue;
    }
    if ('()<>'.includes(c)) {
      toks.push({ k: 'op', v: c });
      i++;
      continue;
    }
    const num = /^-?\d+(\.\d+)?/.exec(src.slice(i));
    if (num) {
      toks.push({ k: 'num', v: num[0] });
      i += num[0].length;
      continue;
    }
    const id = /^[A-Za-z_][\w.-]*/.exec(src.slice(i));
    if (id) {
      toks.push({ k: 'id', v: id[0] });
      i += id[0].length;
      continue;
    }
    throw new LogicError(`unexpected '${c}' in expression: ${src}`);
  }
  toks.push({ k: 'end', v: '' });
  return toks;
}

/** Evaluates an expression string. */
export function evaluateExpression(src: string, lookup: NameLookup): unknown {
  if (src.length > 10_000) throw new LogicError('expression is longer than 10000 characters');
  const toks = tokenize(src);
  let i = 0;
  let depth = 0;
  const peek = () => toks[i];
  const isWord = (w: string) => toks[i].k === 'id' && toks[i].v === w;
  const orExpr = (): unknown => {
    let l = andExpr();
    while (isWord('or')) {
      i++;
      const r = andExpr();
      l = truthy(l) || truthy(r);
    }
    return l;
  };
  const andExpr = (): unknown => {
    let l = notExpr();
    while (isWord('and')) {
      i++;
      const r = notExpr();
      l = truthy(l) && truthy(r);
    }
    return l;
  };
  const notExpr = (): unknown => {
    if (isWord('not')) {
      i++;
      if (++depth > 100) throw new LogicError('expression is nested too deeply');
      const v = !truthy(notExpr());
      depth--;
      return v;
    }
    return cmp();
  };
  const cmp = (): unknown => {
    const l = primary();
    const t = peek();
    if (t.k === 'op' && ['==', '!=', '<', '<=', '>', '>='].includes(t.v)) {
      i++;
      const r = primary();
      switch (t.v) {
        case '==':
          return deepEqual(l, r);
        case '!=':
          return !deepEqual(l, r);
        default: {
          if (typeof l !== typeof r || (typeof l !== 'number' && typeof l !== 'string')) return false;
          const a = l as number | string;
          const b = r as number | string;
          return t.v === '<' ? a < b : t.v === '<=' ? a <= b : t.v === '>' ? a > b : a >= b;
        }
      }
    }
    if (isWord('starts-with')) {
      i++;
      const r = primary();
      return typeof l === 'string' && typeof r === 'string' && l.startsWith(r);
    }
    if (isWord('matches')) {
      i++;
      const t2 = toks[i++];
      if (t2.k !== 'regex' && t2.k !== 'str') throw new LogicError(`matches needs a /regex/ in expression: ${src}`);
      return typeof l === 'string' && regexMatchesWhole(t2.v, l);
    }
    return l;
  };
  const primary = (): unknown => {
    const t = toks[i++];
    switch (t.k) {
      case 'str':
        return t.v;
      case 'num':
        return Number(t.v);
      case 'regex':
        throw new LogicError(`a /regex/ may only follow matches in expression: ${src}`);
      case 'op':
        if (t.v === '(') {
          if (++depth > 100) throw new LogicError('expression is nested too deeply');
          const v = orExpr();
          depth--;
          if (toks[i++].v !== ')') throw new LogicError(`missing ) in expression: ${src}`);
          return v;
        }
        throw new LogicError(`unexpected '${t.v}' in expression: ${src}`);
      case 'id': {
        if (t.v === 'true') return true;
        if (t.v === 'false') return false;
        if (t.v === 'null') return null;
        const found = lookup(t.v);
        if (!found) throw new LogicError(`unknown name '${t.v}' in expression: ${src}`);
        return found.value;
      }
      default:
        throw new LogicError(`expression ends too early: ${src}`);
    }
  };
  const v = orExpr();
  if (peek().k !== 'end') throw new LogicError(`unexpected '${peek().v}' in expression: ${src}`);
  return v;
}
