import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse, parseDocument } from 'yaml';
import { packOrbDirectory } from '../../runtime/config/orb-pack';
import { createMemoryOrbSource } from '../../runtime/config/orb-registry';
import type { OrbSource } from '../../runtime/config/orb-source';
import { loadYaml, Positions } from '../../runtime/config/yaml-loader';

/** Shared data lives beside the repository: <repo>/../shared. */
export const SHARED = path.resolve(__dirname, '../..', '../shared');
export const CORPUS = path.join(SHARED, 'corpus');
/** Whether the shared corpus is beside the repository; tests that read it skip, saying so, when it is not. */
export const CORPUS_PRESENT = existsSync(CORPUS);
export const CONFIGS = path.join(CORPUS, 'configs');
export const FIXTURE_ORBS = path.resolve(__dirname, '../fixtures/orbs');

export function corpusFiles(): string[] {
  return readdirSync(CONFIGS).filter((f) => /\.ya?ml$/.test(f)).sort();
}

/** `5.0` → `5.0.0`, `4` → `4.0.0`: the concrete version a fixture is published at for a reference. */
function concrete(ref: string): string {
  const parts = ref.split('.');
  while (parts.length < 3) parts.push('0');
  return parts.join('.');
}

/** Which packed orb stands in for `name@version`: a corpus source tree or a fixture of ours. */
export function orbSourceFor(name: string, version: string): string | undefined {
  if (name === 'circleci/node' && Number(version.split('.')[0]) >= 7) return packOrbDirectory(path.join(CORPUS, 'orbs/node'));
  if (name === 'circleci/node') return readFileSync(path.join(FIXTURE_ORBS, 'circleci__node-legacy.yml'), 'utf8');
  if (name === 'circleci/slack') return packOrbDirectory(path.join(CORPUS, 'orbs/slack'));
  const fixture = path.join(FIXTURE_ORBS, `${name.replace('/', '__')}.yml`);
  return existsSync(fixture) ? readFileSync(fixture, 'utf8') : undefined;
}

/** An orb source holding every orb version the corpus references. */
export function corpusOrbSource(extraFiles: readonly string[] = []): OrbSource {
  const source = createMemoryOrbSource();
  for (const f of [...corpusFiles().map((name) => path.join(CONFIGS, name)), ...extraFiles]) {
    const doc = loadYaml(readFileSync(f, 'utf8'), new Positions()).value as { orbs?: Record<string, unknown> } | undefined;
    for (const ref of Object.values(doc?.orbs ?? {})) {
      if (typeof ref !== 'string') continue;
      const m = /^([\w-]+\/[\w-]+)@([\d.]+|dev:[\w.-]+)$/.exec(ref.trim());
      if (!m) continue;
      const packed = orbSourceFor(m[1], m[2]);
      if (packed) source.publish(m[1], concrete(m[2]), packed);
    }
  }
  return source;
}

/**
 * The config text as CircleCI would see it. Two corpus files are fragments of a larger build:
 * slack-orb's test-deploy gets the orb under development injected inline by orb-tools (`slack: {}`
 * in the file), and electron's base.yml is packed with its `jobs/lint.yml` by `circleci config pack`.
 */
export function corpusConfig(file: string): string {
  const text = readFileSync(path.join(CONFIGS, file), 'utf8');
  if (file === 'CircleCI-Public__slack-orb__test-deploy.yml') {
    const doc = parseDocument(text, { uniqueKeys: false });
    doc.setIn(['orbs', 'slack'], doc.createNode(parse(packOrbDirectory(path.join(CORPUS, 'orbs/slack')))));
    return doc.toString({ lineWidth: 0 });
  }
  if (file === 'electron__electron__base.yml') {
    const doc = parseDocument(text, { uniqueKeys: false });
    doc.setIn(['jobs', 'lint'], doc.createNode(parse(readFileSync(path.join(CONFIGS, 'electron__electron__lint.yml'), 'utf8'))));
    return doc.toString({ lineWidth: 0 });
  }
  return text;
}
