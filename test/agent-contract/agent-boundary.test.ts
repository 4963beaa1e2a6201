import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import ts from 'typescript';

/**
 * The agent runs on runner hosts and Nomad clients as its own program: runtime/agent/ may speak to
 * the control plane only through the agent contract (runtime/agent-contract/), never import the
 * server's own code. Imports are read with the TypeScript compiler's pre-processor (static and
 * type imports, re-exports, `require`, dynamic `import()`), not from comments or strings.
 */

/** Directories under runtime/ that only the control plane runs. */
const SERVER_ONLY = [
  'dispatcher', 'scheduler', 'api', 'store',
  'conductor', 'triggers', 'identity', 'secrets', 'projects', 'server', 'roles', 'outbox', 'audit', 'insights',
  'notifications', 'retention', 'schedules', 'github', 'forge', 'ui', 'ops', 'cli', 'blob', 'metrics', 'machines',
];
/** Files of shared directories that only the control plane runs (the output role's service and routes). */
const SERVER_ONLY_FILES = ['settings', 'output/output-service', 'output/logs', 'output/api-routes', 'output/cache-trust', 'output/previous-test-results', 'config/compiler', 'config/api-routes'];

const ROOT = join(__dirname, '..', '..');

interface Violation {
  readonly file: string;
  readonly specifier: string;
}

/** Where `specifier`, imported by `file` (both relative to the repository), lands under runtime/, without extension. */
function targetOf(file: string, specifier: string): string | undefined {
  if (!specifier.startsWith('.')) return undefined;
  const resolved = posix.normalize(posix.join(posix.dirname(file), specifier)).replace(/\.(d\.ts|ts|js|cjs|mjs|json)$/, '').replace(/\/index$/, '');
  return resolved.startsWith('runtime/') ? resolved.slice('runtime/'.length) : undefined;
}

function isServerOnly(target: string): boolean {
  return SERVER_ONLY.some((dir) => target === dir || target.startsWith(`${dir}/`)) || SERVER_ONLY_FILES.includes(target);
}

function importsOf(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

/**
 * The imports of server-only code in `files` (path relative to the repository → source), those
 * under runtime/agent/ only. `transitive`: also through the shared files the agent imports (the
 * output role's tar code, the domain, the plan's types), when `files` holds them.
 */
function serverImports(files: ReadonlyMap<string, string>, options: { transitive?: boolean } = {}): Violation[] {
  const violations: Violation[] = [];
  const seen = new Set<string>();
  const queue = [...files.keys()].filter((f) => f.startsWith('runtime/agent/'));
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = files.get(file);
    if (text === undefined) continue;
    for (const specifier of importsOf(text)) {
      const target = targetOf(file, specifier);
      if (target === undefined) continue;
      if (isServerOnly(target)) {
        violations.push({ file, specifier });
        continue;
      }
      if (!options.transitive) continue;
      for (const candidate of [`runtime/${target}.ts`, `runtime/${target}/index.ts`, `runtime/${target}.js`]) if (files.has(candidate)) queue.push(candidate);
    }
  }
  return violations;
}

/** The .ts and .js files under `dir` of the repository at `root`, by their path relative to `root`. */
function sourcesUnder(root: string, dir: string, into = new Map<string, string>()): Map<string, string> {
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const path = posix.join(dir, entry.name);
    if (entry.isDirectory()) sourcesUnder(root, path, into);
    else if (/\.(ts|js|cjs|mjs)$/.test(entry.name)) into.set(path, readFileSync(join(root, path), 'utf8'));
  }
  return into;
}

describe('the agent imports nothing of the control plane', () => {
  it('holds for runtime/agent/ as it is', () => {
    expect(serverImports(sourcesUnder(ROOT, 'runtime/agent'))).toEqual([]);
  });

  it('holds through the shared code it imports too (tar, masking, the plan, the domain)', () => {
    expect(serverImports(sourcesUnder(ROOT, 'runtime'), { transitive: true })).toEqual([]);
  });

  it('finds every kind of import of server code in a bad file, and none in comments or strings', () => {
    const files = new Map([
      [
        'runtime/agent/steps/bad-step.ts',
        [
          "import { createDispatcher } from '../../dispatcher/dispatcher';",
          "import type { Store } from '../../store/store';",
          "export { startRunner } from '../../scheduler/runner';",
          "const routes = require('../../api/agent-routes');",
          "const later = () => import('../../secrets/task-secrets');",
          "import '../../../runtime/conductor/conductor.ts';",
          "import { tarOf } from '../../output/tar';",
          "import { AGENT_ROUTES } from '../../agent-contract';",
          "// import { x } from '../../dispatcher/dispatcher';",
          "const text = \"import { y } from '../../store/store'\";",
        ].join('\n'),
      ],
    ]);
    expect(serverImports(files).map((v) => v.specifier)).toEqual([
      '../../dispatcher/dispatcher',
      '../../store/store',
      '../../scheduler/runner',
      '../../api/agent-routes',
      '../../secrets/task-secrets',
      '../../../runtime/conductor/conductor.ts',
    ]);
  });

  it('finds a server import reached only through a shared file', () => {
    const files = new Map([
      ['runtime/agent/agent.ts', "import { maskText } from '../output/masking';"],
      ['runtime/output/masking.ts', "import type { Lease } from '../dispatcher/sql/leases';"],
    ]);
    expect(serverImports(files)).toEqual([]);
    expect(serverImports(files, { transitive: true })).toEqual([{ file: 'runtime/output/masking.ts', specifier: '../dispatcher/sql/leases' }]);
  });

  it('fails on a copy of runtime/agent/ with one bad file added', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-agent-boundary-'));
    try {
      cpSync(join(ROOT, 'runtime', 'agent'), join(dir, 'runtime', 'agent'), { recursive: true });
      writeFileSync(join(dir, 'runtime', 'agent', 'sneaky.ts'), "import { loadTaskContext } from '../dispatcher/dispatcher';\nexport const load = loadTaskContext;\n");
      const before = serverImports(sourcesUnder(ROOT, 'runtime/agent'));
      const found = serverImports(sourcesUnder(dir, 'runtime/agent'));
      expect(found).toContainEqual({ file: 'runtime/agent/sneaky.ts', specifier: '../dispatcher/dispatcher' });
      expect(found).toHaveLength(before.length + 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
