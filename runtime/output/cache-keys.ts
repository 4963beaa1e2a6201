import { InputError } from '../domain/errors';

export interface CacheKeyContext {
  readonly branch?: string;
  readonly revision: string;
  readonly buildNum: number;
  readonly environment: Readonly<Record<string, string>>;
  /** Base64 of the SHA-256 of a file, relative to the working directory. */
  checksum(file: string): Promise<string>;
  readonly now?: () => Date;
  readonly arch?: string;
}

/** `arch1-linux-amd64`, the shape CircleCI's `{{ arch }}` has. */
export function defaultArch(): string {
  const cpu = process.arch === 'x64' ? 'amd64' : process.arch;
  return `arch1-${process.platform}-${cpu}`;
}

/**
 * Renders a cache key template: `{{ .Branch }}`, `{{ .Revision }}`, `{{ .BuildNum }}`,
 * `{{ .Environment.NAME }}`, `{{ checksum "file" }}`, `{{ epoch }}`, `{{ arch }}`. An unknown
 * template is an error naming it, rather than a key that silently never matches.
 */
export async function renderCacheKey(template: string, ctx: CacheKeyContext): Promise<string> {
  const parts: string[] = [];
  let last = 0;
  for (const m of template.matchAll(/\{\{\s*(.*?)\s*\}\}/g)) {
    parts.push(template.slice(last, m.index));
    last = m.index! + m[0].length;
    const expr = m[1];
    let value: string;
    let em: RegExpExecArray | null;
    if (expr === '.Branch') value = ctx.branch ?? '';
    else if (expr === '.Revision') value = ctx.revision;
    else if (expr === '.BuildNum') value = String(ctx.buildNum);
    else if (expr === 'epoch') value = String(Math.floor((ctx.now?.() ?? new Date()).getTime() / 1000));
    else if (expr === 'arch') value = ctx.arch ?? defaultArch();
    else if ((em = /^\.Environment\.(\w+)$/.exec(expr))) value = ctx.environment[em[1]] ?? '<no value>';
    else if ((em = /^checksum\s+"([^"]+)"$/.exec(expr))) value = await ctx.checksum(em[1]);
    else throw new InputError(`unknown cache key template '{{ ${expr} }}' (allowed: .Branch, .Revision, .BuildNum, .Environment.NAME, checksum "file", epoch, arch)`, 'key');
    parts.push(value);
  }
  parts.push(template.slice(last));
  return parts.join('');
}
