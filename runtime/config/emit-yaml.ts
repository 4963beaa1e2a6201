/**
 * A small YAML emitter for the processed config (plain JSON data, no anchors). The `yaml`
 * package's stringify is general and several times slower; this one only needs to be correct for
 * maps, lists and scalars: strings are plain when that is unambiguous, block literals when they
 * span lines, and JSON-quoted (a valid YAML double-quoted scalar) otherwise.
 */
const PLAIN_SAFE = /^[A-Za-z_./~$][\w ./~$@%+=,()-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?|\.inf|\.nan|0x[\da-f]+|0o[0-7]+)$/i;

function scalar(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean' || typeof v === 'number') return String(v);
  const s = String(v);
  if (s !== '' && PLAIN_SAFE.test(s) && !RESERVED.test(s) && !s.endsWith(' ') && !s.includes(': ') && !s.includes(' #')) return s;
  return JSON.stringify(s);
}

function key(k: string): string {
  return scalar(k);
}

function block(s: string, indent: string): string | undefined {
  // Block literals cannot carry trailing spaces on lines reliably or leading-space first lines.
  if (!s.includes('\n') || /[ \t]\n/.test(s) || /^[ \t]/.test(s) || s.includes('\r') || /[\u0000-\u0008\u000b-\u001f]/.test(s)) return undefined;
  const trimmed = s.replace(/\n+$/, '');
  const trailing = s.length - trimmed.length;
  const chomp = trailing === 0 ? '-' : trailing === 1 ? '' : '+';
  const body = (trailing > 1 ? s.slice(0, -1) : trimmed)
    .split('\n')
    .map((l) => (l === '' ? '' : indent + l))
    .join('\n');
  return `|${chomp}\n${body}`;
}

const isNonEmptyCollection = (v: unknown): boolean => v !== null && typeof v === 'object' && (Array.isArray(v) ? v.length > 0 : Object.keys(v).length > 0);

/**
 * Emits a collection that starts on a new line at `indent`; the very first line uses `first`
 * instead of the indentation (so a list item's map starts after its `- `).
 */
function emit(v: unknown, indent: string, out: string[], first: string): void {
  let lead = first;
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isNonEmptyCollection(item)) emit(item, indent + '  ', out, `${lead}- `);
      else out.push(`${lead}- ${inline(item, indent + '  ')}`);
      lead = indent;
    }
    return;
  }
  for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
    if (isNonEmptyCollection(item)) {
      out.push(`${lead}${key(k)}:`);
      emit(item, indent + '  ', out, indent + '  ');
    } else out.push(`${lead}${key(k)}: ${inline(item, indent + '  ')}`);
    lead = indent;
  }
}

function inline(v: unknown, indent: string): string {
  if (Array.isArray(v)) return '[]';
  if (v !== null && typeof v === 'object') return '{}';
  if (typeof v === 'string') return block(v, indent) ?? scalar(v);
  return scalar(v);
}

export function emitYaml(value: unknown): string {
  if (value === null || typeof value !== 'object') return `${scalar(value)}\n`;
  const out: string[] = [];
  emit(value, '', out, '');
  return `${out.join('\n')}\n`;
}
