import type { Positions } from './yaml-loader';

/**
 * `<< parameters.x >>`, `<< pipeline.… >>` and `<< matrix.x >>` substitution, with mustache
 * sections (`<<# parameters.flag >>…<</ parameters.flag >>`, inverted `<<^ … >>`).
 *
 * A string that is only one reference keeps the referenced value's type (a number stays a number,
 * a steps list stays a list). Values inserted are never scanned again, so an argument cannot smuggle
 * references into the scope it is passed to, and a pipeline value (a branch, a pull request's title)
 * is guarded from the passes after the one that inserts it (`unguard` ends that). Namespaces an
 * environment does not handle are left as they are for a later pass (or for bash:
 * `cat << EOF >> file` is not a reference).
 */

export interface SubstEnv {
  /** Bound parameters; undefined leaves `<< parameters.* >>` for another pass. */
  readonly params?: ReadonlyMap<string, unknown>;
  /** Names the scope in errors: `job build`, `command orb-tools/pack`. */
  readonly label?: string;
  /** `<< parameters.* >>` is an error here (workflows, pipeline-level values). */
  readonly noParams?: boolean;
  readonly matrix?: Readonly<Record<string, unknown>>;
  /** Pipeline values; undefined leaves `<< pipeline.* >>` for another pass. */
  readonly pipeline?: (name: string) => { value: unknown } | undefined;
  /** The scope is an orb's (errors explain that pipeline parameters are not visible there). */
  readonly inOrb?: boolean;
}

export type Report = (message: string, path: string, container?: unknown, key?: string | number) => void;

/**
 * Counts what substitution costs (a compilation's budget). Either method may throw to stop the
 * compilation; `path` names where it was, and is only called then.
 */
export interface SubstMeter {
  /** Text about to be written, in characters: called before the text is appended. */
  grow(chars: number, path: () => string): void;
  /** One value visited. */
  tick(path: () => string): void;
}

const WHOLE = /^\s*<<\s*((?:parameters|pipeline|matrix)\.[\w.-]+)\s*>>\s*$/;
const REF = /<<\s*((?:parameters|pipeline|matrix)\.[\w.-]+)\s*>>/g;
const OPEN_SECTION = /<<([#^])\s*((?:parameters|pipeline|matrix)\.[\w.-]+)\s*>>/g;
const CLOSE_SECTION = /<<\/\s*((?:parameters|pipeline|matrix)\.[\w.-]+)\s*>>/g;

/**
 * Mustache sections in one linear pass: closing tags are indexed first, then each opening tag is
 * paired with the next closing tag of the same name (a regex with a backreference would rescan the
 * rest of the string for every unclosed opener).
 */
function renderSections(s: string, env: SubstEnv, reportAt: () => (msg: string) => void): string {
  const closers = new Map<string, { start: number; end: number }[]>();
  for (const m of s.matchAll(CLOSE_SECTION)) {
    const list = closers.get(m[1]) ?? [];
    list.push({ start: m.index!, end: m.index! + m[0].length });
    closers.set(m[1], list);
  }
  if (closers.size === 0) return s;
  const next = new Map<string, number>();
  const opener = new RegExp(OPEN_SECTION.source, 'g');
  let out = '';
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = opener.exec(s))) {
    const list = closers.get(m[2]);
    if (!list) continue;
    let i = next.get(m[2]) ?? 0;
    while (i < list.length && list[i].start < opener.lastIndex) i++;
    next.set(m[2], i);
    if (i >= list.length) continue;
    const r = lookupRef(m[2], env, reportAt);
    if (!r.handled) continue;
    const close = list[i];
    const on = truthyValue(r.value);
    out += s.slice(pos, m.index) + ((m[1] === '#' ? on : !on) ? s.slice(opener.lastIndex, close.start) : '');
    pos = close.end;
    opener.lastIndex = close.end;
    next.set(m[2], i + 1);
  }
  return out + s.slice(pos);
}

type Lookup = { handled: false } | { handled: true; value: unknown };

/**
 * Stands for `<<` in a pipeline value that would read as a reference (a pull request titled
 * `Fix << parameters.x >>`, a branch `x<<pipeline.id>>`): a pipeline value is inserted by the first
 * pass, and the job and command passes after it must not read it as config. `unguard` puts the
 * `<<` back once every pass is done. A private-use character: no config or value has a use for it.
 */
const GUARD = '\uE000';
const INSERTED_REF = /<<(?=[#^/]?\s*(?:parameters|pipeline|matrix)\.)/g;

/** How many values have been guarded in this process: a compilation that saw it unchanged need not unguard. */
let guardedValues = 0;
export const guardedSoFar = (): number => guardedValues;

function guardInserted(value: unknown): unknown {
  if (typeof value !== 'string' || !value.includes('<<')) return value;
  const guarded = value.replace(INSERTED_REF, GUARD);
  if (guarded !== value) guardedValues++;
  return guarded;
}

/**
 * The compiled config with every guarded `<<` of an inserted pipeline value given back, changed in
 * place (it is the compilation's own output).
 */
export function unguard<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return v.includes(GUARD) ? v.split(GUARD).join('<<') : v;
    if (v === null || typeof v !== 'object') return v;
    // Written only where something changed: what holds a guarded value was made by this
    // compilation's substitution, and shared values (an orb's cached definitions) are left alone.
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const n = walk(v[i]);
        if (n !== v[i]) v[i] = n;
      }
      return v;
    }
    for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
      const n = walk(item);
      if (n !== item) (v as Record<string, unknown>)[k] = n;
    }
    return v;
  };
  return walk(value) as T;
}

function lookupRef(ref: string, env: SubstEnv, report: () => (msg: string) => void): Lookup {
  if (ref.startsWith('parameters.')) {
    if (env.noParams) {
      report()(`<< ${ref} >> is not allowed here: there are no parameters in this scope`);
      return { handled: true, value: '' };
    }
    if (!env.params) return { handled: false };
    const name = ref.slice('parameters.'.length);
    if (!env.params.has(name)) {
      const declared = [...env.params.keys()];
      report()(`<< ${ref} >>: ${env.label ?? 'this scope'} declares no parameter '${name}' (${declared.length ? `declared: ${declared.join(', ')}` : 'it declares none'}); a command or job sees only its own parameters`);
      return { handled: true, value: '' };
    }
    return { handled: true, value: env.params.get(name) };
  }
  if (ref.startsWith('pipeline.')) {
    if (!env.pipeline) return { handled: false };
    const found = env.pipeline(ref);
    if (!found) {
      report()(
        ref.startsWith('pipeline.parameters.')
          ? `<< ${ref} >>: no pipeline parameter '${ref.slice('pipeline.parameters.'.length)}' is declared${env.inOrb ? ' (pipeline parameters are not visible inside orbs)' : ' in parameters'}`
          : `<< ${ref} >> is not a known pipeline value`,
      );
      return { handled: true, value: '' };
    }
    return { handled: true, value: guardInserted(found.value) };
  }
  if (!env.matrix) return { handled: false };
  const name = ref.slice('matrix.'.length);
  if (!Object.prototype.hasOwnProperty.call(env.matrix, name)) {
    report()(`<< ${ref} >>: the matrix has no parameter '${name}'`);
    return { handled: true, value: '' };
  }
  return { handled: true, value: env.matrix[name] };
}

function inline(value: unknown, ref: string, report: () => (msg: string) => void): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') {
    report()(`<< ${ref} >> is a ${Array.isArray(value) ? 'list' : 'map'} and cannot be inserted into a string`);
    return '';
  }
  return String(value);
}

function truthyValue(v: unknown): boolean {
  return !(v === null || v === undefined || v === false || v === '' || v === 0 || (Array.isArray(v) && v.length === 0));
}

export function substituteString(s: string, env: SubstEnv, reportAt: () => (msg: string) => void, grow?: (chars: number) => void): unknown {
  if (!s.includes('<<')) return s;
  const whole = WHOLE.exec(s);
  if (whole) {
    const r = lookupRef(whole[1], env, reportAt);
    return r.handled ? (r.value === undefined ? null : r.value) : s;
  }
  let text = s;
  if (text.includes('<<#') || text.includes('<<^')) text = renderSections(text, env, reportAt);
  // Built piece by piece so that the budget is charged before each piece is appended: a string
  // that would cross it is never built.
  let out = '';
  let last = 0;
  for (const m of text.matchAll(REF)) {
    const r = lookupRef(m[1], env, reportAt);
    const piece = r.handled ? inline(r.value, m[1], reportAt) : m[0];
    grow?.(m.index! - last + piece.length);
    out += text.slice(last, m.index) + piece;
    last = m.index! + m[0].length;
  }
  grow?.(text.length - last);
  return out + text.slice(last);
}

/**
 * Substitutes through a value, returning a new value (positions copied) and leaving the input as
 * it was. `path` names the value in errors.
 */
export function substitute(value: unknown, env: SubstEnv, path: string, report: Report, positions: Positions, skip?: (path: string) => boolean, meter?: SubstMeter): unknown {
  // The path of the node being visited is kept as a stack of segments and only joined into a
  // string when a problem is reported (or a skip predicate needs it).
  const segs: (string | number)[] = [];
  const pathNow = (): string => {
    let p = path;
    for (const s of segs) p = typeof s === 'number' ? `${p}[${s}]` : p ? `${p}.${s}` : s;
    return p;
  };
  const grow = meter ? (chars: number) => meter.grow(chars, pathNow) : undefined;
  const walk = (v: unknown, container: unknown, key: string | number | undefined): unknown => {
    meter?.tick(pathNow);
    if (typeof v === 'string') {
      if (!v.includes('<<')) return v;
      return substituteString(v, env, () => (msg: string) => report(msg, pathNow(), container, key), grow);
    }
    if (v === null || typeof v !== 'object') return v;
    if (skip?.(pathNow())) return v;
    if (Array.isArray(v)) {
      let out: unknown[] | undefined;
      for (let i = 0; i < v.length; i++) {
        segs.push(i);
        const n = walk(v[i], v, i);
        segs.pop();
        if (n !== v[i] && !out) out = v.slice(0, i);
        if (out) out.push(n);
      }
      if (!out) return v;
      positions.copy(v, out);
      return out;
    }
    let out: Record<string, unknown> | undefined;
    const entries = Object.entries(v as Record<string, unknown>);
    for (let i = 0; i < entries.length; i++) {
      const [k, item] = entries[i];
      segs.push(k);
      const n = walk(item, v, k);
      segs.pop();
      if (n !== item && !out) {
        out = {};
        for (let j = 0; j < i; j++) out[entries[j][0]] = entries[j][1];
      }
      if (out) out[k] = n;
    }
    if (!out) return v;
    positions.copy(v, out);
    return out;
  };
  return walk(value, undefined, undefined);
}
