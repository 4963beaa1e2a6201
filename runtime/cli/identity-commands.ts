import { parseArgs, type ParseArgsConfig } from 'node:util';
import { parseAuditTime } from '../audit/audit-log';
import { InputError } from '../domain/errors';
import type { ApiClient } from './client';
import type { CliIo } from './main';
import { UsageError } from './main';

/**
 * `gyre user`, `gyre token` and `gyre audit`: users and their roles, API tokens, and the audit
 * log, over the API. Tokens are printed on stdout alone (once: the server keeps only a hash), with
 * what they are on stderr, so `TOKEN=$(gyre token create …)` works.
 */

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

const seg = encodeURIComponent;
const slugPath = (slug: string) => {
  const parts = slug.split('/');
  const full = parts.length === 2 ? ['gh', ...parts] : parts;
  if (full.length !== 3 || full.some((p) => !p)) throw new UsageError(`'${slug}' is not a project slug (gh/<org>/<repo>)`);
  return full.map(seg).join('/');
};

/** Rows as aligned columns, the last one left ragged. */
function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd() + '\n').join('');
}

const day = (iso: string | null | undefined) => (iso ? iso.slice(0, 16).replace('T', ' ') : '-');

/**
 * `gyre user add <login> [--name N] [--email E] [--admin]` (prints their first token),
 * `gyre user list`, `gyre user role <login> <instance|gh/org|gh/org/repo> <role|none>`,
 * `gyre user disable|enable <login>`.
 */
export async function userCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const { positionals, values } = parse(args, { name: { type: 'string' }, email: { type: 'string' }, admin: { type: 'boolean' } });
  const [sub, login, scope, role] = positionals;
  switch (sub) {
    case 'add': {
      if (!login) throw new UsageError('user add needs a login');
      const user = await client.request<{ login: string; token: string; admin: boolean }>('POST', '/api/v2/users', {
        login,
        ...(values.name ? { name: values.name } : {}),
        ...(values.email ? { email: values.email } : {}),
        ...(values.admin ? { admin: true } : {}),
      });
      io.stderr(`added ${user.admin ? 'instance admin' : 'user'} ${user.login}; their API token (shown once, give it to them):\n`);
      io.stdout(`${user.token}\n`);
      return 0;
    }
    case 'list': {
      const rows = [['LOGIN', 'NAME', 'ADMIN', 'DISABLED', 'ROLES']];
      let pageToken: string | null = null;
      do {
        const page: { items: any[]; next_page_token: string | null } = await client.request('GET', `/api/v2/users${pageToken ? `?page-token=${seg(pageToken)}` : ''}`);
        for (const u of page.items) {
          const roles = [...u.organizations.map((o: any) => `gh/${o.name}=${o.role}`), ...u.projects.map((p: any) => `${p.slug}=${p.role}`)];
          rows.push([u.login, u.name, u.admin ? 'yes' : '', u.disabled ? 'yes' : '', roles.join(' ')]);
        }
        pageToken = page.next_page_token;
      } while (pageToken);
      io.stdout(table(rows));
      return 0;
    }
    case 'role': {
      if (!login || !scope || !role) throw new UsageError('user role needs: <login> <instance|gh/<org>|gh/<org>/<repo>> <role|none>');
      if (scope === 'instance') {
        if (role !== 'admin' && role !== 'none') throw new UsageError(`instance role '${role}' must be admin or none`);
        await client.request('PATCH', `/api/v2/users/${seg(login)}`, { admin: role === 'admin' });
        io.stdout(role === 'admin' ? `${login} is an instance admin\n` : `${login} is no longer an instance admin\n`);
        return 0;
      }
      const parts = scope.replace(/^(gh|github)\//, '').split('/');
      if (parts.length === 1 && parts[0]) {
        const path = `/api/v2/organization/gh/${seg(parts[0])}/members/${seg(login)}`;
        if (role === 'none') await client.request('DELETE', path);
        else await client.request('PUT', path, { role });
        io.stdout(role === 'none' ? `${login} has no role in gh/${parts[0]}\n` : `${login} is ${role} of gh/${parts[0]}\n`);
        return 0;
      }
      if (parts.length === 2 && parts[0] && parts[1]) {
        const path = `/api/v2/project/${slugPath(`gh/${parts.join('/')}`)}/members/${seg(login)}`;
        if (role === 'none') await client.request('DELETE', path);
        else await client.request('PUT', path, { role });
        io.stdout(role === 'none' ? `${login} has no role on gh/${parts.join('/')}\n` : `${login} has ${role} on gh/${parts.join('/')}\n`);
        return 0;
      }
      throw new UsageError(`'${scope}' is not instance, an organization (gh/<org>) or a project (gh/<org>/<repo>)`);
    }
    case 'disable':
    case 'enable': {
      if (!login) throw new UsageError(`user ${sub} needs a login`);
      await client.request('PATCH', `/api/v2/users/${seg(login)}`, { disabled: sub === 'disable' });
      io.stdout(sub === 'disable' ? `${login} is disabled: their tokens no longer work\n` : `${login} is enabled\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown user command '${sub}' (allowed: add, list, role, disable, enable)` : 'user needs a subcommand: add, list, role, disable, enable');
  }
}

/**
 * `gyre token create [--label L] [--expires-in-days N] [--project <slug> --scope read|trigger] [--user <login>]`,
 * `gyre token list [--project <slug>]`, `gyre token revoke <id> [--project <slug>]`.
 */
export async function tokenCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const { positionals, values } = parse(args, {
    label: { type: 'string' },
    'expires-in-days': { type: 'string' },
    project: { type: 'string' },
    scope: { type: 'string' },
    user: { type: 'string' },
  });
  const [sub, id] = positionals;
  const project = values.project as string | undefined;
  const base = project ? `/api/v2/project/${slugPath(project)}/tokens` : '/api/v2/me/tokens';
  switch (sub) {
    case 'create': {
      const raw = values['expires-in-days'] as string | undefined;
      if (raw !== undefined && !/^\d+$/.test(raw)) throw new UsageError(`--expires-in-days '${raw}' must be a whole number of days`);
      if (project && !values.scope) throw new UsageError('a project token needs --scope read or --scope trigger');
      if (!project && values.scope) throw new UsageError('--scope is for project tokens: add --project <slug>');
      if (project && values.user) throw new UsageError('--user is for personal tokens; a project token belongs to its project');
      const body = { label: values.label ?? 'cli', ...(raw ? { expires_in_days: Number(raw) } : {}), ...(project ? { scope: values.scope } : {}) };
      const path = values.user ? `/api/v2/users/${seg(values.user as string)}/tokens` : base;
      const made = await client.request<{ id: string; token: string; label: string; expires_at: string | null; scope?: string }>('POST', path, body);
      const what = project ? `project token for ${project} (${made.scope})` : values.user ? `personal token for ${values.user}` : 'personal token';
      io.stderr(`created ${what} ${made.id} '${made.label}'${made.expires_at ? `, expires ${made.expires_at}` : ''}; shown once:\n`);
      io.stdout(`${made.token}\n`);
      return 0;
    }
    case 'list': {
      const { items } = await client.request<{ items: any[] }>('GET', base);
      const rows = [['ID', 'LABEL', project ? 'SCOPE' : 'KIND', 'STARTS', 'CREATED', 'EXPIRES', 'LAST USED']];
      for (const t of items) {
        rows.push([t.id, t.label, project ? t.scope : t.kind, `${t.hint}…`, day(t.created_at), t.expired ? `expired ${day(t.expires_at)}` : day(t.expires_at), day(t.last_used_at)]);
      }
      io.stdout(table(rows));
      return 0;
    }
    case 'revoke': {
      if (!id) throw new UsageError('token revoke needs the token id (from gyre token list)');
      await client.request('DELETE', `${base}/${seg(id)}`);
      io.stdout(`token ${id} revoked\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown token command '${sub}' (allowed: create, list, revoke)` : 'token needs a subcommand: create, list, revoke');
  }
}

/**
 * `gyre audit [--since T] [--until T] [--org gh/<org>] [--format table|jsonl]`: the audit log from
 * `--since` (default 24h ago), oldest first. T is an ISO 8601 time or a span back from now (30m, 24h, 7d).
 */
export async function auditCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const { positionals, values } = parse(args, { since: { type: 'string' }, until: { type: 'string' }, org: { type: 'string' }, format: { type: 'string' } });
  if (positionals.length) throw new UsageError(`audit takes no arguments (got '${positionals[0]}'); use --since, --until, --org, --format`);
  const format = (values.format as string | undefined) ?? 'table';
  if (format !== 'table' && format !== 'jsonl') throw new UsageError(`--format '${format}' is not a format (allowed: table, jsonl)`);
  const times: Record<string, string> = {};
  for (const name of ['since', 'until'] as const) {
    const raw = (values[name] as string | undefined) ?? (name === 'since' ? '24h' : undefined);
    if (raw === undefined) continue;
    try {
      // Spans are turned into times here, so every page asks for the same range.
      times[name] = parseAuditTime(raw, `--${name}`).toISOString();
    } catch (error) {
      if (error instanceof InputError) throw new UsageError(error.message);
      throw error;
    }
  }
  const org = values.org as string | undefined;
  const base = org ? `/api/v2/organization/gh/${seg(org.replace(/^(gh|github)\//, ''))}/audit` : '/api/v2/audit';
  const query = Object.entries({ ...times, order: 'asc', limit: '1000' }).map(([k, v]) => `${k}=${seg(v)}`).join('&');
  const rows = [['TIME', 'ACTOR', 'ACTION', 'TARGET', 'WHERE', 'ADDRESS', 'RESULT']];
  let pageToken: string | null = null;
  do {
    const page: { items: any[]; next_page_token: string | null } = await client.request('GET', `${base}?${query}${pageToken ? `&page-token=${seg(pageToken)}` : ''}`);
    for (const e of page.items) {
      if (format === 'jsonl') io.stdout(`${JSON.stringify(e)}\n`);
      else {
        rows.push([
          e.time.replace(/\.\d+Z$/, 'Z'),
          e.actor.login + (e.actor.token_kind === 'project' ? ' (project token)' : ''),
          e.action,
          e.target ? `${e.target.type} ${e.target.id}` : '-',
          e.project ?? (e.organization ? `gh/${e.organization}` : '-'),
          e.address ?? '-',
          e.result + (e.status && e.result !== 'success' ? ` ${e.status}` : ''),
        ]);
      }
    }
    pageToken = page.next_page_token;
  } while (pageToken);
  if (format === 'table') io.stdout(table(rows));
  return 0;
}
