/**
 * Regular expressions from users (branch and tag filters, `matches`) run here, not in the
 * backtracking engine of JavaScript: a Thompson NFA simulated over the input (a Pike VM without
 * captures) takes time proportional to pattern size × input length whatever the pattern, so
 * `/(a+)+$/` against 100,000 characters answers in a few milliseconds.
 *
 * Matching is whole-value (CircleCI filters and `matches` must match the entire name). Supported:
 * literals, `.`, classes `[a-z_]` / `[^…]`, escapes `\d \w \s \D \W \S` and escaped punctuation,
 * groups `( )` and `(?: )`, alternation `|`, quantifiers `* + ? {n} {n,} {n,m}` (lazy and possessive
 * suffixes are accepted and mean the same for a whole match), anchors `^ $`, and a leading `(?i)`.
 * Not supported (a compile error): lookaround, backreferences, named groups, other inline flags.
 */

export class RegexError extends Error {}

/** Largest compiled program; `{n,m}` copies its operand, so this bounds `(x{1000}){1000}`. */
const MAX_PROGRAM = 20_000;

type Pred = (c: number) => boolean;

type Ast =
  | { t: 'char'; pred: Pred }
  | { t: 'seq'; items: Ast[] }
  | { t: 'alt'; items: Ast[] }
  | { t: 'rep'; item: Ast; min: number; max: number } // max = Infinity for unbounded
  | { t: 'bol' }
  | { t: 'eol' }
  | { t: 'wordb'; not: boolean };

type Inst =
  | { op: 'char'; pred: Pred }
  | { op: 'split'; x: number; y: number }
  | { op: 'jmp'; x: number }
  | { op: 'bol' }
  | { op: 'eol' }
  | { op: 'wordb'; not: boolean }
  | { op: 'match' };

const isDigit: Pred = (c) => c >= 48 && c <= 57;
const isWord: Pred = (c) => isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
const isSpace: Pred = (c) => c === 32 || (c >= 9 && c <= 13);

class Parser {
  private i = 0;
  constructor(
    private readonly src: string,
    private readonly fold: boolean,
  ) {}

  parse(): Ast {
    const ast = this.alt();
    if (this.i < this.src.length) throw new RegexError(`unexpected '${this.src[this.i]}' at position ${this.i}`);
    return ast;
  }

  private alt(): Ast {
    const items = [this.seq()];
    while (this.src[this.i] === '|') {
      this.i++;
      items.push(this.seq());
    }
    return items.length === 1 ? items[0] : { t: 'alt', items };
  }

  private seq(): Ast {
    const items: Ast[] = [];
    while (this.i < this.src.length && this.src[this.i] !== '|' && this.src[this.i] !== ')') {
      let atom = this.atom();
      for (;;) {
        const q = this.quantifier();
        if (!q) break;
        if (atom.t === 'bol' || atom.t === 'eol' || atom.t === 'wordb') throw new RegexError('an anchor cannot be repeated');
        atom = { t: 'rep', item: atom, min: q[0], max: q[1] };
      }
      items.push(atom);
    }
    return items.length === 1 ? items[0] : { t: 'seq', items };
  }

  private quantifier(): [number, number] | undefined {
    const c = this.src[this.i];
    let q: [number, number] | undefined;
    if (c === '*') q = [0, Infinity];
    else if (c === '+') q = [1, Infinity];
    else if (c === '?') q = [0, 1];
    else if (c === '{') {
      const m = /^\{(\d{1,4})(,(\d{0,4}))?\}/.exec(this.src.slice(this.i, this.i + 12));
      if (!m) return undefined; // a literal '{'
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (max < min) throw new RegexError(`bad repetition ${m[0]}`);
      this.i += m[0].length - 1;
      q = [min, max];
    }
    if (!q) return undefined;
    this.i++;
    if (this.src[this.i] === '?' || this.src[this.i] === '+') this.i++;
    return q;
  }

  private atom(): Ast {
    const c = this.src[this.i++];
    switch (c) {
      case '(': {
        if (this.src[this.i] === '?') {
          if (this.src[this.i + 1] !== ':') throw new RegexError(`group syntax (?${this.src[this.i + 1] ?? ''} is not supported (no lookaround or named groups)`);
          this.i += 2;
        }
        const inner = this.alt();
        if (this.src[this.i] !== ')') throw new RegexError('missing )');
        this.i++;
        return inner;
      }
      case ')':
        throw new RegexError('unmatched )');
      case '[':
        return this.charClass();
      case '.':
        return { t: 'char', pred: (x) => x !== 10 };
      case '^':
        return { t: 'bol' };
      case '$':
        return { t: 'eol' };
      case '\\':
        if (this.src[this.i] === 'b' || this.src[this.i] === 'B') return { t: 'wordb', not: this.src[this.i++] === 'B' };
        return { t: 'char', pred: this.escape(false) };
      case '*':
      case '+':
      case '?':
        throw new RegexError(`nothing to repeat before '${c}' at position ${this.i - 1}`);
      default:
        return { t: 'char', pred: this.literal(c.charCodeAt(0)) };
    }
  }

  private literal(code: number): Pred {
    if (!this.fold) return (x) => x === code;
    const lower = String.fromCharCode(code).toLowerCase().charCodeAt(0);
    return (x) => x === code || String.fromCharCode(x).toLowerCase().charCodeAt(0) === lower;
  }

  private escape(inClass: boolean): Pred {
    const e = this.src[this.i++];
    if (e === undefined) throw new RegexError('pattern ends with \\');
    switch (e) {
      case 'd':
        return isDigit;
      case 'D':
        return (x) => !isDigit(x);
      case 'w':
        return isWord;
      case 'W':
        return (x) => !isWord(x);
      case 's':
        return isSpace;
      case 'S':
        return (x) => !isSpace(x);
      case 'n':
        return (x) => x === 10;
      case 't':
        return (x) => x === 9;
      case 'r':
        return (x) => x === 13;
      default:
        if (/[1-9]/.test(e)) throw new RegexError('backreferences are not supported');
        if (!inClass && /[AzZ]/.test(e)) throw new RegexError(`\\${e} is not supported`);
        if (/[a-zA-Z0-9]/.test(e)) throw new RegexError(`unknown escape \\${e}`);
        return this.literal(e.charCodeAt(0));
    }
  }

  private charClass(): Ast {
    let negate = false;
    if (this.src[this.i] === '^') {
      negate = true;
      this.i++;
    }
    const preds: Pred[] = [];
    let first = true;
    while (this.i < this.src.length && (this.src[this.i] !== ']' || first)) {
      first = false;
      let lo: number | undefined;
      if (this.src[this.i] === '\\') {
        const e = this.src[this.i + 1];
        if (e === undefined) throw new RegexError('pattern ends with \\');
        if (/[dDwWsS]/.test(e)) {
          this.i++;
          preds.push(this.escape(true));
          continue;
        }
        this.i += 2;
        lo = e === 'n' ? 10 : e === 't' ? 9 : e === 'r' ? 13 : e.charCodeAt(0);
      } else {
        lo = this.src.charCodeAt(this.i++);
      }
      if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']' && this.i + 1 < this.src.length) {
        this.i++;
        let hi = this.src.charCodeAt(this.i++);
        if (hi === 92) hi = this.src.charCodeAt(this.i++);
        if (hi < lo) throw new RegexError('bad range in character class');
        const l = lo;
        if (this.fold) {
          preds.push((x) => (x >= l && x <= hi) || ((x | 32) >= l && (x | 32) <= hi) || ((x & ~32) >= l && (x & ~32) <= hi));
        } else preds.push((x) => x >= l && x <= hi);
      } else {
        preds.push(this.literal(lo));
      }
    }
    if (this.src[this.i] !== ']') throw new RegexError('missing ]');
    this.i++;
    const any: Pred = (x) => preds.some((p) => p(x));
    return { t: 'char', pred: negate ? (x) => !any(x) : any };
  }

}

function compile(ast: Ast): Inst[] {
  const prog: Inst[] = [];
  const emit = (inst: Inst): number => {
    if (prog.length >= MAX_PROGRAM) throw new RegexError(`pattern is too large (more than ${MAX_PROGRAM} states after expanding repetitions)`);
    prog.push(inst);
    return prog.length - 1;
  };
  const gen = (n: Ast): void => {
    switch (n.t) {
      case 'char':
        emit({ op: 'char', pred: n.pred });
        return;
      case 'bol':
        emit({ op: 'bol' });
        return;
      case 'eol':
        emit({ op: 'eol' });
        return;
      case 'wordb':
        emit({ op: 'wordb', not: n.not });
        return;
      case 'seq':
        n.items.forEach(gen);
        return;
      case 'alt': {
        const jumps: number[] = [];
        n.items.forEach((item, idx) => {
          if (idx < n.items.length - 1) {
            const split = emit({ op: 'split', x: 0, y: 0 });
            (prog[split] as { x: number }).x = prog.length;
            gen(item);
            jumps.push(emit({ op: 'jmp', x: 0 }));
            (prog[split] as { y: number }).y = prog.length;
          } else gen(item);
        });
        for (const j of jumps) (prog[j] as { x: number }).x = prog.length;
        return;
      }
      case 'rep': {
        for (let k = 0; k < n.min; k++) gen(n.item);
        if (n.max === Infinity) {
          const split = emit({ op: 'split', x: 0, y: 0 });
          (prog[split] as { x: number }).x = prog.length;
          gen(n.item);
          emit({ op: 'jmp', x: split });
          (prog[split] as { y: number }).y = prog.length;
        } else {
          const splits: number[] = [];
          for (let k = n.min; k < n.max; k++) {
            const split = emit({ op: 'split', x: 0, y: 0 });
            (prog[split] as { x: number }).x = prog.length;
            splits.push(split);
            gen(n.item);
          }
          for (const s of splits) (prog[s] as { y: number }).y = prog.length;
        }
        return;
      }
    }
  };
  gen(ast);
  emit({ op: 'match' });
  return prog;
}

export interface SafeRegex {
  readonly source: string;
  /** True when the pattern matches the whole of `input`. */
  matchesWhole(input: string): boolean;
}

/** Compiles a user pattern; throws RegexError with a reason when it is not supported. */
export function compileSafeRegex(pattern: string): SafeRegex {
  let src = pattern;
  let fold = false;
  if (src.startsWith('(?i)')) {
    fold = true;
    src = src.slice(4);
  }
  const prog = compile(new Parser(src, fold).parse());
  const n = prog.length;
  return {
    source: pattern,
    matchesWhole(input: string): boolean {
      // Two state lists swapped per character; `seen` marks states already added at this position.
      let current = new Int32Array(n);
      let next = new Int32Array(n);
      let currentLen = 0;
      let nextLen = 0;
      const seen = new Int32Array(n).fill(-1);
      const stack = new Int32Array(n * 2 + 2);
      let generation = 0;
      // iterative epsilon closure: an explicit stack instead of recursion keeps deep programs safe
      const add = (list: Int32Array, len: number, pc: number, pos: number): number => {
        let sp = 0;
        stack[sp++] = pc;
        while (sp > 0) {
          const p = stack[--sp];
          if (seen[p] === generation) continue;
          seen[p] = generation;
          const inst = prog[p];
          switch (inst.op) {
            case 'jmp':
              stack[sp++] = inst.x;
              break;
            case 'split':
              stack[sp++] = inst.y;
              stack[sp++] = inst.x;
              break;
            case 'bol':
              if (pos === 0) stack[sp++] = p + 1;
              break;
            case 'eol':
              if (pos === input.length) stack[sp++] = p + 1;
              break;
            case 'wordb': {
              const before = pos > 0 && isWord(input.charCodeAt(pos - 1));
              const after = pos < input.length && isWord(input.charCodeAt(pos));
              if ((before !== after) !== inst.not) stack[sp++] = p + 1;
              break;
            }
            default:
              list[len++] = p;
          }
        }
        return len;
      };
      currentLen = add(current, 0, 0, 0);
      for (let pos = 0; pos < input.length && currentLen > 0; pos++) {
        const c = input.charCodeAt(pos);
        generation++;
        nextLen = 0;
        for (let k = 0; k < currentLen; k++) {
          const p = current[k];
          const inst = prog[p];
          if (inst.op === 'char' && inst.pred(c)) nextLen = add(next, nextLen, p + 1, pos + 1);
        }
        const t = current;
        current = next;
        next = t;
        currentLen = nextLen;
      }
      for (let k = 0; k < currentLen; k++) if (prog[current[k]].op === 'match') return true;
      return false;
    },
  };
}
