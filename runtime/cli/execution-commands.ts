import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { ApiClient } from './client';
import type { CliIo } from './main';
import { UsageError } from './main';

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/**
 * `gyre resource-class add <name> --cpu N --memory MiB [--driver runner|nomad|builtin]`,
 * `gyre resource-class list`, `gyre resource-class token <name> [--label L]` (prints a runner token once).
 */
export async function resourceClassCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const { positionals, values } = parse(args, { cpu: { type: 'string' }, memory: { type: 'string' }, driver: { type: 'string' }, label: { type: 'string' } });
  const [sub, name] = positionals;
  switch (sub) {
    case 'add': {
      if (!name) throw new UsageError('resource-class add needs a name');
      if (values.cpu === undefined || values.memory === undefined) throw new UsageError('resource-class add needs --cpu and --memory (MiB)');
      const rc = await client.request<any>('POST', '/api/v2/resource-classes', {
        name,
        cpu: Number(values.cpu),
        memory_mb: Number(values.memory),
        driver: values.driver ?? 'runner',
      });
      io.stdout(`resource class ${rc.name}: ${rc.cpu} cpu, ${rc.memory_mb} MiB, driver ${rc.driver}\n`);
      return 0;
    }
    case 'list': {
      const { items } = await client.request<{ items: any[] }>('GET', '/api/v2/resource-classes');
      for (const rc of items) io.stdout(`${rc.name}\t${rc.cpu}\t${rc.memory_mb}\t${rc.driver}\n`);
      return 0;
    }
    case 'token': {
      if (!name) throw new UsageError('resource-class token needs a name');
      const { token } = await client.request<{ token: string }>('POST', `/api/v2/resource-classes/${encodeURIComponent(name)}/tokens`, { label: values.label ?? '' });
      io.stdout(`${token}\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown resource-class command '${sub}' (allowed: add, list, token)` : 'resource-class needs a subcommand: add, list, token');
  }
}

/** `gyre limit project <gh/org/repo> <N|none>` or `gyre limit org <org> <N|none>`. */
export async function limitCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const { positionals } = parse(args, {});
  const [scope, key, value] = positionals;
  if ((scope !== 'project' && scope !== 'org') || !key || !value) throw new UsageError('limit needs: project|org <key> <N|none>');
  const max = value === 'none' ? null : Number(value);
  if (max !== null && (!Number.isInteger(max) || max < 1)) throw new UsageError(`limit '${value}' must be a whole number of at least 1, or none`);
  await client.request('PUT', `/api/v2/concurrency-limits/${scope}/${key.split('/').map(encodeURIComponent).join('/')}`, { max_running: max });
  io.stdout(max === null ? `no limit for ${scope} ${key}\n` : `${scope} ${key}: at most ${max} running\n`);
  return 0;
}
