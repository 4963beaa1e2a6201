import { isAlias, isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Node as YamlNode } from 'yaml';

/**
 * Loads a YAML document into plain JS values, bounded against hostile input, and remembers where
 * every map, list and map key came from so that problems can name `line:column`.
 *
 * Aliases share the converted value of their anchor (no copying), so an alias bomb costs nothing to
 * load; its *expanded* size is counted and refused above `maxNodes`. Merge keys (`<<`) are applied
 * here. Values returned are never mutated by the compiler: every later stage builds new objects.
 */

export interface SourcePos {
  readonly line: number;
  readonly column: number;
}

export interface LoadLimits {
  /** Largest source accepted, in characters. */
  readonly maxChars: number;
  /** Deepest nesting of maps and lists. */
  readonly maxDepth: number;
  /** Most nodes after expanding aliases and merge keys. */
  readonly maxNodes: number;
}

export const DEFAULT_LIMITS: LoadLimits = { maxChars: 4 * 1024 * 1024, maxDepth: 200, maxNodes: 1_000_000 };

/**
 * Where values came from: positions of containers, and of each key inside a map. A position is kept
 * as one number (document index × 2^32 + offset) and turned into line:column only when a problem
 * is reported, which keeps loading cheap.
 */
/** Document ids are unique in the process so that positions from cached orb documents stay valid. */
let nextDocumentId = 1;

export class Positions {
  private readonly counters = new Map<number, LineCounter>();
  private readonly nodes = new WeakMap<object, number>();
  private readonly keys = new WeakMap<object, Map<string | number, number>>();
  /** Positions of documents loaded earlier (cached orbs), consulted after our own. */
  private readonly adopted: Positions[] = [];

  /** Registers one loaded document; returns a function encoding its offsets. */
  register(counter: LineCounter): (offset: number | undefined) => number {
    const id = nextDocumentId++;
    const base = id * 2 ** 32;
    this.counters.set(id, counter);
    return (offset) => base + (offset ?? 0);
  }

  /** Makes positions recorded in `other` (a cached document's) known here too. */
  adopt(other: Positions): void {
    if (other === this || this.adopted.includes(other)) return;
    this.adopted.push(other);
    for (const [id, c] of other.counters) this.counters.set(id, c);
  }

  private nodePos(obj: object): number | undefined {
    const own = this.nodes.get(obj);
    if (own !== undefined) return own;
    for (const a of this.adopted) {
      const p = a.nodePos(obj);
      if (p !== undefined) return p;
    }
    return undefined;
  }

  private keyMap(obj: object): Map<string | number, number> | undefined {
    const own = this.keys.get(obj);
    if (own) return own;
    for (const a of this.adopted) {
      const m = a.keyMap(obj);
      if (m) return m;
    }
    return undefined;
  }

  private decode(pos: number | undefined): SourcePos | undefined {
    if (pos === undefined) return undefined;
    const counter = this.counters.get(Math.floor(pos / 2 ** 32));
    if (!counter) return undefined;
    const p = counter.linePos(pos % 2 ** 32);
    return { line: p.line, column: p.col };
  }

  setNode(obj: object, pos: number): void {
    if (!this.nodes.has(obj)) this.nodes.set(obj, pos);
  }

  setKey(obj: object, key: string | number, pos: number): void {
    let m = this.keys.get(obj);
    if (!m) this.keys.set(obj, (m = new Map()));
    if (!m.has(key)) m.set(key, pos);
  }

  /** The position of `container[key]` when known, else of the container. */
  of(container: unknown, key?: string | number): SourcePos | undefined {
    if (container === null || typeof container !== 'object') return undefined;
    if (key !== undefined) {
      const k = this.keyMap(container)?.get(key);
      if (k !== undefined) return this.decode(k);
      const value = (container as Record<string | number, unknown>)[key];
      if (value !== null && typeof value === 'object') {
        const p = this.nodePos(value);
        if (p !== undefined) return this.decode(p);
      }
    }
    return this.decode(this.nodePos(container));
  }

  copyKey(from: object, key: string, to: object): void {
    const k = this.keyMap(from)?.get(key);
    if (k !== undefined) this.setKey(to, key, k);
  }

  /** Gives `to` the positions of `from` (used when a stage copies a value while rewriting it). */
  copy(from: unknown, to: object): void {
    if (from === null || typeof from !== 'object' || from === to) return;
    const p = this.nodePos(from);
    if (p !== undefined && !this.nodes.has(to)) this.nodes.set(to, p);
    const k = this.keyMap(from);
    if (k && !this.keys.has(to)) this.keys.set(to, k);
  }
}

export interface LoadProblem {
  readonly message: string;
  readonly line?: number;
  readonly column?: number;
}

export interface LoadResult {
  readonly value: unknown;
  readonly problems: LoadProblem[];
}

export class LoadLimitError extends Error {}

/** Cheap checks before parsing, so the parser itself never sees a pathological document. */
function prescan(source: string, limits: LoadLimits): string | undefined {
  if (source.length > limits.maxChars) {
    return `config is ${source.length} characters; the limit is ${limits.maxChars}`;
  }
  let flowDepth = 0;
  let lineStart = true;
  let indent = 0;
  for (let i = 0; i < source.length; i++) {
    const c = source.charCodeAt(i);
    if (c === 10) {
      lineStart = true;
      indent = 0;
      continue;
    }
    if (lineStart) {
      // spaces, tabs and block indicators ("- ", "? ", ": ") before the content of a line
      if (c === 32 || c === 9 || ((c === 45 || c === 63 || c === 58) && (source.charCodeAt(i + 1) === 32 || source.charCodeAt(i + 1) === 10))) {
        indent++;
        if (indent > limits.maxDepth * 5) return `line indentation is more than ${limits.maxDepth * 5} columns; nesting is limited to ${limits.maxDepth} levels`;
        continue;
      }
      lineStart = false;
    }
    if (c === 91 || c === 123) {
      if (++flowDepth > limits.maxDepth * 5) return `nesting is deeper than ${limits.maxDepth} levels`;
    } else if ((c === 93 || c === 125) && flowDepth > 0) flowDepth--;
  }
  return undefined;
}

export function loadYaml(source: string, positions: Positions, limits: LoadLimits = DEFAULT_LIMITS): LoadResult {
  const problems: LoadProblem[] = [];
  const early = prescan(source, limits);
  if (early) return { value: undefined, problems: [{ message: early }] };
  const lineCounter = new LineCounter();
  let docs;
  try {
    docs = parseAllDocuments(source, { lineCounter, uniqueKeys: false, merge: false, strict: false, prettyErrors: false });
  } catch (error) {
    return { value: undefined, problems: [{ message: `YAML could not be parsed: ${(error as Error).message}` }] };
  }
  const lineAt = (offset: number | undefined): SourcePos => {
    const p = lineCounter.linePos(offset ?? 0);
    return { line: p.line, column: p.col };
  };
  const posAt = positions.register(lineCounter);
  // A stream of several documents: CircleCI reads the first.
  const doc = Array.isArray(docs) ? docs[0] : docs;
  if (!doc) return { value: undefined, problems: [] };
  for (const e of doc.errors) {
    // Be lenient where CircleCI is: tabs inside plain scalars and redefined anchors are accepted.
    if (e.code === 'TAB_AS_INDENT' || e.code === 'DUPLICATE_KEY') continue;
    const p = lineAt(e.pos[0]);
    problems.push({ message: `YAML syntax error: ${e.message.split('\n')[0]}`, line: p.line, column: p.column });
  }
  if (problems.length) return { value: undefined, problems };

  const memo = new Map<YamlNode, unknown>();
  const sizes = new WeakMap<object, number>();
  let total = 0;
  const sizeOf = (v: unknown): number => (v !== null && typeof v === 'object' ? (sizes.get(v) ?? 1) : 1);

  const anchors = new Map<string, YamlNode>();
  const convert = (node: unknown, depth: number): unknown => {
    const v = convertNode(node, depth);
    const anchor = (node as { anchor?: string } | null)?.anchor;
    if (anchor && !isAlias(node)) anchors.set(anchor, node as YamlNode);
    return v;
  };
  const convertNode = (node: unknown, depth: number): unknown => {
    if (depth > limits.maxDepth) throw new LoadLimitError(`nesting is deeper than ${limits.maxDepth} levels`);
    if (node === null || node === undefined) return null;
    if (isAlias(node)) {
      // Anchors seen so far, latest definition winning (yaml's own resolve() walks the whole
      // document per alias, which is quadratic).
      const target = anchors.get(node.source);
      if (!target) {
        const p = lineAt(node.range?.[0]);
        throw new LoadLimitError(`unknown alias *${node.source} at ${p.line}:${p.column}`);
      }
      if (!memo.has(target)) memo.set(target, convert(target, depth));
      const v = memo.get(target);
      total += sizeOf(v);
      if (total > limits.maxNodes) throw new LoadLimitError(`aliases expand to more than ${limits.maxNodes} nodes`);
      return v;
    }
    if (isScalar(node)) {
      total++;
      if (total > limits.maxNodes) throw new LoadLimitError(`document has more than ${limits.maxNodes} nodes`);
      const v = node.value;
      return v === undefined ? null : v;
    }
    if (memo.has(node as YamlNode)) return memo.get(node as YamlNode);
    if (isSeq(node)) {
      const out: unknown[] = [];
      memo.set(node, out);
      positions.setNode(out, posAt(node.range?.[0]));
      let size = 1;
      node.items.forEach((item, i) => {
        const v = convert(item, depth + 1);
        out.push(v);
        size += sizeOf(v);
        const r = (item as YamlNode | null)?.range;
        if (r) positions.setKey(out, i, posAt(r[0]));
      });
      sizes.set(out, size);
      total++;
      return out;
    }
    if (isMap(node)) {
      const out: Record<string, unknown> = {};
      memo.set(node, out);
      positions.setNode(out, posAt(node.range?.[0]));
      let size = 1;
      const merges: unknown[] = [];
      for (const pair of node.items) {
        const keyNode = pair.key as YamlNode | null;
        const keyValue = isScalar(keyNode) ? keyNode.value : keyNode === null ? null : convert(keyNode, depth + 1);
        const key = keyValue === null || typeof keyValue !== 'object' ? String(keyValue) : JSON.stringify(keyValue);
        const v = convert(pair.value, depth + 1);
        if (key === '<<' && isScalar(keyNode) && keyNode.type === 'PLAIN') {
          merges.push(v);
          continue;
        }
        if (Object.prototype.hasOwnProperty.call(out, key)) delete out[key]; // last one wins, in its place
        out[key] = v;
        size += sizeOf(v);
        positions.setKey(out, key, posAt(keyNode?.range?.[0] ?? node.range?.[0]));
      }
      // Merge keys: explicit keys win; among merged maps, the earlier one wins.
      for (const m of merges) {
        const sources = Array.isArray(m) ? m : [m];
        for (const src of sources) {
          if (src === null || typeof src !== 'object' || Array.isArray(src)) {
            const p = lineAt(node.range?.[0]);
            throw new LoadLimitError(`a merge key (<<) at ${p.line}:${p.column} must refer to a map or a list of maps`);
          }
          for (const [k, val] of Object.entries(src as Record<string, unknown>)) {
            if (Object.prototype.hasOwnProperty.call(out, k)) continue;
            out[k] = val;
            size += sizeOf(val);
            total += sizeOf(val);
            positions.copyKey(src, k, out);
          }
        }
      }
      sizes.set(out, size);
      total++;
      if (total > limits.maxNodes) throw new LoadLimitError(`aliases expand to more than ${limits.maxNodes} nodes`);
      return out;
    }
    // Pairs and other oddities: render as their JSON value.
    return (node as { toJSON?: () => unknown }).toJSON?.() ?? null;
  };

  try {
    return { value: convert(doc.contents, 0), problems };
  } catch (error) {
    if (error instanceof LoadLimitError) return { value: undefined, problems: [{ message: error.message }] };
    if (error instanceof RangeError) return { value: undefined, problems: [{ message: `document is too deeply nested (${error.message})` }] };
    throw error;
  }
}
