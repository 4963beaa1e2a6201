import { parseArgs } from 'node:util';
import { UsageError } from './main';

/**
 * What the API-backed commands share: their arguments (parsed strictly, a mistake a UsageError),
 * the slugs they name, and how they print lists.
 */

/** Options that take a value (`--file F`): what these commands have. */
type StringOptions = Record<string, { type: 'string'; short?: string }>;

/** Positionals and options; an unknown option or a missing value is a UsageError naming it. */
export function parseCommand(args: string[], options: StringOptions = {}): { positionals: string[]; values: Record<string, string | undefined> } {
  try {
    const { positionals, values } = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { positionals, values: values as Record<string, string | undefined> };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export const seg = encodeURIComponent;

/** `acme` or `gh/acme` → `gh/acme`. */
export function orgSlug(org: string | undefined): string {
  const name = (org ?? '').replace(/^(gh|github)\//, '');
  if (!name || name.includes('/')) throw new UsageError(`'${org ?? ''}' is not an organization (<org> or gh/<org>)`);
  return `gh/${name}`;
}

/** `acme/app` or `gh/acme/app` → `gh/acme/app`, each part encoded for a path. */
export function slugPath(slug: string | undefined): string {
  const parts = (slug ?? '').split('/');
  const full = parts.length === 2 ? ['gh', ...parts] : parts;
  if (full.length !== 3 || full.some((p) => !p)) throw new UsageError(`'${slug ?? ''}' is not a project slug (gh/<org>/<repo>)`);
  return full.map(seg).join('/');
}

/** Rows as aligned columns, the last one left ragged. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd() + '\n').join('');
}

/** An ISO time as `YYYY-MM-DD HH:MM`, or `-`. */
export const day = (iso: string | null | undefined): string => (iso ? iso.slice(0, 16).replace('T', ' ') : '-');
