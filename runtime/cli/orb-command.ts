import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { runOrbCommand } from '../config/cli';
import { asBundleDocument, MAX_BUNDLE_BYTES, parseOrbBundle, serializeOrbBundle } from '../config/orb-bundle';
import { createOrbRegistryClient, DEFAULT_ORB_REGISTRY_HOST, pullOrbs } from '../config/orb-pull';
import { ApiError, type ApiClient } from './client';
import type { CliIo } from './main';
import { UsageError } from './main';

const USAGE = `usage:
  gyre orb pull <ns>/<orb>@<version>… [--out orbs.bundle] [--host ${DEFAULT_ORB_REGISTRY_HOST}]
                on a machine with internet access: fetch orb versions and the orbs they import into one bundle
  gyre orb import <bundle>                        add every orb of a bundle to Gyre's orb registry
  gyre orb import <file|dir> --name <ns>/<orb>@<x.y.z>
                                                  add one orb (packed YAML or source tree)
  gyre orb list

pull reads CIRCLECI_CLI_HOST and CIRCLECI_CLI_TOKEN (a token is needed only for private orbs), as the circleci CLI does.
`;

/**
 * `gyre orb pull|import|list`: `pull` and the import of a bundle are here; the import of one orb
 * and `list` are the config CLI's (runtime/config/cli.ts).
 */
export async function orbCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === 'pull') return pull(rest, io);
  if (verb === 'import' && !rest.some((a) => a === '--name' || a.startsWith('--name='))) {
    const [target] = rest;
    if (rest.length === 1 && existsSync(target) && statSync(target).isFile() && isBundleFile(target)) return importBundle(target, io, client);
  }
  if (verb === 'import' || verb === 'list') return runOrbCommand(args, io, client);
  if (verb === 'help' || verb === '--help' || verb === '-h') {
    io.stdout(USAGE);
    return 0;
  }
  io.stderr(`${verb ? `unknown command: orb ${verb}\n` : ''}${USAGE}`);
  return 2;
}

function isBundleFile(file: string): boolean {
  if (statSync(file).size > MAX_BUNDLE_BYTES) return false;
  const head = readFileSync(file, 'utf8');
  return asBundleDocument(head) !== undefined;
}

async function pull(args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, strict: true, options: { out: { type: 'string', short: 'o' }, host: { type: 'string' }, token: { type: 'string' } } });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (positionals.length === 0) throw new UsageError('orb pull needs at least one orb reference, e.g. gyre orb pull circleci/node@5.2.0 --out orbs.bundle');
  const out = (values.out as string | undefined) ?? 'orbs.bundle';
  if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out ${out} is a directory; give a file name such as ${join(out, 'orbs.bundle')}`);
  if (!existsSync(dirname(out) || '.')) throw new UsageError(`--out ${out}: directory ${dirname(out)} does not exist`);
  const client = createOrbRegistryClient({
    host: (values.host as string | undefined) || io.env.CIRCLECI_CLI_HOST || DEFAULT_ORB_REGISTRY_HOST,
    token: (values.token as string | undefined) || io.env.CIRCLECI_CLI_TOKEN || undefined,
  });
  let bundle;
  try {
    bundle = await pullOrbs({
      client,
      refs: positionals,
      progress: { resolved: (ref, version, by) => io.stderr(`  ${ref} → ${version}${by ? ` (imported by ${by})` : ''}\n`) },
    });
  } catch (error) {
    io.stderr(`gyre: ${(error as Error).message}\n`);
    return 1;
  }
  // Written whole or not at all: a bundle cut short would fail its checksum later, far from here.
  const partial = `${out}.partial`;
  writeFileSync(partial, serializeOrbBundle(bundle), { mode: 0o644 });
  renameSync(partial, out);
  io.stdout(`Wrote ${bundle.orbs.length} orb${bundle.orbs.length === 1 ? '' : 's'} to ${out} (${bundle.checksum}):\n`);
  for (const o of bundle.orbs) io.stdout(`  ${o.name}@${o.version}\n`);
  io.stdout(`Carry it to the Gyre install and run: gyre orb import ${out}\n`);
  return 0;
}

async function importBundle(file: string, io: CliIo, client: ApiClient): Promise<number> {
  let bundle;
  try {
    bundle = parseOrbBundle(readFileSync(file, 'utf8'), file);
  } catch (error) {
    io.stderr(`gyre: ${(error as Error).message}\n`);
    return 1;
  }
  let imported = 0;
  let present = 0;
  let failed = 0;
  for (const o of bundle.orbs) {
    try {
      await client.request('POST', '/api/v2/orbs', { name: o.name, version: o.version, source: o.source });
      imported++;
      io.stdout(`Imported ${o.name}@${o.version}.\n`);
    } catch (error) {
      // Versions are immutable: one already in the registry is the one a config resolves.
      if (error instanceof ApiError && error.status === 409) {
        present++;
        io.stdout(`${o.name}@${o.version} is already in the registry.\n`);
        continue;
      }
      if (!(error instanceof ApiError) || error.status === 0 || error.status === 401 || error.status === 403) throw error;
      failed++;
      io.stderr(`gyre: ${o.name}@${o.version} was refused: ${error.message}\n`);
    }
  }
  io.stdout(`${file}: ${imported} imported, ${present} already present${failed ? `, ${failed} refused` : ''} (${bundle.orbs.length} in the bundle).\n`);
  return failed ? 1 : 0;
}
