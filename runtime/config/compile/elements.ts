import type { Compilation } from './compilation';
import { has, type Element, type ElementKind, type Scope } from './model';

/** Finds the command, job or executor `ref` (`name` or `orb-alias/name`) from `scope`; reports when it is missing. */
export function lookup(c: Compilation, scope: Scope, kind: ElementKind, ref: string, path: string, container: unknown, key?: string | number): Element | undefined {
  const singular = kind === 'commands' ? 'command' : kind === 'jobs' ? 'job' : 'executor';
  const slash = ref.indexOf('/');
  if (slash > 0) {
    const alias = ref.slice(0, slash);
    const name = ref.slice(slash + 1);
    const orb = scope.orbs.get(alias);
    if (!orb) {
      // A missing orb is reported once, where it is imported, with the command that fetches it.
      if (scope.missingOrbAliases.has(alias)) return undefined;
      const known = [...scope.orbs.keys()];
      c.report(`${singular} '${ref}': no orb '${alias}' is imported${scope.inOrb ? ` in ${scope.label}` : ''} (${known.length ? `imported: ${known.join(', ')}` : 'no orbs are imported'})`, path, container, key);
      return undefined;
    }
    if (!has(orb[kind], name)) {
      const known = Object.keys(orb[kind]);
      c.report(`${singular} '${ref}': ${orb.label} has no ${singular} '${name}'${known.length ? ` (it has: ${known.join(', ')})` : ''}`, path, container, key);
      return undefined;
    }
    return { def: orb[kind][name], scope: orb, path: `${orb.prefix}${kind}.${name}`, label: `${singular} ${ref}` };
  }
  if (!has(scope[kind], ref)) {
    const known = Object.keys(scope[kind]);
    c.report(`${singular} '${ref}' is not defined${scope.inOrb ? ` in ${scope.label}` : ''}${known.length && known.length < 40 ? ` (defined: ${known.join(', ')})` : ''}`, path, container, key);
    return undefined;
  }
  return { def: scope[kind][ref], scope, path: `${scope.prefix}${kind}.${ref}`, label: `${singular} ${scope.inOrb ? scope.label.replace(/^orb /, '') + ' ' : ''}${ref}`.replace(/ +/g, ' ') };
}

/** Like lookup, for an element that may legitimately be absent (no problem is reported). */
export function tryLookup(scope: Scope, kind: ElementKind, ref: string): Element | undefined {
  const slash = ref.indexOf('/');
  const target = slash > 0 ? scope.orbs.get(ref.slice(0, slash)) : scope;
  const name = slash > 0 ? ref.slice(slash + 1) : ref;
  if (!target || !has(target[kind], name)) return undefined;
  return { def: target[kind][name], scope: target, path: `${target.prefix}${kind}.${name}`, label: `${kind.slice(0, -1)} ${ref}` };
}
