import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConflictError, InputError } from '../domain/errors';
import type { Store } from '../store/store';
import { loadYaml, Positions } from './yaml-loader';
import type { OrbSource } from './orb-source';
import type { Audit } from '../audit/audit-log';

/**
 * Gyre's orb registry: orbs are imported into the database (`gyre orb import`) and resolved from
 * there at compile time, never from the internet. Version references `x.y.z`, `x.y`, `x` and
 * `volatile` resolve to the newest published version that matches.
 */
export interface OrbRegistry extends OrbSource {
  /** Stores packed orb YAML as `name` ("ns/orb") at `version` ("x.y.z"); `audit` is recorded with it. */
  publish(name: string, version: string, source: string, audit?: Audit): Promise<void>;
  list(): Promise<{ name: string; version: string; createdAt: string }[]>;
}

const ORB_NAME = /^[a-z0-9][a-z0-9_-]*\/[a-z0-9][a-z0-9_-]*$/i;
const SEMVER = /^(\d+)\.(\d+)\.(\d+)$/;
/** Development versions (`dev:alpha`) resolve only by their exact name. */
const DEV_VERSION = /^dev:[\w.-]+$/;

export function parseSemver(version: string): [number, number, number] | undefined {
  const m = SEMVER.exec(version);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** The newest of `versions` matching `ref` (`x.y.z`, `x.y`, `x`, `volatile`), or undefined. */
export function pickVersion(versions: readonly string[], ref: string): string | undefined {
  if (ref.startsWith('dev:')) return versions.includes(ref) ? ref : undefined;
  const parts = ref === 'volatile' ? [] : ref.split('.');
  if (ref !== 'volatile' && (parts.length > 3 || parts.some((p) => !/^\d+$/.test(p)))) return undefined;
  let best: [number, number, number] | undefined;
  let bestVersion: string | undefined;
  for (const v of versions) {
    const sv = parseSemver(v);
    if (!sv) continue;
    if (!parts.every((p, i) => Number(p) === sv[i])) continue;
    if (!best || sv[0] > best[0] || (sv[0] === best[0] && (sv[1] > best[1] || (sv[1] === best[1] && sv[2] > best[2])))) {
      best = sv;
      bestVersion = v;
    }
  }
  return bestVersion;
}

/** Checks a publish request; throws InputError naming what is wrong. */
export function validateOrbPublish(name: string, version: string, source: string): void {
  if (typeof name !== 'string' || !ORB_NAME.test(name)) throw new InputError(`orb name ${JSON.stringify(name)} must be namespace/orb (letters, digits, _ and -)`, 'name');
  if (typeof version !== 'string' || !(parseSemver(version) || DEV_VERSION.test(version))) throw new InputError(`orb version ${JSON.stringify(version)} must be x.y.z (or dev:label)`, 'version');
  if (typeof source !== 'string' || source.trim() === '') throw new InputError('orb source must be non-empty packed orb YAML', 'source');
  const loaded = loadYaml(source, new Positions());
  if (loaded.problems.length) throw new InputError(`orb source is not valid YAML: ${loaded.problems.map((p) => `${p.line ?? ''}${p.line ? ':' + p.column + ' ' : ''}${p.message}`).join('; ')}`, 'source');
  const v = loaded.value;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new InputError('orb source must be a YAML map (version, commands, jobs, executors, …)', 'source');
  const allowed = new Set(['version', 'description', 'display', 'orbs', 'commands', 'jobs', 'executors', 'examples']);
  const unknown = Object.keys(v).filter((k) => !allowed.has(k));
  if (unknown.length) throw new InputError(`orb source has unknown top-level keys: ${unknown.join(', ')} (allowed: ${[...allowed].join(', ')})`, 'source');
}

export function createOrbRegistry(deps: { store: Store }): OrbRegistry {
  const { store } = deps;
  return {
    async publish(name, version, source, audit) {
      validateOrbPublish(name, version, source);
      const [major, minor, patch] = parseSemver(version) ?? [-1, -1, -1];
      await store.transaction(async (tx) => {
        const rows = await tx.query(
          `INSERT INTO orb_versions (name, version, major, minor, patch, source) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (name, version) DO NOTHING RETURNING name`,
          [name, version, major, minor, patch, source],
        );
        if (rows.length === 0) throw new ConflictError(`orb ${name}@${version} is already published; versions are immutable, publish a new version`);
        await audit?.record(tx, { target: { type: 'orb', id: `${name}@${version}` } });
      });
    },
    async resolve(name, versionRef) {
      if (versionRef.startsWith('dev:')) {
        const rows = await store.query<{ version: string; source: string }>('SELECT version, source FROM orb_versions WHERE name = $1 AND version = $2', [name, versionRef]);
        return rows[0];
      }
      const parts = versionRef === 'volatile' ? [] : versionRef.split('.');
      if (versionRef !== 'volatile' && (parts.length > 3 || parts.some((p) => !/^\d+$/.test(p)))) return undefined;
      const conds = ['name = $1'];
      const params: unknown[] = [name];
      ['major', 'minor', 'patch'].slice(0, parts.length).forEach((col, i) => {
        params.push(Number(parts[i]));
        conds.push(`${col} = $${params.length}`);
      });
      conds.push('major >= 0');
      const rows = await store.query<{ version: string; source: string }>(
        `SELECT version, source FROM orb_versions WHERE ${conds.join(' AND ')} ORDER BY major DESC, minor DESC, patch DESC LIMIT 1`,
        params,
      );
      return rows[0] ? { version: rows[0].version, source: rows[0].source } : undefined;
    },
    async list() {
      const rows = await store.query<{ name: string; version: string; created_at: Date | string }>(
        'SELECT name, version, created_at FROM orb_versions ORDER BY name, major, minor, patch',
      );
      return rows.map((r) => ({ name: r.name, version: r.version, createdAt: new Date(r.created_at).toISOString() }));
    },
  };
}

/** An in-memory orb source (tests, and `--orb-dir` for the CLI). */
export function createMemoryOrbSource(): OrbSource & { publish(name: string, version: string, source: string): void } {
  const orbs = new Map<string, Map<string, string>>();
  return {
    publish(name, version, source) {
      if (!orbs.has(name)) orbs.set(name, new Map());
      orbs.get(name)!.set(version, source);
    },
    async resolve(name, versionRef) {
      const versions = orbs.get(name);
      if (!versions) return undefined;
      const v = pickVersion([...versions.keys()], versionRef);
      return v ? { version: v, source: versions.get(v)! } : undefined;
    },
  };
}

/**
 * Orbs from a directory: `<dir>/<ns>/<orb>@<x.y.z>.yml` (packed) or `<dir>/<ns>/<orb>@<x.y.z>/`
 * (a source tree with `@orb.yml`, packed on read).
 */
export function createDirectoryOrbSource(dir: string, pack: (treeDir: string) => string): OrbSource {
  return {
    async resolve(name, versionRef) {
      const [ns, orb] = name.split('/');
      const nsDir = join(dir, ns);
      if (!existsSync(nsDir)) return undefined;
      const entries = new Map<string, string>();
      for (const entry of readdirSync(nsDir)) {
        const m = /^(.+)@(\d+\.\d+\.\d+|dev:[\w.-]+?)(\.ya?ml)?$/.exec(entry);
        if (m && m[1] === orb) entries.set(m[2], join(nsDir, entry));
      }
      const v = pickVersion([...entries.keys()], versionRef);
      if (!v) return undefined;
      const path = entries.get(v)!;
      return { version: v, source: statSync(path).isDirectory() ? pack(path) : readFileSync(path, 'utf8') };
    },
  };
}
