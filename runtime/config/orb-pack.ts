import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, relative, resolve } from 'node:path';
import { parse, stringify } from 'yaml';

/**
 * Packs an orb source tree (`@orb.yml` beside `commands/`, `jobs/`, `executors/`, `examples/`, as
 * `circleci orb pack` reads it) into one orb YAML document. `<<include(path)>>` is replaced by the
 * content of the file it names, relative to the tree (and never outside it).
 *
 * `dir` may be the tree itself or a folder holding it in `src/`.
 */
export function packOrbDirectory(dir: string): string {
  let root = resolve(dir);
  if (!existsSync(join(root, '@orb.yml')) && existsSync(join(root, 'src', '@orb.yml'))) root = join(root, 'src');
  const orbFile = join(root, '@orb.yml');
  if (!existsSync(orbFile)) throw new Error(`${dir} is not an orb source tree: it has no @orb.yml (or src/@orb.yml)`);
  const orb = (parse(readFileSync(orbFile, 'utf8')) ?? {}) as Record<string, unknown>;
  for (const section of ['commands', 'jobs', 'executors', 'examples']) {
    const sub = join(root, section);
    if (!existsSync(sub) || !statSync(sub).isDirectory()) continue;
    const elements: Record<string, unknown> = { ...((orb[section] as Record<string, unknown> | undefined) ?? {}) };
    for (const file of readdirSync(sub).sort()) {
      if (!/\.ya?ml$/.test(file)) continue;
      const name = basename(file, extname(file));
      elements[name] = parse(readFileSync(join(sub, file), 'utf8'));
    }
    orb[section] = elements;
  }
  const include = (v: unknown): unknown => {
    if (typeof v === 'string') {
      return v.replace(/<<\s*include\(([^)]+)\)\s*>>/g, (_all, p: string) => {
        const target = resolve(root, p.trim());
        if (relative(root, target).startsWith('..')) throw new Error(`<<include(${p})>> points outside the orb source tree`);
        if (!existsSync(target)) throw new Error(`<<include(${p})>>: no such file in the orb source tree`);
        return readFileSync(target, 'utf8');
      });
    }
    if (Array.isArray(v)) return v.map(include);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, include(x)]));
    return v;
  };
  return stringify(include(orb), { lineWidth: 0 });
}
