import type { ApiClient } from './client';
import { day, orgSlug, parseCommand as parse, seg, slugPath, table } from './command-args';
import type { CliIo } from './main';
import { UsageError } from './main';

/**
 * `gyre context` and `gyre env`: contexts, their variables, and projects' variables, over the API.
 * A value is read from standard input (`printf %s "$TOKEN" | gyre env set gh/acme/app TOKEN`; one
 * trailing newline is dropped), or typed at a terminal without echo; never from the command line,
 * where it would stay in shell history and show in the process list. Lists show masked values
 * (`xxxx` and the last four characters), as the API does.
 */

/** Reads a value for `name`: standard input by default. */
export type ValueReader = (name: string, io: CliIo) => Promise<string>;

/** Every item of a paged list. */
async function all<T>(client: ApiClient, path: string): Promise<T[]> {
  const items: T[] = [];
  let pageToken: string | null = null;
  do {
    const page: { items: T[]; next_page_token: string | null } = await client.request('GET', `${path}${pageToken ? `${path.includes('?') ? '&' : '?'}page-token=${seg(pageToken)}` : ''}`);
    items.push(...page.items);
    pageToken = page.next_page_token;
  } while (pageToken);
  return items;
}

interface ContextJson {
  id: string;
  name: string;
  created_at: string;
}

async function contextId(client: ApiClient, org: string, name: string | undefined): Promise<string> {
  if (!name) throw new UsageError('name the context');
  const found = (await all<ContextJson>(client, `/api/v2/context?owner-slug=${seg(org)}`)).find((c) => c.name === name);
  if (!found) throw new UsageError(`there is no context '${name}' in ${org} (gyre context list ${org})`);
  return found.id;
}

/** Refuses a value given on the command line, without repeating it. */
function noValueArgument(extra: string[], command: string): void {
  if (extra.length > 0) {
    throw new UsageError(`${command} takes the value on standard input, never on the command line (it would stay in your shell history and show in the process list): printf %s "$VALUE" | gyre ${command} …`);
  }
}

/**
 * `gyre context list <org>`, `gyre context create <org> <name>`, `gyre context delete <org> <name>`,
 * `gyre context env list <org> <context>`, `gyre context env set <org> <context> <NAME>` (value on
 * standard input), `gyre context env unset <org> <context> <NAME>`.
 */
export async function contextCommand(args: string[], io: CliIo, client: ApiClient, readValue: ValueReader = readStdinValue): Promise<number> {
  const { positionals } = parse(args);
  const [sub, ...rest] = positionals;
  switch (sub) {
    case 'list': {
      const org = orgSlug(rest[0]);
      const items = await all<ContextJson>(client, `/api/v2/context?owner-slug=${seg(org)}`);
      if (items.length === 0) {
        io.stderr(`no contexts in ${org} yet (gyre context create ${org} <name>)\n`);
        return 0;
      }
      io.stdout(table([['NAME', 'ID', 'CREATED'], ...items.map((c) => [c.name, c.id, day(c.created_at)])]));
      return 0;
    }
    case 'create': {
      const org = orgSlug(rest[0]);
      if (!rest[1]) throw new UsageError('context create needs <org> <name>');
      const made = await client.request<ContextJson>('POST', '/api/v2/context', { name: rest[1], owner: { slug: org, type: 'organization' } });
      io.stderr(`created context '${made.name}' in ${org}\n`);
      io.stdout(`${made.id}\n`);
      return 0;
    }
    case 'delete': {
      const org = orgSlug(rest[0]);
      const id = await contextId(client, org, rest[1]);
      await client.request('DELETE', `/api/v2/context/${seg(id)}`);
      io.stdout(`deleted context '${rest[1]}' of ${org} with its variables\n`);
      return 0;
    }
    case 'env':
      return contextEnvCommand(rest, io, client, readValue);
    default:
      throw new UsageError(sub ? `unknown context command '${sub}' (allowed: list, create, delete, env)` : 'context needs a subcommand: list, create, delete, env');
  }
}

async function contextEnvCommand(args: string[], io: CliIo, client: ApiClient, readValue: ValueReader): Promise<number> {
  const [sub, orgArg, contextName, name, ...extra] = args;
  if (!sub || !['list', 'set', 'unset'].includes(sub)) throw new UsageError(sub ? `unknown context env command '${sub}' (allowed: list, set, unset)` : 'context env needs a subcommand: list, set, unset');
  const org = orgSlug(orgArg);
  const id = await contextId(client, org, contextName);
  const base = `/api/v2/context/${seg(id)}/environment-variable`;
  if (sub === 'list') {
    const items = await all<{ variable: string; value?: string; updated_at: string }>(client, base);
    if (items.length === 0) {
      io.stderr(`context '${contextName}' has no variables yet\n`);
      return 0;
    }
    io.stdout(table([['NAME', 'VALUE', 'UPDATED'], ...items.map((v) => [v.variable, v.value ?? 'xxxx', day(v.updated_at)])]));
    return 0;
  }
  if (!name) throw new UsageError(`context env ${sub} needs <org> <context> <NAME>`);
  if (sub === 'unset') {
    await client.request('DELETE', `${base}/${seg(name)}`);
    io.stdout(`removed ${name} from context '${contextName}'\n`);
    return 0;
  }
  noValueArgument(extra, 'context env set');
  const value = await readValue(name, io);
  await client.request('PUT', `${base}/${seg(name)}`, { value });
  io.stdout(`set ${name} in context '${contextName}'\n`);
  return 0;
}

/** `gyre env list <slug>`, `gyre env set <slug> <NAME>` (value on standard input), `gyre env unset <slug> <NAME>`. */
export async function envCommand(args: string[], io: CliIo, client: ApiClient, readValue: ValueReader = readStdinValue): Promise<number> {
  const { positionals } = parse(args);
  const [sub, slug, name, ...extra] = positionals;
  if (!sub || !['list', 'set', 'unset'].includes(sub)) throw new UsageError(sub ? `unknown env command '${sub}' (allowed: list, set, unset)` : 'env needs a subcommand: list, set, unset');
  const base = `/api/v2/project/${slugPath(slug)}/envvar`;
  if (sub === 'list') {
    const items = await all<{ name: string; value: string; 'created-at'?: string }>(client, base);
    if (items.length === 0) {
      io.stderr(`${slug} has no environment variables yet\n`);
      return 0;
    }
    io.stdout(table([['NAME', 'VALUE', 'CREATED'], ...items.map((v) => [v.name, v.value, day(v['created-at'])])]));
    return 0;
  }
  if (!name) throw new UsageError(`env ${sub} needs <project-slug> <NAME>`);
  if (sub === 'unset') {
    await client.request('DELETE', `${base}/${seg(name)}`);
    io.stdout(`removed ${name} from ${slug}\n`);
    return 0;
  }
  noValueArgument(extra, 'env set');
  const value = await readValue(name, io);
  const made = await client.request<{ name: string; value: string }>('POST', base, { name, value });
  io.stdout(`set ${made.name} in ${slug} (${made.value})\n`);
  return 0;
}

/**
 * The value on standard input: all of it, less one trailing newline. At a terminal it is typed
 * without echo and ends at Enter.
 */
export async function readStdinValue(name: string, io: CliIo): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) return readHidden(name, io);
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/** Reads a line from the terminal without showing it. */
function readHidden(name: string, io: CliIo): Promise<string> {
  const stdin = process.stdin;
  io.stderr(`value of ${name} (not shown; Enter to end): `);
  return new Promise((resolve, reject) => {
    let value = '';
    const done = (error?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      io.stderr('\n');
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      for (const c of chunk.toString('utf8')) {
        if (c === '\r' || c === '\n' || c === '\u0004') return done();
        if (c === '\u0003') return done(new UsageError('cancelled'));
        if (c === '\u007f' || c === '\b') value = Array.from(value).slice(0, -1).join('');
        else value += c;
      }
    };
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}
