import { readFile } from 'node:fs/promises';
import type { ApiClient } from './client';
import { day, parseCommand as parse, seg, slugPath, table } from './command-args';
import type { CliIo } from './main';
import { UsageError } from './main';

/**
 * `gyre ssh-key`: a project's SSH keys over the API. Additional keys (what `add_ssh_keys` writes into
 * jobs) are added from a file (`--file`) or standard input (`gyre ssh-key add gh/acme/app --hostname
 * deploy.example.com < deploy_key`), never from the command line; checkout keys are made by Gyre,
 * which prints the public half to add to the repository (or an account). Lists show public halves
 * and fingerprints only: no answer of the API holds a private key.
 */

/** Reads the private key: the file named, or all of standard input. */
export type KeyReader = (file: string | undefined, io: CliIo) => Promise<string>;

interface SshKeyJson {
  hostname: string;
  fingerprint: string;
  fingerprint_sha256: string;
  public_key: string;
  created_at: string;
}

interface CheckoutKeyJson {
  'public-key': string;
  type: string;
  fingerprint: string;
  preferred: boolean;
  'created-at': string;
}

const SUBCOMMANDS = 'add, list, remove, checkout';

/**
 * `gyre ssh-key add <slug> [--hostname H] [--file F]` (the key on standard input without --file),
 * `gyre ssh-key list <slug>`, `gyre ssh-key remove <slug> <fingerprint> [--hostname H]`,
 * `gyre ssh-key checkout list|create|delete <slug> …`.
 */
export async function sshKeyCommand(args: string[], io: CliIo, client: ApiClient, readKey: KeyReader = readPrivateKey): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'add': {
      const { positionals, values } = parse(rest, { hostname: { type: 'string' }, file: { type: 'string' } });
      const [slug, ...extra] = positionals;
      const base = `/api/v1.1/project/${slugPath(slug)}/ssh-key`;
      if (extra.length > 0) {
        throw new UsageError('ssh-key add takes the private key from --file or standard input, never on the command line (it would stay in your shell history and show in the process list)');
      }
      const privateKey = await readKey(values.file, io);
      const made = await client.request<SshKeyJson>('POST', base, { hostname: values.hostname ?? '', private_key: privateKey });
      io.stdout(`added SSH key ${made.fingerprint} (${made.fingerprint_sha256}) to ${slug} for ${made.hostname ? `host ${made.hostname}` : 'every host'}\n`);
      return 0;
    }
    case 'list': {
      const { positionals } = parse(rest);
      const slug = positionals[0];
      const keys = await client.request<SshKeyJson[]>('GET', `/api/v1.1/project/${slugPath(slug)}/ssh-key`);
      if (keys.length === 0) {
        io.stderr(`${slug} has no additional SSH keys yet (gyre ssh-key add ${slug} --hostname <host> < <private key file>)\n`);
        return 0;
      }
      io.stdout(table([['HOSTNAME', 'FINGERPRINT', 'SHA256', 'ADDED'], ...keys.map((k) => [k.hostname || '*', k.fingerprint, k.fingerprint_sha256, day(k.created_at)])]));
      return 0;
    }
    case 'remove': {
      const { positionals, values } = parse(rest, { hostname: { type: 'string' } });
      const [slug, fingerprint] = positionals;
      if (!fingerprint) throw new UsageError('ssh-key remove needs <slug> <fingerprint> [--hostname H]');
      await client.request('DELETE', `/api/v1.1/project/${slugPath(slug)}/ssh-key`, { fingerprint, ...(values.hostname !== undefined ? { hostname: values.hostname } : {}) });
      io.stdout(`removed SSH key ${fingerprint} from ${slug}${values.hostname !== undefined ? ` for ${values.hostname || 'every host'}` : ''}\n`);
      return 0;
    }
    case 'checkout':
      return checkoutKeyCommand(rest, io, client);
    default:
      throw new UsageError(sub ? `unknown ssh-key command '${sub}' (allowed: ${SUBCOMMANDS})` : `ssh-key needs a subcommand: ${SUBCOMMANDS}`);
  }
}

async function checkoutKeyCommand(args: string[], io: CliIo, client: ApiClient): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'list': {
      const { positionals, values } = parse(rest, { digest: { type: 'string' } });
      const slug = positionals[0];
      if (values.digest !== undefined && !['md5', 'sha256'].includes(values.digest)) throw new UsageError(`--digest '${values.digest}' must be md5 or sha256`);
      const page = await client.request<{ items: CheckoutKeyJson[] }>('GET', `/api/v2/project/${slugPath(slug)}/checkout-key${values.digest ? `?digest=${values.digest}` : ''}`);
      if (page.items.length === 0) {
        io.stderr(`${slug} has no checkout keys yet (gyre ssh-key checkout create ${slug})\n`);
        return 0;
      }
      io.stdout(table([['TYPE', 'FINGERPRINT', 'PREFERRED', 'CREATED', 'PUBLIC KEY'], ...page.items.map((k) => [k.type, k.fingerprint, k.preferred ? 'yes' : 'no', day(k['created-at']), k['public-key']])]));
      return 0;
    }
    case 'create': {
      const { positionals, values } = parse(rest, { type: { type: 'string' } });
      const slug = positionals[0];
      const type = values.type ?? 'deploy-key';
      const made = await client.request<CheckoutKeyJson>('POST', `/api/v2/project/${slugPath(slug)}/checkout-key`, { type });
      io.stderr(`created ${made.type} ${made.fingerprint} for ${slug}; add this public key to the repository as a deploy key (read-only is enough)${type === 'user-key' ? ', or to the account whose access the checkout should have' : ''}:\n`);
      io.stdout(`${made['public-key']}\n`);
      return 0;
    }
    case 'delete': {
      const { positionals } = parse(rest);
      const [slug, fingerprint] = positionals;
      if (!fingerprint) throw new UsageError('ssh-key checkout delete needs <slug> <fingerprint>');
      await client.request('DELETE', `/api/v2/project/${slugPath(slug)}/checkout-key/${seg(fingerprint)}`);
      io.stdout(`deleted checkout key ${fingerprint} of ${slug}\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown ssh-key checkout command '${sub}' (allowed: list, create, delete)` : 'ssh-key checkout needs a subcommand: list, create, delete');
  }
}

/** The private key from `file`, or all of standard input (refused at a terminal: a key is many lines). */
export async function readPrivateKey(file: string | undefined, _io: CliIo): Promise<string> {
  if (file !== undefined) {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw new UsageError(`cannot read --file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  if (process.stdin.isTTY) throw new UsageError('give the private key with --file <path> or on standard input (gyre ssh-key add <slug> < ~/.ssh/deploy_key)');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}
