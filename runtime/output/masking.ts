/**
 * The masking hook every chunk of output passes through before it leaves the agent. The secrets
 * work feeds it the values to hide; the default hides nothing.
 */
export interface OutputMasker {
  /** Starts one step's output. The stream may hold back a tail to catch a value split across writes. */
  stream(): MaskStream;
}

export interface MaskStream {
  /** Masks a chunk; returns what can be sent now. */
  push(chunk: Uint8Array): Uint8Array;
  /** Returns whatever was held back, masked: call at the end of the step. */
  end(): Uint8Array;
}

const EMPTY = new Uint8Array(0);

export const noMasking: OutputMasker = {
  stream: () => ({ push: (chunk) => chunk, end: () => EMPTY }),
};

/** Values shorter than this are not masked: hiding `1` or `true` would garble every log. */
export const MIN_MASKED_LENGTH = 4;
export const MASK = '********';

/**
 * Replaces every occurrence of the given values with `********`, including one that arrives
 * split across chunks: the last (longest value − 1) bytes are held back until the next chunk.
 */
export function createValueMasker(values: readonly string[]): OutputMasker {
  const needles = [...new Set(values.filter((v) => v.length >= MIN_MASKED_LENGTH))]
    .map((v) => Buffer.from(v))
    .sort((a, b) => b.length - a.length);
  if (needles.length === 0) return noMasking;
  const mask = Buffer.from(MASK);
  const hold = Math.max(...needles.map((n) => n.length)) - 1;
  return {
    stream() {
      let carry: Buffer = Buffer.alloc(0);
      const mask1 = (data: Buffer, final: boolean): Buffer => {
        // Leftmost, longest match first; matches never overlap.
        const hits: [number, number][] = [];
        for (let from = 0; from < data.length; ) {
          let best = -1;
          let bestLen = 0;
          for (const n of needles) {
            const at = data.indexOf(n, from);
            if (at !== -1 && (best === -1 || at < best || (at === best && n.length > bestLen))) {
              best = at;
              bestLen = n.length;
            }
          }
          if (best === -1) break;
          hits.push([best, best + bestLen]);
          from = best + bestLen;
        }
        let cut = final ? data.length : Math.max(0, data.length - hold);
        // A value that starts before the cut is masked now, in full.
        const kept = hits.filter(([start]) => start < cut);
        for (const [, end] of kept) cut = Math.max(cut, end);
        const parts: Buffer[] = [];
        let at = 0;
        for (const [start, end] of kept) {
          parts.push(data.subarray(at, start), mask);
          at = end;
        }
        parts.push(data.subarray(at, cut));
        carry = data.subarray(cut);
        return kept.length === 0 ? data.subarray(0, cut) : Buffer.concat(parts);
      };
      return {
        push(chunk) {
          const data = carry.length ? Buffer.concat([carry, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          return mask1(data, false);
        },
        end() {
          const out = mask1(carry, true);
          carry = Buffer.alloc(0);
          return out;
        },
      };
    },
  };
}
