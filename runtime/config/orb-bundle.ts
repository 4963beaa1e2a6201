import { createHash } from 'node:crypto';
import { InputError } from '../domain/errors';

/**
 * An orb bundle: orb versions fetched on a connected machine (`gyre orb pull`) and carried into an
 * air-gapped network, where `gyre orb import <bundle>` adds them to Gyre's orb registry. One JSON
 * document (docs/config.md#orb-bundles):
 *
 * ```json
 * { "kind": "gyre-orb-bundle", "format": 1, "created_at": "…", "registry": "https://circleci.com/graphql-unstable",
 *   "requested": ["circleci/node@5"],
 *   "orbs": [{ "name": "circleci/node", "version": "5.2.0", "refs": ["circleci/node@5"], "imported_by": [],
 *              "sha256": "<hex of the source's UTF-8 bytes>", "source": "<packed orb YAML>" }],
 *   "checksum": "sha256:<hex>" }
 * ```
 *
 * `checksum` is the SHA-256 of one line per orb, in order, `<name>@<version> <sha256>\n`: with each
 * orb's own `sha256` it shows that nothing was changed or lost in transit. It is not a signature.
 */
export const ORB_BUNDLE_KIND = 'gyre-orb-bundle';
export const ORB_BUNDLE_FORMAT = 1;
/** Largest bundle file `gyre orb import` reads. */
export const MAX_BUNDLE_BYTES = 64 * 1024 * 1024;

export interface BundledOrb {
  /** `namespace/orb`. */
  readonly name: string;
  /** The concrete version (`x.y.z`, or `dev:label`). */
  readonly version: string;
  /** The references that resolved to this version (`circleci/node@5`, `circleci/node@5.2.0`). */
  readonly refs: readonly string[];
  /** The bundled orbs (`name@version`) whose `orbs:` import this one; empty for an orb asked for by name. */
  readonly imported_by: readonly string[];
  readonly sha256: string;
  /** Packed orb YAML, as the registry serves it. */
  readonly source: string;
}

export interface OrbBundle {
  readonly kind: typeof ORB_BUNDLE_KIND;
  readonly format: typeof ORB_BUNDLE_FORMAT;
  readonly created_at: string;
  /** Where the orbs came from. */
  readonly registry: string;
  /** The references `gyre orb pull` was given. */
  readonly requested: readonly string[];
  readonly orbs: readonly BundledOrb[];
  readonly checksum: string;
}

const ORB_NAME = /^[a-z0-9][a-z0-9_-]*\/[a-z0-9][a-z0-9_-]*$/i;
const VERSION = /^(\d+\.\d+\.\d+|dev:[\w.-]+)$/;

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export function bundleChecksum(orbs: readonly Pick<BundledOrb, 'name' | 'version' | 'sha256'>[]): string {
  const hash = createHash('sha256');
  for (const o of orbs) hash.update(`${o.name}@${o.version} ${o.sha256}\n`, 'utf8');
  return `sha256:${hash.digest('hex')}`;
}

export function createOrbBundle(input: { registry: string; requested: readonly string[]; orbs: readonly Omit<BundledOrb, 'sha256'>[]; now?: Date }): OrbBundle {
  const orbs = input.orbs.map((o) => ({ name: o.name, version: o.version, refs: [...o.refs], imported_by: [...o.imported_by], sha256: sha256Hex(o.source), source: o.source }));
  return {
    kind: ORB_BUNDLE_KIND,
    format: ORB_BUNDLE_FORMAT,
    created_at: (input.now ?? new Date()).toISOString(),
    registry: input.registry,
    requested: [...input.requested],
    orbs,
    checksum: bundleChecksum(orbs),
  };
}

export function serializeOrbBundle(bundle: OrbBundle): string {
  return `${JSON.stringify(bundle, null, 2)}\n`;
}

/** The document, when `text` is JSON that says it is an orb bundle (of any format); undefined otherwise. */
export function asBundleDocument(text: string): Record<string, unknown> | undefined {
  if (!/^\s*\{/.test(text)) return undefined;
  try {
    const doc: unknown = JSON.parse(text);
    return doc !== null && typeof doc === 'object' && !Array.isArray(doc) && (doc as { kind?: unknown }).kind === ORB_BUNDLE_KIND ? (doc as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads a bundle and checks it whole: its format, every orb's name, version and SHA-256, and the
 * bundle's checksum. Throws InputError naming `file` and what is wrong.
 */
export function parseOrbBundle(text: string, file: string): OrbBundle {
  const doc = asBundleDocument(text);
  if (!doc) throw new InputError(`${file} is not an orb bundle (a JSON document with "kind": "${ORB_BUNDLE_KIND}", as gyre orb pull writes)`);
  if (doc.format !== ORB_BUNDLE_FORMAT) {
    throw new InputError(`${file}: bundle format ${JSON.stringify(doc.format)} is not one this Gyre reads (it reads format ${ORB_BUNDLE_FORMAT}); pull the orbs with this version's gyre orb pull`);
  }
  if (!Array.isArray(doc.orbs) || doc.orbs.length === 0) throw new InputError(`${file}: "orbs" must be a non-empty list`);
  const seen = new Set<string>();
  const orbs: BundledOrb[] = doc.orbs.map((o: unknown, i: number) => {
    const where = `${file}: orbs[${i}]`;
    if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new InputError(`${where} must be a map with name, version, sha256 and source`);
    const { name, version, sha256, source, refs, imported_by } = o as Record<string, unknown>;
    if (typeof name !== 'string' || !ORB_NAME.test(name)) throw new InputError(`${where}: name ${JSON.stringify(name)} must be namespace/orb`);
    if (typeof version !== 'string' || !VERSION.test(version)) throw new InputError(`${where} (${name}): version ${JSON.stringify(version)} must be x.y.z or dev:label`);
    if (typeof source !== 'string' || source === '') throw new InputError(`${where} (${name}@${version}): source must be packed orb YAML`);
    if (typeof sha256 !== 'string' || sha256Hex(source) !== sha256) {
      throw new InputError(`${file}: ${name}@${version} does not match its sha256 (the file was changed or damaged after gyre orb pull wrote it); pull it again`);
    }
    if (seen.has(`${name}@${version}`)) throw new InputError(`${file}: ${name}@${version} appears twice`);
    seen.add(`${name}@${version}`);
    const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
    return { name, version, sha256, source, refs: strings(refs), imported_by: strings(imported_by) };
  });
  if (doc.checksum !== bundleChecksum(orbs)) {
    throw new InputError(`${file}: the bundle checksum does not match its orbs (an orb was added, removed or reordered after gyre orb pull wrote it); pull it again`);
  }
  return {
    kind: ORB_BUNDLE_KIND,
    format: ORB_BUNDLE_FORMAT,
    created_at: String(doc.created_at ?? ''),
    registry: String(doc.registry ?? ''),
    requested: Array.isArray(doc.requested) ? doc.requested.map(String) : [],
    orbs,
    checksum: doc.checksum as string,
  };
}
