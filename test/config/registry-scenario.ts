/**
 * The orb registry, its API routes and `gyre orb import|list` against a real PGlite store, run as a
 * plain Node process (PGlite loads its WebAssembly with a dynamic import, which jest's VM only allows
 * under --experimental-vm-modules). Prints one JSON object of observations that
 * orb-registry-and-api.test.ts asserts on.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHttpApp } from '../../runtime/api/http-app';
import type { ApiClient } from '../../runtime/cli/client';
import { registerConfigRoutes } from '../../runtime/config/api-routes';
import { runOrbCommand } from '../../runtime/config/cli';
import { compileConfig } from '../../runtime/config/compiler';
import { createOrbRegistry } from '../../runtime/config/orb-registry';
import { openStore } from '../../runtime/store/open-store';
import { createLogger } from '../../runtime/logger';
import { makeOrbSourceTree } from '../support/orb-tree';

const ORB = (tag: string) => `version: 2.1\nexecutors:\n  default: {docker: [{image: "cimg/base:${tag}"}]}\n`;

async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
  try {
    return { ok: true, value: await p };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

async function main(): Promise<void> {
  const store = await openStore({});
  const registry = createOrbRegistry({ store });
  // The routes behind the real HTTP boundary, called in process (fastify's inject): an admin token and a member's.
  const app = await createHttpApp({
    log: createLogger({ level: 'silent' }),
    credentials: {
      user: async (token) => (token === 'admin' || token === 'member' ? { userId: token, login: token, isAdmin: token === 'admin' } : undefined),
      task: () => {
        throw new Error('no agents here');
      },
      runner: async () => undefined,
    },
  });
  registerConfigRoutes(app, { orbs: registry, compile: (source, trigger) => compileConfig(source, { trigger, orbs: registry }), maxConfigBytes: 16 * 1024 * 1024 });
  const call = async (method: string, url: string, body?: unknown, isAdmin = true) => {
    const res = await app.inject({ method: method as 'GET', url, ...(body === undefined ? {} : { payload: body as object }), headers: { 'circle-token': isAdmin ? 'admin' : 'member' } });
    if (res.statusCode >= 400) throw new Error(`${res.statusCode}: ${res.json().message}`);
    return { status: res.statusCode, json: res.json() };
  };
  const client: ApiClient = {
    baseUrl: 'http://test',
    request: async <T>(method: string, p: string, body?: unknown) => (await call(method, p, body)).json as T,
    stream: async () => {
      throw new Error('not used');
    },
  };
  const out: Record<string, unknown> = {};

  for (const v of ['1.0.0', '1.2.0', '1.2.10', '1.10.0', '2.0.1']) await registry.publish('acme/tools', v, ORB(v));
  for (const ref of ['1', '1.2', '1.2.0', 'volatile', '3']) out[`resolve ${ref}`] = (await registry.resolve('acme/tools', ref))?.version ?? null;
  out['resolve unknown orb'] = (await registry.resolve('acme/none', '1')) ?? null;
  out['source of 1.2'] = (await registry.resolve('acme/tools', '1.2'))?.source;
  out['republish'] = await settle(registry.publish('acme/tools', '1.0.0', ORB('again')));
  out['bad name'] = await settle(registry.publish('acme', '1.0.0', ORB('x')));
  out['bad version'] = await settle(registry.publish('acme/x', '1.0', ORB('x')));
  out['bad yaml'] = await settle(registry.publish('acme/x', '1.0.0', 'jobs: [unclosed'));
  out['bad keys'] = await settle(registry.publish('acme/x', '1.0.0', 'steps: []\n'));

  await registry.publish('acme/app', '0.1.0', 'version: 2.1\norbs: {t: acme/tools@1.2}\njobs:\n  build: {executor: t/default, steps: [checkout]}\n');
  const compiled = await compileConfig('version: 2.1\norbs: {app: acme/app@0}\nworkflows: {w: {jobs: [app/build]}}\n', { trigger: { branch: 'main' }, orbs: registry });
  out['orb importing orb'] = compiled.ok ? compiled.plan.workflows[0].jobs[0].spec?.executor : compiled.problems;

  out['api compile good'] = (
    await call('POST', '/api/v2/compile-config-with-defaults', {
      config_yaml: 'version: 2.1\njobs: {a: {docker: [{image: x}], steps: [{run: "echo << pipeline.git.branch >>"}]}}\nworkflows: {w: {jobs: [a]}}\n',
      options: { owner_id: 'o', pipeline_values: { 'pipeline.git.branch': 'feature' }, pipeline_parameters: {} },
    })
  ).json;
  out['api compile bad'] = (await call('POST', '/api/v2/compile-config-with-defaults', { config_yaml: 'version: 2.1\nworkflows: {w: {jobs: [nope]}}\n', options: {} })).json;
  out['api compile no yaml'] = await settle(call('POST', '/api/v2/compile-config-with-defaults', { options: {} }));
  out['api publish non-admin'] = await settle(call('POST', '/api/v2/orbs', { name: 'acme/api', version: '1.0.0', source: ORB('api') }, false));
  out['api publish'] = await call('POST', '/api/v2/orbs', { name: 'acme/api', version: '1.0.0', source: ORB('api') });
  out['api list'] = (await call('GET', '/api/v2/orbs')).json;

  const io = () => {
    const lines: string[] = [];
    return { lines, io: { stdout: (s: string) => lines.push(s), stderr: (s: string) => lines.push(s) } };
  };
  const tree = io();
  out['cli import tree'] = { code: await runOrbCommand(['import', makeOrbSourceTree(), '--name', 'circleci/slack@4.13.3'], tree.io, client), text: tree.lines.join('') };
  const dir = mkdtempSync(path.join(tmpdir(), 'orb-file-'));
  writeFileSync(path.join(dir, 'orb.yml'), ORB('file'));
  out['cli import file'] = await runOrbCommand(['import', path.join(dir, 'orb.yml'), '--name', 'acme/file@0.0.1'], io().io, client);
  out['imported tree source'] = (await registry.resolve('circleci/slack', '4'))?.source;
  const list = io();
  out['cli list'] = { code: await runOrbCommand(['list'], list.io, client), text: list.lines.join('') };
  const bad = io();
  out['cli bad name'] = { code: await runOrbCommand(['import', 'x', '--name', 'slack@4'], bad.io, client), text: bad.lines.join('') };

  await store.close();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String(e?.stack ?? e));
  process.exit(1);
});
