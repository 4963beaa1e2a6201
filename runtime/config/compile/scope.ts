import type { CachedOrbDocument } from '../compiler';
import { loadYaml, Positions } from '../yaml-loader';
import type { Compilation } from './compilation';
import { checkExecutorBody } from './executors';
import { has, isObj, NAME, shown, type ElementKind, type Obj, type Scope } from './model';

/**
 * The scope pass: the config's (or an orb's) commands, jobs and executors, checked for shape, with
 * the orbs it imports resolved, parsed and built into scopes of their own.
 */
export async function buildScope(c: Compilation, doc: Obj, label: string, prefix: string, inOrb: boolean, depth: number): Promise<Scope> {
  const section = (k: ElementKind): Obj => {
    const v = doc[k];
    if (v === undefined || v === null) return {};
    if (!isObj(v)) {
      c.report(`${k} must be a map`, `${prefix}${k}`, doc, k);
      return {};
    }
    for (const name of Object.keys(v)) {
      if (!NAME.test(name)) c.report(`${k.slice(0, -1)} name '${shown(name)}' must start with a letter and use only letters, digits, _ and - (up to 255)`, `${prefix}${k}.${name}`, v, name);
    }
    return v;
  };
  const scope: Scope = { label, prefix, inOrb, commands: section('commands'), jobs: section('jobs'), executors: section('executors'), orbs: new Map(), missingOrbAliases: new Set() };
  for (const [name, ex] of Object.entries(scope.executors)) {
    if (!isObj(ex)) c.report('an executor is a map (docker, machine or macos, and options)', `${prefix}executors.${name}`, scope.executors, name);
    else checkExecutorBody(c, ex, `${prefix}executors.${name}`);
  }
  for (const [name, job] of Object.entries(scope.jobs)) {
    if (!isObj(job)) c.report('a job is a map with an executor and steps', `${prefix}jobs.${name}`, scope.jobs, name);
    else if (job.type === undefined || job.type === 'build' || job.type === 'release') {
      if (!has(job, 'steps')) c.report(`job '${name}' has no steps`, `${prefix}jobs.${name}`, scope.jobs, name);
      if (!has(job, 'executor')) checkExecutorBody(c, job, `${prefix}jobs.${name}`);
    } else if (!['approval', 'no-op'].includes(String(job.type))) {
      c.report(`job type '${String(job.type)}' is not allowed; allowed: build, approval, no-op, release`, `${prefix}jobs.${name}.type`, job, 'type');
    }
  }
  for (const [name, cmd] of Object.entries(scope.commands)) {
    if (!isObj(cmd) || !has(cmd, 'steps')) c.report(`command '${name}' must be a map with steps`, `${prefix}commands.${name}`, scope.commands, name);
  }
  const orbs = doc.orbs;
  if (orbs !== undefined && orbs !== null) {
    if (!isObj(orbs)) c.report('orbs must be a map of alias: namespace/orb@version', `${prefix}orbs`, doc, 'orbs');
    else {
      for (const [alias, ref] of Object.entries(orbs)) {
        const path = `${prefix}orbs.${alias}`;
        if (isObj(ref)) {
          if (depth >= 8) {
            c.report('inline orbs nest too deeply', path, orbs, alias);
            continue;
          }
          scope.orbs.set(alias, await buildScope(c, ref, `inline orb ${alias}`, `${path}.`, true, depth + 1));
          continue;
        }
        const m = typeof ref === 'string' ? /^\s*([a-z0-9][\w-]*)\/([a-z0-9][\w-]*)@(\d+(?:\.\d+){0,2}|volatile|dev:[\w.-]+)\s*$/i.exec(ref) : null;
        if (!m) {
          c.report(`orb reference ${JSON.stringify(ref)} must be namespace/orb@version, with version x.y.z, x.y, x, volatile or dev:label (or an inline orb map)`, path, orbs, alias);
          continue;
        }
        const resolved = await importOrb(c, `${m[1]}/${m[2]}`, m[3], path, orbs, alias, depth);
        if (resolved) scope.orbs.set(alias, resolved);
        else if (c.missingOrbs.has(`${m[1]}/${m[2]}@${m[3]}`)) scope.missingOrbAliases.add(alias);
      }
    }
  }
  if (depth === 0 && c.missingOrbs.size) reportMissingOrbs(c);
  return scope;
}

/** Most orbs the summary names; a config naming more is not one a person wrote. */
const MAX_LISTED_ORBS = 100;

/** One problem listing every missing orb and the commands that bring them into an air-gapped install. */
function reportMissingOrbs(c: Compilation): void {
  const refs = [...c.missingOrbs].slice(0, MAX_LISTED_ORBS).map(shown);
  const more = c.missingOrbs.size - refs.length;
  const n = c.missingOrbs.size;
  c.report(
    `${n} orb${n === 1 ? ' is' : 's are'} missing from Gyre's orb registry: ${refs.join(', ')}${more ? ` and ${more} more` : ''}. ` +
      `On a machine with internet access run \`gyre orb pull ${refs.join(' ')} --out orbs.bundle\` (it also fetches the orbs they import), ` +
      'then on this install `gyre orb import orbs.bundle`',
  );
}

async function importOrb(c: Compilation, name: string, versionRef: string, path: string, container: unknown, key: string, depth: number): Promise<Scope | undefined> {
  if (depth >= 8) {
    c.report(`orb ${name}@${versionRef}: orbs import orbs more than 8 levels deep (a cycle?)`, path, container, key);
    return undefined;
  }
  if (!c.options.orbs) {
    c.missingOrbs.add(`${name}@${versionRef}`);
    c.report(`orb ${name}@${versionRef} cannot be resolved: no orb registry is configured (pass --orb-dir, or validate against the server)`, path, container, key);
    return undefined;
  }
  let found: { version: string; source: string } | undefined;
  try {
    found = await c.options.orbs.resolve(name, versionRef);
  } catch (error) {
    c.report(`orb ${name}@${versionRef} could not be resolved: ${(error as Error).message}`, path, container, key);
    return undefined;
  }
  if (!found) {
    c.missingOrbs.add(`${name}@${versionRef}`);
    c.report(`orb ${name}@${versionRef} is not in the orb registry`, path, container, key);
    return undefined;
  }
  const id = `${name}@${found.version}`;
  const cached = c.orbScopes.get(id);
  if (cached) return cached;
  let loaded: CachedOrbDocument | undefined = c.options.orbCache?.get(found.source);
  if (!loaded) {
    const positions = new Positions();
    const result = loadYaml(found.source, positions, c.limits);
    for (const p of result.problems) c.report(`orb ${id}: ${p.message}${p.line ? ` (orb source line ${p.line}:${p.column})` : ''}`, path, container, key);
    if (result.problems.length) return undefined;
    loaded = { value: result.value, positions };
    c.options.orbCache?.set(found.source, loaded);
  }
  c.positions.adopt(loaded.positions);
  if (!isObj(loaded.value)) {
    c.report(`orb ${id} is not a map`, path, container, key);
    return undefined;
  }
  const scope = await buildScope(c, loaded.value, `orb ${id}`, `${path}.`, true, depth + 1);
  c.orbScopes.set(id, scope);
  return scope;
}
