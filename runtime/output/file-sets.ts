import { safeRelativeName } from './tar';

/**
 * Glob patterns as `persist_to_workspace.paths` uses them: `*` and `?` within one path segment,
 * `**` across segments, everything else literal. A pattern is relative to its root.
 */
export function globToRegExp(pattern: string): RegExp {
  return globPatternToRegExp(safeRelativeName(pattern));
}

/** The same glob rules without the safety check on the name (for matching, not for file access). */
export function globPatternToRegExp(name: string): RegExp {
  let source = '';
  for (let i = 0; i < name.length; i++) {
    const c = name[i];
    if (c === '*' && name[i + 1] === '*') {
      // `**/` matches zero or more whole segments; a trailing `**` matches the rest.
      if (name[i + 2] === '/') {
        source += '(?:.*/)?';
        i += 2;
      } else {
        source += '.*';
        i += 1;
      }
    } else if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else source += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

export function isGlob(pattern: string): boolean {
  return /[*?]/.test(pattern);
}
