/**
 * The masking hook every chunk of output passes through before it leaves the agent, and the
 * secret masker the agent builds from its task's secrets (`createSecretMasker`).
 */
export interface OutputMasker {
  /** Starts one step's output. The stream may hold back a tail to catch a value split across writes. */
  stream(): MaskStream;
  /** Masks a whole text at once, as `maskText` does through a stream (a masker may do it sooner). */
  text?(text: string): string;
}

export interface MaskStream {
  /** Masks a chunk; returns what can be sent now (the caller may reuse `chunk` afterwards). */
  push(chunk: Uint8Array): Uint8Array;
  /**
   * As `push`, without joining what can be sent now into one array: hands it to `take` in pieces,
   * in order, some of them views of `chunk` (valid until the caller reuses it). Saves copying
   * every chunk. Returns the last value `take` returned.
   */
  pushEach<T>(chunk: Uint8Array, take: (piece: Uint8Array) => T): T | undefined;
  /** Returns whatever was held back, masked: call at the end of the step. */
  end(): Uint8Array;
  /**
   * Returns what no later output can turn into part of a value: only the bytes that may still
   * begin one stay held. For a step gone quiet (the agent calls it a few times a second), so
   * output is never held back for long.
   */
  flush?(): Uint8Array;
}

const EMPTY = new Uint8Array(0);

export const noMasking: OutputMasker = {
  stream: () => ({ push: (chunk) => chunk, pushEach: (chunk, take) => take(chunk), end: () => EMPTY }),
};

/** Values shorter than this (in characters) are not masked: hiding `1` or `abc` would garble every log. */
export const MIN_MASKED_LENGTH = 4;
/** What a masked value is replaced with, as CircleCI shows it. */
export const MASK = '********';
/**
 * Values never masked although long enough, as in CircleCI: a project setting `true` would
 * otherwise hide every `true` in every log.
 */
export const UNMASKED_VALUES: ReadonlySet<string> = new Set(['true', 'True', 'false', 'False']);

/** Width at which `base64` (GNU coreutils) wraps its output. */
const BASE64_LINE = 76;

/**
 * The texts masked for one secret value (none when it is too short to mask): the value itself;
 * its base64 (standard and URL-safe, with and without `=` padding, wrapped at 76 columns as
 * `base64` prints it, and the characters that depend on the value alone at each of the three
 * alignments it can have inside a longer base64 text, as in `echo "$TOKEN" | base64` or a
 * `user:password` header); its URL encodings (`encodeURIComponent`, with `+` for spaces, and an
 * HTML form's); and its JSON string escapings (`JSON.stringify`, and with `\uXXXX` for non-ASCII
 * as Python and PHP write them).
 */
export function maskedForms(value: string): string[] {
  if ([...value].length < MIN_MASKED_LENGTH || UNMASKED_VALUES.has(value)) return [];
  const forms = new Set<string>([value]);
  const bytes = Buffer.from(value);

  const full = bytes.toString('base64');
  const urlSafe = (b64: string) => b64.replace(/\+/g, '-').replace(/\//g, '_');
  for (const b64 of [full, full.replace(/=+$/, '')]) {
    forms.add(b64);
    forms.add(urlSafe(b64));
  }
  if (full.length > BASE64_LINE) forms.add(full.replace(new RegExp(`(.{${BASE64_LINE}})(?=.)`, 'g'), '$1\n'));
  // Inside a longer text the value starts at byte k of a 3-byte group: the characters that
  // encode only its own bits are the same whatever surrounds it.
  for (const k of [0, 1, 2]) {
    const encoded = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64');
    const stable = encoded.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + bytes.length)) / 6));
    forms.add(stable);
    forms.add(urlSafe(stable));
  }

  try {
    const uri = encodeURIComponent(value);
    forms.add(uri);
    forms.add(uri.replace(/%20/g, '+'));
    forms.add(new URLSearchParams([['', value]]).toString().slice(1));
  } catch {
    // A lone surrogate has no URL encoding: nothing prints one.
  }

  const json = JSON.stringify(value).slice(1, -1);
  const asciiJson = json.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  forms.add(json);
  forms.add(asciiJson);
  forms.add(asciiJson.replace(/\//g, '\\/'));

  return [...forms].filter((form) => Buffer.byteLength(form) >= MIN_MASKED_LENGTH);
}

/**
 * A masker that replaces every occurrence of the given values, and of the encodings `maskedForms`
 * lists, with `********`, in the bytes a step prints. Occurrences that overlap (two values that
 * share a part, or one that is a prefix of another) become one mask; one that arrives split
 * across writes is caught, because a stream holds back the bytes that could still turn out to
 * begin a value (a few bytes, more only while a possible match is being read), and it never
 * cuts a UTF-8 character in two between what it returns now and later. Values shorter than 4
 * characters, and `true`/`false`, are not masked, as in CircleCI.
 *
 * The search costs about the same whatever the number of values: one look-up of 4 bytes every
 * (shortest form − 3) bytes, at most every 16 (so a stream holds back only a few bytes), in a
 * table of the 4-byte sequences the forms hold; only where one is found does an Aho–Corasick automaton of all the forms run, over the bytes a form holding it
 * could cover. Short values (4 to 8 characters) make the look-ups denser and the search slower.
 */
export function createSecretMasker(values: readonly string[]): OutputMasker {
  const patterns = new Map<string, Buffer>();
  for (const value of new Set(values)) {
    for (const form of maskedForms(value)) {
      const bytes = Buffer.from(form);
      patterns.set(bytes.toString('latin1'), bytes);
    }
  }
  if (patterns.size === 0) return noMasking;
  const forms = [...patterns.values()];
  const longest = Math.max(...forms.map((form) => form.length));
  // Built when output first needs them, not when the task starts: for a task with OIDC tokens
  // (two values of 1.6 kB, 28 kB of forms) they took 10–20 ms of a task's start on a server
  // whose code had not yet been optimised, on the way to the first command.
  let built: { automaton: Automaton; filter: Filter } | undefined;
  const newStream = () => {
    built ??= { filter: buildFilter(forms), automaton: buildAutomaton(forms) };
    return maskStream(built.automaton, built.filter, longest);
  };
  return {
    stream: () => {
      let real: MaskStream | undefined;
      const open = () => (real ??= newStream());
      return {
        push: (chunk) => open().push(chunk),
        pushEach: (chunk, take) => open().pushEach(chunk, take),
        // Nothing pushed, nothing held.
        end: () => (real ? real.end() : EMPTY),
        flush: () => (real?.flush ? real.flush() : EMPTY),
      };
    },
    // A text that holds no form at all is returned as it is, without the automaton (a step's name
    // is masked before its command starts).
    text: (text) => {
      const bytes = Buffer.from(text);
      if (!forms.some((form) => bytes.includes(form))) return text;
      return maskWithStream(newStream(), bytes);
    },
  };
}

/**
 * @deprecated the secret masker does this and more: use `createSecretMasker`.
 */
export const createValueMasker = createSecretMasker;

/** Masks a whole text at once: a step's name, an error message. */
export function maskText(masker: OutputMasker, text: string): string {
  if (masker === noMasking) return text;
  if (masker.text) return masker.text(text);
  return maskWithStream(masker.stream(), Buffer.from(text));
}

function maskWithStream(stream: MaskStream, bytes: Buffer): string {
  const head = stream.push(bytes);
  const tail = stream.end();
  return Buffer.concat([head, tail]).toString();
}

/**
 * An Aho–Corasick automaton over bytes. States are numbered breadth first, so a state's children
 * are the consecutive states `childStart[s]` up to `childStart[s + 1]`. The shallow states (see
 * DENSE_ROWS, where the search spends nearly all its time) have a full row of 256
 * transitions; deeper ones follow their children, then their failure links.
 */
interface Automaton {
  readonly denseRows: number;
  /**
   * `dense[s * 256 + byte]`, for `s < denseRows`: the next state t as `t * 256` (its own row's
   * offset) when t has a row and ends no match, else as `~t`: the scan stops only for those.
   */
  readonly dense: Int32Array;
  readonly childStart: Int32Array;
  /** The byte that leads to each state from its parent. */
  readonly label: Uint8Array;
  readonly fail: Int32Array;
  /** How many bytes each state stands for: the bytes that may still begin a match. */
  readonly depth: Int32Array;
  /** The longest pattern ending at each state (0: none); shorter ones ending there are inside it. */
  readonly matchLength: Int32Array;
}

/**
 * Transition rows kept in full: the states at most DENSE_DEPTH bytes into a form, up to 1024 rows
 * of 256 × 4 bytes (1 MiB, the first bytes of a hundred values in all their forms). Only the
 * shallow states need them (the search spends nearly all its time there): a task with one project
 * secret and its OIDC tokens fills 36 rows, not 1,024 that no search would use.
 */
const DENSE_ROWS = 1024;
const DENSE_DEPTH = 3;

function buildAutomaton(patterns: Buffer[]): Automaton {
  patterns.sort(Buffer.compare);
  let total = 1;
  let longest = 0;
  for (const p of patterns) {
    total += p.length;
    longest = Math.max(longest, p.length);
  }
  // The trie, built from the sorted patterns so a node's children are made in order of their byte.
  const parent = new Int32Array(total);
  const byte = new Uint8Array(total);
  const terminal = new Uint8Array(total);
  const path = new Int32Array(longest + 1);
  let nodes = 1;
  let previous: Buffer | undefined;
  for (const p of patterns) {
    let shared = 0;
    if (previous) while (shared < previous.length && shared < p.length && previous[shared] === p[shared]) shared++;
    for (let d = shared; d < p.length; d++) {
      parent[nodes] = path[d];
      byte[nodes] = p[d];
      path[d + 1] = nodes++;
    }
    terminal[path[p.length]] = 1;
    previous = p;
  }
  // Children of each node, in the order they were made.
  const firstChild = new Int32Array(nodes + 1);
  for (let n = 1; n < nodes; n++) firstChild[parent[n] + 1]++;
  for (let n = 0; n < nodes; n++) firstChild[n + 1] += firstChild[n];
  const children = new Int32Array(Math.max(0, nodes - 1));
  const filled = firstChild.slice(0, nodes);
  for (let n = 1; n < nodes; n++) children[filled[parent[n]]++] = n;
  // Breadth-first renumbering: then each state's children are consecutive.
  const order = new Int32Array(nodes);
  let tail = 1;
  for (let head = 0; head < tail; head++) {
    const n = order[head];
    for (let c = firstChild[n]; c < firstChild[n + 1]; c++) order[tail++] = children[c];
  }
  const label = new Uint8Array(nodes);
  const depth = new Int32Array(nodes);
  const childStart = new Int32Array(nodes + 1);
  const isTerminal = new Uint8Array(nodes);
  childStart[0] = 1;
  for (let s = 0; s < nodes; s++) {
    const n = order[s];
    label[s] = byte[n];
    isTerminal[s] = terminal[n];
    childStart[s + 1] = childStart[s] + firstChild[n + 1] - firstChild[n];
  }
  for (let s = 0; s < nodes; s++) for (let c = childStart[s]; c < childStart[s + 1]; c++) depth[c] = depth[s] + 1;

  let shallow = 0;
  while (shallow < nodes && depth[shallow] <= DENSE_DEPTH) shallow++;
  const denseRows = Math.min(shallow, DENSE_ROWS);
  const dense = new Int32Array(denseRows * 256);
  const fail = new Int32Array(nodes);
  const matchLength = new Int32Array(nodes);
  const automaton: Automaton = { denseRows, dense, childStart, label, fail, depth, matchLength };
  // Built with plain state numbers in `dense`, encoded once every state's matches are known.
  const step = (state: number, b: number): number => {
    for (let s = state; ; s = fail[s]) {
      if (s < denseRows) return dense[s * 256 + b];
      for (let c = childStart[s]; c < childStart[s + 1]; c++) if (label[c] === b) return c;
    }
  };
  for (let s = 0; s < nodes; s++) {
    // fail[s] is shallower, so it was done before s.
    matchLength[s] = isTerminal[s] ? depth[s] : matchLength[fail[s]];
    for (let c = childStart[s]; c < childStart[s + 1]; c++) fail[c] = s === 0 ? 0 : step(fail[s], label[c]);
    if (s < denseRows) {
      if (s > 0) dense.copyWithin(s * 256, fail[s] * 256, fail[s] * 256 + 256);
      for (let c = childStart[s]; c < childStart[s + 1]; c++) dense[s * 256 + label[c]] = c;
    }
  }
  for (let i = 0; i < dense.length; i++) {
    const t = dense[i];
    dense[i] = t < denseRows && matchLength[t] === 0 ? t * 256 : ~t;
  }
  return automaton;
}

/** The state after `state` reads `b` (once `dense` is encoded). */
function next(a: Automaton, state: number, b: number): number {
  for (let s = state; ; s = a.fail[s]) {
    if (s < a.denseRows) {
      const t = a.dense[s * 256 + b];
      return t >= 0 ? t / 256 : ~t;
    }
    for (let c = a.childStart[s], end = a.childStart[s + 1]; c < end; c++) if (a.label[c] === b) return c;
  }
}

/**
 * Runs the automaton over `data[from..to)` from `state`; pushes (end offset, length) of each
 * match onto `hits`; returns the state it ends in. While the text stays in states with a row and
 * ends no match, one table read per byte.
 */
function scan(a: Automaton, data: Uint8Array, from: number, to: number, state: number, hits: number[]): number {
  const { dense, denseRows, matchLength } = a;
  const n = to;
  let s = state;
  let i = from;
  while (i < n) {
    if (s < denseRows) {
      let v = s * 256;
      while (i < n && (v = dense[v + data[i]]) >= 0) i++;
      if (i === n) return v / 256;
      s = ~v;
    } else s = next(a, s, data[i]);
    i++;
    const m = matchLength[s];
    if (m !== 0) hits.push(i, m);
  }
  return s;
}

const MASK_BYTES = Buffer.from(MASK);
/** Copies `from[start..end)` into `into` at `offset`; returns the offset after it. Short runs byte by byte: a call to `copy` costs more. */
function copyBytes(from: Buffer, start: number, end: number, into: Buffer, offset: number): number {
  if (end - start > 64) return offset + from.copy(into, offset, start, end);
  for (let i = start; i < end; i++) into[offset++] = from[i];
  return offset;
}

/** Past this many masks in what a stream returns at once, it is copied into one buffer rather than handed over in pieces. */
const MANY_RANGES = 16;

/**
 * Where the automaton must look: every form holds, at each of its offsets, a 4-byte sequence (a
 * "gram"); a match of length L contains one that starts at a multiple of `step` = (shortest form
 * − 3, at most MAX_STEP), so only grams there are looked up. For each gram the forms hold, how far a form holding
 * it reaches before (`back`) and after (`forward`) it.
 */
interface Filter {
  readonly step: number;
  /** One bit per hash of a gram (a quick "no" for most of them), then the exact table. */
  readonly bits: Int32Array;
  readonly bitShift: number;
  readonly slots: Int32Array;
  readonly slotShift: number;
  /** Per slot: 1 when it holds a gram. */
  readonly occupied: Uint8Array;
  readonly back: Int32Array;
  readonly forward: Int32Array;
}

const GRAM = 4;
/**
 * The longest stride between looked-up grams, whatever the forms' length: what a stream holds
 * back while nothing looks like a secret is about one stride, so output keeps arriving live (a
 * 2 KB private key would otherwise hold back 2 KB, and a slow step's lines until its end). 16
 * rather than 8 halves the look-ups, which are nearly all the cost of masking real secrets (20
 * characters and more): 100 MB of log lines with 100 such secrets went from about 165 to 85 ms.
 */
const MAX_STEP = 16;

/** A gram as one 32-bit number (the bytes little-endian). */
const gramAt = (data: Uint8Array, i: number): number => data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
const hash = (gram: number, shift: number): number => Math.imul(gram, 0x9e3779b1) >>> shift;

function buildFilter(forms: readonly Buffer[]): Filter {
  let shortest = Infinity;
  let grams = 0;
  for (const f of forms) {
    shortest = Math.min(shortest, f.length);
    grams += f.length - GRAM + 1;
  }
  // Open addressing at most half full; a bit table 32 times the grams (about 1 in 32 false "maybe").
  const slotBits = Math.max(4, Math.ceil(Math.log2(grams * 2)));
  const bitBits = Math.min(26, Math.max(10, Math.ceil(Math.log2(grams * 32))));
  const slots = new Int32Array(1 << slotBits);
  const occupied = new Uint8Array(1 << slotBits);
  const back = new Int32Array(1 << slotBits);
  const forward = new Int32Array(1 << slotBits);
  const bits = new Int32Array(1 << (bitBits - 5));
  const slotShift = 32 - slotBits;
  const bitShift = 32 - bitBits;
  for (const f of forms) {
    for (let o = 0; o + GRAM <= f.length; o++) {
      const gram = gramAt(f, o);
      const h = hash(gram, bitShift);
      bits[h >>> 5] |= 1 << (h & 31);
      let slot = hash(gram, slotShift);
      while (occupied[slot] && slots[slot] !== gram) slot = (slot + 1) & (slots.length - 1);
      slots[slot] = gram;
      occupied[slot] = 1;
      back[slot] = Math.max(back[slot], o);
      forward[slot] = Math.max(forward[slot], f.length - o - GRAM);
    }
  }
  return { step: Math.min(shortest - GRAM + 1, MAX_STEP), bits, bitShift, slots, slotShift, occupied, back, forward };
}

/**
 * The first offset from `i` on, in steps of `step`, whose gram may be one a form holds (its bit
 * is set), or one past `last`. The hot loop of masking: a few operations every `step` bytes.
 */
function nextCandidate(f: Filter, data: Uint8Array, i: number, last: number): number {
  const { bits, bitShift, step } = f;
  for (; i <= last; i += step) {
    const h = Math.imul(data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24), 0x9e3779b1) >>> bitShift;
    if ((bits[h >>> 5] & (1 << (h & 31))) !== 0) return i;
  }
  return i;
}

/** The slot of `gram` in the filter, or -1 when no form holds it. */
function slotOf(f: Filter, gram: number): number {
  const mask = f.slots.length - 1;
  for (let slot = hash(gram, f.slotShift); f.occupied[slot]; slot = (slot + 1) & mask) if (f.slots[slot] === gram) return slot;
  return -1;
}

/**
 * One step's masking. Positions are counted from the start of the step. `held` holds the bytes
 * read and not returned, from position `emitted`; a pushed chunk follows them (at `base`), and
 * is never copied after them: both are read where they are. The automaton has run (from its
 * root, at some earlier position) to `acPos`, ending in `acState`, and must go on to `acUntil`;
 * `found` holds the ranges it found (start, end pairs, in order and apart) not all returned yet.
 * Grams are looked up from `nextSample` on.
 */
function maskStream(a: Automaton, f: Filter, longest: number): MaskStream {
  const { step } = f;
  let emitted = 0;
  let held: Buffer = Buffer.alloc(0);
  let chunk: Uint8Array = EMPTY;
  let base = 0;
  let nextSample = 0;
  let acPos = 0;
  let acState = 0;
  let acUntil = 0;
  let found: number[] = [];
  const hits: number[] = [];

  const byteAt = (p: number) => (p < base ? held[p - emitted] : chunk[p - base]);

  /** Runs the automaton over bytes [acPos, to), in `held` and then in `chunk`. */
  const runTo = (to: number) => {
    while (acPos < to) {
      const inHeld = acPos < base;
      const from = acPos;
      const stop = inHeld ? Math.min(to, base) : to;
      const offset = inHeld ? emitted : base;
      const mark = hits.length;
      acState = scan(a, inHeld ? held : chunk, from - offset, stop - offset, acState, hits);
      for (let i = mark; i < hits.length; i += 2) {
        // Matches come in order of their end: one that overlaps or touches those before it
        // swallows them (a value printed over and over is one range).
        let start = offset + hits[i] - hits[i + 1];
        while (found.length && found[found.length - 1] >= start) {
          start = Math.min(start, found[found.length - 2]);
          found.length -= 2;
        }
        found.push(start, offset + hits[i]);
      }
      if (hits.length > 4096) hits.length = 0;
      acPos = stop;
    }
  };

  /**
   * A gram at position `p` that some form may hold: the automaton runs over where a match holding
   * it could be. A match whose first looked-up gram is this one starts after p − step (one that
   * starts earlier holds an earlier one, and was dealt with then), so runs start in order, and
   * the automaton reads each byte once at most, whatever the output.
   */
  const candidate = (p: number, gram: number) => {
    const slot = slotOf(f, gram);
    if (slot < 0) return;
    const from = Math.max(p - Math.min(f.back[slot], step - 1), emitted);
    // From its root where the automaton has not run up to here.
    if (from > acPos) {
      acPos = from;
      acState = 0;
    }
    acUntil = Math.max(acUntil, p + GRAM + f.forward[slot]);
    runTo(Math.min(acUntil, base + chunk.length));
  };

  /** Looks up the whole grams up to the end of `chunk`. */
  const search = () => {
    const end = base + chunk.length;
    if (acPos < acUntil) runTo(Math.min(acUntil, end));
    let p = nextSample;
    // Grams that begin in `held`, read byte by byte: a few at most.
    for (; p < base && p + GRAM <= end; p += step) candidate(p, byteAt(p) | (byteAt(p + 1) << 8) | (byteAt(p + 2) << 16) | (byteAt(p + 3) << 24));
    const last = chunk.length - GRAM;
    let i = p - base;
    for (; (i = nextCandidate(f, chunk, i, last)) <= last; i += step) candidate(base + i, gramAt(chunk, i));
    nextSample = base + Math.max(i, p - base);
  };

  /** The bytes [from, to) as views of `held` and `chunk`, to `take`. */
  const give = <T>(from: number, to: number, take: (piece: Uint8Array) => T, last: T | undefined): T | undefined => {
    if (from < base && from < to) last = take(held.subarray(from - emitted, Math.min(to, base) - emitted));
    if (to > base && Math.max(from, base) < to) last = take(chunk.subarray(Math.max(from, base) - base, to - base));
    return last;
  };

  /** Bytes [emitted, cut) with found ranges `first` to `n` masked, copied into one buffer. */
  const assemble = (first: number, n: number, cut: number): Buffer => {
    let size = cut - emitted;
    for (let i = first; i < n; i += 2) size += MASK_BYTES.length - (found[i + 1] - Math.max(found[i], emitted));
    const into = Buffer.allocUnsafe(size);
    const source = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let offset = 0;
    const copy = (from: number, to: number) => {
      if (from < base && from < to) offset = copyBytes(held, from - emitted, Math.min(to, base) - emitted, into, offset);
      if (to > base && Math.max(from, base) < to) offset = copyBytes(source, Math.max(from, base) - base, to - base, into, offset);
    };
    let from = emitted;
    for (let i = first; i < n; i += 2) {
      copy(from, Math.max(found[i], emitted));
      offset = copyBytes(MASK_BYTES, 0, MASK_BYTES.length, into, offset);
      from = found[i + 1];
    }
    copy(from, cut);
    return into;
  };

  /**
   * Hands bytes [emitted, cut) to `take` with the found ranges masked, and holds the rest. Unless
   * `final`, a UTF-8 character the cut would split is held whole.
   */
  const release = <T>(cut: number, final: boolean, take: (piece: Uint8Array) => T): T | undefined => {
    const end = base + chunk.length;
    for (let p = cut - 1; !final && p >= Math.max(emitted, cut - 3); p--) {
      const b = byteAt(p);
      if ((b & 0xc0) === 0x80) continue;
      if (b >= 0xc0 && p + (b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2) > cut) cut = p;
      break;
    }
    // Ranges found again from before what was returned were masked then.
    let first = 0;
    while (first < found.length && found[first + 1] <= emitted) first += 2;
    // A range that began before the cut is masked now, in full.
    let n = first;
    while (n < found.length && found[n] < cut) n += 2;
    if (n > first) cut = Math.max(cut, found[n - 1]);
    let last: T | undefined;
    if (n - first > 2 * MANY_RANGES) last = take(assemble(first, n, cut));
    else {
      let from = emitted;
      for (let i = first; i < n; i += 2) {
        last = give(from, Math.max(found[i], emitted), take, last);
        last = take(MASK_BYTES);
        from = found[i + 1];
      }
      last = give(from, cut, take, last);
    }
    found = n === 0 ? found : found.slice(n);
    // Copied: the caller may reuse `chunk`.
    const kept = Buffer.allocUnsafe(end - cut);
    if (cut < base) held.copy(kept, 0, cut - emitted);
    if (end > Math.max(cut, base)) kept.set(chunk.subarray(Math.max(cut, base) - base), Math.max(0, base - cut));
    held = kept;
    emitted = cut;
    base = cut + kept.length;
    chunk = EMPTY;
    return last;
  };

  const pushEach = <T>(data: Uint8Array, take: (piece: Uint8Array) => T): T | undefined => {
    base = emitted + held.length;
    chunk = data;
    search();
    // Held back: what a match first seen at a later gram could start in (a match holds a gram
    // every `step` bytes: one that began earlier had a gram looked up already, and was found
    // or is being found), and what the automaton, where it is still running, could still find.
    let cut = Math.min(base + data.length, nextSample - step + 1);
    if (acPos < acUntil) cut = Math.min(cut, acPos - a.depth[acState]);
    return release(Math.max(cut, emitted), false, take);
  };

  const joined = (fill: (take: (piece: Uint8Array) => void) => void): Uint8Array => {
    const pieces: Uint8Array[] = [];
    fill((piece) => void pieces.push(piece));
    if (pieces.length === 0) return EMPTY;
    // One piece that is a view of the caller's chunk may be returned as it is: it is used before
    // the caller reuses the chunk, as `push` promises.
    return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
  };

  return {
    pushEach,
    push: (data) => joined((take) => pushEach(data, take)),
    flush() {
      base = emitted + held.length;
      chunk = EMPTY;
      const end = base;
      if (end === emitted) return EMPTY;
      // Every held byte read now, from the first (a value that began before a looked-up gram is
      // not missed): a whole value among them is found, and the automaton's state says how many of
      // the last bytes may begin one; it goes on reading while such a value could.
      acPos = emitted;
      acState = 0;
      runTo(end);
      const depth = a.depth[acState];
      if (depth > 0) acUntil = Math.max(acUntil, end + longest - depth);
      nextSample = Math.max(nextSample, end);
      return joined((take) => release(end - depth, false, take));
    },
    end() {
      base = emitted + held.length;
      chunk = EMPTY;
      const out = joined((take) => release(base, true, take));
      acPos = acUntil = acState = 0;
      nextSample = emitted;
      return out;
    },
  };
}
