import type { Audit } from '../audit/audit-log';
import type { TaskSshKey, TaskSshKeys } from '../dispatcher/dispatcher';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import type { Queryable, Store } from '../store/store';
import type { ProjectRef } from './contexts';
import type { SealedTable } from './rewrap';
import type { SecretBox } from './secret-box';
import { checkFingerprint, checkHostname, generateSshKeyPair, parseFingerprint, parseSshPrivateKey } from './ssh-key-format';
import { projectById, sealedOf, type SealedRow } from './sql/contexts';
import * as sql from './sql/ssh-keys';

/**
 * A project's SSH keys, as CircleCI has them:
 *
 * - **Checkout keys** (`/api/v2/project/{slug}/checkout-key`): key pairs Gyre makes (Ed25519). The
 *   public half is shown, to be added to the repository as a deploy key (or to an account, for a
 *   user key); the checkout step reads a repository whose URL is SSH with the preferred one (a user
 *   key before a deploy key, the newest first).
 * - **Additional SSH keys** (`/api/v1.1/project/…/ssh-key`): private keys a project admin gives,
 *   each for one host name or every host, written into the job by `add_ssh_keys`.
 *
 * Private halves are sealed with the SecretBox as they are made or arrive and opened only in
 * `forTask`, for the agent that holds a task's lease. No answer, error or audit record holds one.
 * Every change takes the request's `Audit` and records itself in the transaction that makes it.
 */
export interface SshKeys {
  /** Makes a checkout key: `deploy-key`, or `user-key` (kept as CircleCI's `github-user-key`). At most MAX_CHECKOUT_KEYS a project. */
  createCheckoutKey(project: ProjectRef, type: unknown, audit?: Audit): Promise<CheckoutKeyView>;
  /** A project's checkout keys, the preferred first, with MD5 fingerprints (`digest: 'sha256'`: SHA256 ones). */
  listCheckoutKeys(projectId: string, digest?: Digest): Promise<{ items: CheckoutKeyView[]; next_page_token: null }>;
  /** One checkout key by its MD5 or SHA256 fingerprint, answered in the form it was asked by. */
  getCheckoutKey(projectId: string, fingerprint: string): Promise<CheckoutKeyView>;
  deleteCheckoutKey(project: ProjectRef, fingerprint: string, audit?: Audit): Promise<void>;

  /** Adds a private key for a host name ('' or absent: every host), or replaces the same key for the same host. */
  addSshKey(project: ProjectRef, input: { hostname?: unknown; privateKey: unknown }, audit?: Audit): Promise<SshKeyView>;
  listSshKeys(projectId: string): Promise<SshKeyView[]>;
  /** Removes an additional key, for one host name, or for every one it was added for when `hostname` is absent. */
  deleteSshKey(project: ProjectRef, input: { fingerprint: unknown; hostname?: unknown }, audit?: Audit): Promise<void>;

  /**
   * The keys a task gets, opened: none for a fork's pipeline unless the project passes secrets to
   * forks. `checkout`: the job checks out a repository over SSH (it gets the preferred checkout key,
   * if the project has one). `additional`: what its `add_ssh_keys` steps select: `all`, these
   * fingerprints (MD5 or SHA256; ones the project lacks are left out, for the step to name), or none.
   */
  forTask(input: TaskSshKeysInput, db?: Queryable): Promise<TaskSshKeys | undefined>;
}

export interface TaskSshKeysInput {
  readonly projectId: string;
  readonly fork: boolean;
  readonly checkout: boolean;
  readonly additional: 'all' | readonly string[];
}

export type Digest = 'md5' | 'sha256';

/** CircleCI's `CheckoutKey`. */
export interface CheckoutKeyView {
  readonly 'public-key': string;
  readonly type: sql.CheckoutKeyType;
  readonly fingerprint: string;
  readonly preferred: boolean;
  readonly 'created-at': string;
}

/** An additional key as CircleCI's v1.1 project settings list it (`ssh_keys`), with Gyre's SHA256 fingerprint and time. */
export interface SshKeyView {
  readonly hostname: string;
  readonly fingerprint: string;
  readonly fingerprint_sha256: string;
  readonly public_key: string;
  readonly created_at: string;
}

/** Most checkout keys a project holds. */
export const MAX_CHECKOUT_KEYS = 20;
/** Most additional keys (key and host name pairs) a project holds. */
export const MAX_SSH_KEYS = 100;

/** The tables whose private keys `rewrapAll` (runtime/secrets/rewrap.ts) moves to a new wrapping key. */
export const SSH_KEY_TABLES: readonly SealedTable[] = [
  { table: 'project_checkout_keys', keyColumns: ['project_id', 'fingerprint'] },
  { table: 'project_ssh_keys', keyColumns: ['project_id', 'fingerprint', 'hostname'] },
];

const CHECKOUT_TYPES: Record<string, sql.CheckoutKeyType> = { 'deploy-key': 'deploy-key', 'user-key': 'github-user-key' };

/** The additional data a private key is sealed with: it opens only in its own row. */
const checkoutAad = (projectId: string, fingerprint: string) => `checkout-key:${projectId}:${fingerprint}`;
const sshAad = (projectId: string, fingerprint: string, hostname: string) => `ssh-key:${projectId}:${fingerprint}:${hostname}`;

const iso = (d: Date | string) => new Date(d).toISOString();

function checkoutView(row: sql.CheckoutKeyRow, digest: Digest): CheckoutKeyView {
  return {
    'public-key': row.public_key,
    type: row.type,
    fingerprint: digest === 'sha256' ? row.fingerprint_sha256 : row.fingerprint,
    preferred: row.preferred === true,
    'created-at': iso(row.created_at),
  };
}

const sshView = (row: sql.SshKeyRow): SshKeyView => ({
  hostname: row.hostname,
  fingerprint: row.fingerprint,
  fingerprint_sha256: row.fingerprint_sha256,
  public_key: row.public_key,
  created_at: iso(row.created_at),
});

export function createSshKeys({ store, box }: { store: Store; box: SecretBox }): SshKeys {
  /** Holds the project's row for the transaction, so two writers cannot both add the last key allowed. */
  const holdProject = async (tx: Queryable, project: ProjectRef) => {
    const [held] = await tx.query('SELECT id FROM projects WHERE id = $1 FOR UPDATE', [project.id]);
    if (!held) throw new NotFoundError('project', project.slug);
  };

  return {
    async createCheckoutKey(project, rawType, audit) {
      if (typeof rawType !== 'string' || !(rawType in CHECKOUT_TYPES)) {
        throw new InputError(`type ${JSON.stringify(typeof rawType === 'string' ? rawType.slice(0, 100) : rawType ?? null)} is not a checkout key type: give deploy-key or user-key`, 'type');
      }
      const type = CHECKOUT_TYPES[rawType];
      const pair = generateSshKeyPair(`gyre-${type === 'deploy-key' ? 'deploy' : 'user'}-key ${project.slug}`);
      return store.transaction(async (tx) => {
        await holdProject(tx, project);
        if ((await sql.countCheckoutKeys(tx, project.id)) >= MAX_CHECKOUT_KEYS) {
          throw new InputError(`project ${project.slug} already has ${MAX_CHECKOUT_KEYS} checkout keys, the most it may; delete one first`, 'type');
        }
        const sealed = await box.seal(pair.privateKey, checkoutAad(project.id, pair.fingerprint));
        if (!(await sql.insertCheckoutKey(tx, { projectId: project.id, fingerprint: pair.fingerprint, fingerprintSha256: pair.fingerprintSha256, type, publicKey: pair.publicKey, sealed }))) {
          throw new ConflictError(`a checkout key with fingerprint ${pair.fingerprint} already exists in ${project.slug}`);
        }
        await audit?.record(tx, { target: { type: 'project', id: project.slug }, org: project.org, project: project.slug, detail: { checkout_key: pair.fingerprint, fingerprint_sha256: pair.fingerprintSha256, type } });
        const row = await sql.checkoutKeyBy(tx, project.id, 'md5', pair.fingerprint);
        return checkoutView(row!, 'md5');
      });
    },

    async listCheckoutKeys(projectId, digest = 'md5') {
      return { items: (await sql.listCheckoutKeys(store, projectId)).map((r) => checkoutView(r, digest)), next_page_token: null };
    },

    async getCheckoutKey(projectId, fingerprint) {
      const query = parseFingerprint(fingerprint);
      const row = query ? await sql.checkoutKeyBy(store, projectId, query.kind, query.value) : undefined;
      if (!row) throw new NotFoundError('checkout key', fingerprint.slice(0, 200));
      return checkoutView(row, query!.kind);
    },

    async deleteCheckoutKey(project, fingerprint, audit) {
      const query = parseFingerprint(fingerprint);
      await store.transaction(async (tx) => {
        const gone = query ? await sql.deleteCheckoutKey(tx, project.id, query.kind, query.value) : undefined;
        if (!gone) throw new NotFoundError('checkout key', fingerprint.slice(0, 200));
        await audit?.record(tx, { target: { type: 'project', id: project.slug }, org: project.org, project: project.slug, detail: { checkout_key: gone.fingerprint, type: gone.type } });
      });
    },

    async addSshKey(project, input, audit) {
      const hostname = checkHostname(input.hostname);
      const pair = parseSshPrivateKey(input.privateKey);
      return store.transaction(async (tx) => {
        await holdProject(tx, project);
        const existing = await sql.listSshKeys(tx, project.id);
        const replaces = existing.some((k) => k.fingerprint === pair.fingerprint && k.hostname === hostname);
        if (!replaces && existing.length >= MAX_SSH_KEYS) throw new InputError(`project ${project.slug} already has ${MAX_SSH_KEYS} SSH keys, the most it may; remove one first`, 'private_key');
        const sealed = await box.seal(pair.privateKey, sshAad(project.id, pair.fingerprint, hostname));
        const row = await sql.putSshKey(tx, { projectId: project.id, fingerprint: pair.fingerprint, fingerprintSha256: pair.fingerprintSha256, hostname, publicKey: pair.publicKey, sealed });
        await audit?.record(tx, { target: { type: 'project', id: project.slug }, org: project.org, project: project.slug, detail: { ssh_key: pair.fingerprint, hostname, created: row.created } });
        return sshView(row);
      });
    },

    async listSshKeys(projectId) {
      return (await sql.listSshKeys(store, projectId)).map(sshView);
    },

    async deleteSshKey(project, input, audit) {
      const query = checkFingerprint(input.fingerprint);
      // Absent: every host name the key was added for. '' is the key for every host.
      const hostname = input.hostname === undefined || input.hostname === null ? undefined : checkHostname(input.hostname);
      await store.transaction(async (tx) => {
        const gone = await sql.deleteSshKeys(tx, project.id, query.kind, query.value, hostname);
        if (gone.length === 0) throw new NotFoundError('SSH key', hostname ? `${query.value} for ${hostname}` : query.value);
        await audit?.record(tx, { target: { type: 'project', id: project.slug }, org: project.org, project: project.slug, detail: { ssh_key: gone[0].fingerprint, hostnames: gone.map((k) => k.hostname) } });
      });
    },

    async forTask(input, db = store) {
      const wantsAdditional = input.additional === 'all' || input.additional.length > 0;
      if (!input.checkout && !wantsAdditional) return undefined;
      const project = await projectById(db, input.projectId);
      if (!project) return undefined;
      // A fork's author wrote this config: no keys unless the project passes secrets to forks.
      if (input.fork && !project.forks_receive_secret_env_vars) {
        return { additional: [], withheld: `this pipeline builds a pull request from a fork, and project ${project.slug} does not pass secrets to forks (forks_receive_secret_env_vars is off)` };
      }
      let checkout: TaskSshKey | undefined;
      if (input.checkout) {
        const row = await sql.sealedPreferredCheckoutKey(db, project.id);
        if (row) {
          checkout = {
            fingerprint: row.fingerprint,
            fingerprintSha256: row.fingerprint_sha256,
            hostname: '',
            publicKey: row.public_key,
            privateKey: await box.open(sealedOf(row as unknown as SealedRow), checkoutAad(project.id, row.fingerprint)),
          };
        }
      }
      const additional: TaskSshKey[] = [];
      if (wantsAdditional) {
        const wanted = input.additional === 'all' ? undefined : input.additional.map(parseFingerprint).filter((q) => q !== undefined);
        for (const row of await sql.sealedSshKeys(db, project.id)) {
          if (wanted && !wanted.some((q) => (q.kind === 'md5' ? row.fingerprint : row.fingerprint_sha256) === q.value)) continue;
          additional.push({
            fingerprint: row.fingerprint,
            fingerprintSha256: row.fingerprint_sha256,
            hostname: row.hostname,
            publicKey: row.public_key,
            privateKey: await box.open(sealedOf(row as unknown as SealedRow), sshAad(project.id, row.fingerprint, row.hostname)),
          });
        }
      }
      if (!checkout && additional.length === 0) return undefined;
      return { ...(checkout ? { checkout } : {}), additional };
    },
  };
}
