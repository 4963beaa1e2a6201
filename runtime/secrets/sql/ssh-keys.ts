import type { Queryable } from '../../store/store';
import type { Sealed } from '../secret-box';

/**
 * Projects' SSH keys (590_ssh_keys.sql): checkout keys and additional keys, the private half of
 * each sealed. Plain SQL, one function per statement; nothing here sees a private key in clear.
 */

export type CheckoutKeyType = 'deploy-key' | 'github-user-key';

/** A checkout key's row without its sealed private half. */
export interface CheckoutKeyRow {
  fingerprint: string;
  fingerprint_sha256: string;
  type: CheckoutKeyType;
  public_key: string;
  created_at: Date | string;
  /** The one the checkout uses: a user key before a deploy key, the newest first. */
  preferred: boolean;
}

/** An additional key's row without its sealed private half. */
export interface SshKeyRow {
  fingerprint: string;
  fingerprint_sha256: string;
  hostname: string;
  public_key: string;
  created_at: Date | string;
}

export interface SealedColumns {
  ciphertext: Buffer;
  iv: Buffer;
  tag: Buffer;
  wrapped_key: Buffer;
  key_id: string;
}

/** The order checkout keys are preferred in; the first is `preferred`. */
const PREFERENCE = `(type = 'github-user-key') DESC, created_at DESC, fingerprint`;
const CHECKOUT_COLUMNS = `fingerprint, fingerprint_sha256, type, public_key, created_at, (row_number() OVER (ORDER BY ${PREFERENCE}) = 1) AS preferred`;
const SSH_COLUMNS = 'fingerprint, fingerprint_sha256, hostname, public_key, created_at';

/** Which column a fingerprint is looked up in. */
const column = (kind: 'md5' | 'sha256') => (kind === 'md5' ? 'fingerprint' : 'fingerprint_sha256');

// --- Checkout keys ---------------------------------------------------------------------------------

export async function countCheckoutKeys(db: Queryable, projectId: string): Promise<number> {
  const [{ count }] = await db.query<{ count: number }>('SELECT count(*)::int AS count FROM project_checkout_keys WHERE project_id = $1', [projectId]);
  return count;
}

/** Inserts a new key (fingerprints of a fresh key pair do not collide); answers whether it went in. */
export async function insertCheckoutKey(
  tx: Queryable,
  key: { projectId: string; fingerprint: string; fingerprintSha256: string; type: CheckoutKeyType; publicKey: string; sealed: Sealed },
): Promise<boolean> {
  const rows = await tx.query(
    `INSERT INTO project_checkout_keys (project_id, fingerprint, fingerprint_sha256, type, public_key, ciphertext, iv, tag, wrapped_key, key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING 1 AS one`,
    [key.projectId, key.fingerprint, key.fingerprintSha256, key.type, key.publicKey, key.sealed.ciphertext, key.sealed.iv, key.sealed.tag, key.sealed.wrappedKey, key.sealed.keyId],
  );
  return rows.length > 0;
}

/** A project's checkout keys, the preferred one first. */
export async function listCheckoutKeys(db: Queryable, projectId: string): Promise<CheckoutKeyRow[]> {
  return db.query<CheckoutKeyRow>(`SELECT ${CHECKOUT_COLUMNS} FROM project_checkout_keys WHERE project_id = $1 ORDER BY ${PREFERENCE}`, [projectId]);
}

/** One checkout key by either fingerprint. */
export async function checkoutKeyBy(db: Queryable, projectId: string, kind: 'md5' | 'sha256', fingerprint: string): Promise<CheckoutKeyRow | undefined> {
  const [row] = await db.query<CheckoutKeyRow>(
    `SELECT * FROM (SELECT ${CHECKOUT_COLUMNS} FROM project_checkout_keys WHERE project_id = $1) k WHERE ${column(kind)} = $2`,
    [projectId, fingerprint],
  );
  return row;
}

/** Deletes a checkout key by either fingerprint; answers its row (MD5 fingerprint, type) when there was one. */
export async function deleteCheckoutKey(tx: Queryable, projectId: string, kind: 'md5' | 'sha256', fingerprint: string): Promise<{ fingerprint: string; type: CheckoutKeyType } | undefined> {
  const [row] = await tx.query<{ fingerprint: string; type: CheckoutKeyType }>(
    `DELETE FROM project_checkout_keys WHERE project_id = $1 AND ${column(kind)} = $2 RETURNING fingerprint, type`,
    [projectId, fingerprint],
  );
  return row;
}

/** The preferred checkout key with its sealed private half. */
export async function sealedPreferredCheckoutKey(db: Queryable, projectId: string): Promise<(CheckoutKeyRow & SealedColumns) | undefined> {
  const [row] = await db.query<CheckoutKeyRow & SealedColumns>(
    `SELECT fingerprint, fingerprint_sha256, type, public_key, created_at, true AS preferred, ciphertext, iv, tag, wrapped_key, key_id
       FROM project_checkout_keys WHERE project_id = $1 ORDER BY ${PREFERENCE} LIMIT 1`,
    [projectId],
  );
  return row;
}

// --- Additional SSH keys -----------------------------------------------------------------------------

export async function countSshKeys(db: Queryable, projectId: string): Promise<number> {
  const [{ count }] = await db.query<{ count: number }>('SELECT count(*)::int AS count FROM project_ssh_keys WHERE project_id = $1', [projectId]);
  return count;
}

/** Adds a key for a host name, or replaces the one with the same fingerprint and host name; answers its row and whether it is new. */
export async function putSshKey(
  tx: Queryable,
  key: { projectId: string; fingerprint: string; fingerprintSha256: string; hostname: string; publicKey: string; sealed: Sealed },
): Promise<SshKeyRow & { created: boolean }> {
  const [row] = await tx.query<SshKeyRow & { created: boolean }>(
    `INSERT INTO project_ssh_keys (project_id, fingerprint, fingerprint_sha256, hostname, public_key, ciphertext, iv, tag, wrapped_key, key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (project_id, fingerprint, hostname) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, iv = EXCLUDED.iv, tag = EXCLUDED.tag,
       wrapped_key = EXCLUDED.wrapped_key, key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key
     RETURNING ${SSH_COLUMNS}, (xmax = 0) AS created`,
    [key.projectId, key.fingerprint, key.fingerprintSha256, key.hostname, key.publicKey, key.sealed.ciphertext, key.sealed.iv, key.sealed.tag, key.sealed.wrappedKey, key.sealed.keyId],
  );
  return row;
}

export async function listSshKeys(db: Queryable, projectId: string): Promise<SshKeyRow[]> {
  return db.query<SshKeyRow>(`SELECT ${SSH_COLUMNS} FROM project_ssh_keys WHERE project_id = $1 ORDER BY created_at, fingerprint, hostname`, [projectId]);
}

/**
 * Deletes a project's additional keys with this fingerprint: for one host name, or (hostname
 * undefined) for every host name it was added for. Answers the rows deleted.
 */
export async function deleteSshKeys(tx: Queryable, projectId: string, kind: 'md5' | 'sha256', fingerprint: string, hostname: string | undefined): Promise<SshKeyRow[]> {
  return tx.query<SshKeyRow>(
    `DELETE FROM project_ssh_keys WHERE project_id = $1 AND ${column(kind)} = $2 AND ($3::text IS NULL OR hostname = $3) RETURNING ${SSH_COLUMNS}`,
    [projectId, fingerprint, hostname ?? null],
  );
}

/** A project's additional keys with their sealed private halves, in the order they were added. */
export async function sealedSshKeys(db: Queryable, projectId: string): Promise<(SshKeyRow & SealedColumns)[]> {
  return db.query<SshKeyRow & SealedColumns>(
    `SELECT ${SSH_COLUMNS}, ciphertext, iv, tag, wrapped_key, key_id FROM project_ssh_keys WHERE project_id = $1 ORDER BY created_at, fingerprint, hostname`,
    [projectId],
  );
}
