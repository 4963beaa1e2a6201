import type { Sealed } from '../secret-box';
import type { Queryable } from '../../store/store';

/**
 * Contexts, their variables (sealed) and restrictions, and projects' own variables (sealed): plain
 * SQL, one function per statement. Nothing here sees a plaintext; values come and go as `Sealed`.
 */

export interface OrgRow {
  id: string;
  name: string;
}

export interface ContextRow {
  id: string;
  name: string;
  organization_id: string;
  org: string;
  created_at: Date | string;
}

/** A variable's row without its sealed value: what a list shows. */
export interface VariableRow {
  name: string;
  last4: string;
  created_at: Date | string;
  updated_at: Date | string;
}

export interface SealedRow extends VariableRow {
  ciphertext: Buffer;
  iv: Buffer;
  tag: Buffer;
  wrapped_key: Buffer;
  key_id: string;
}

export interface RestrictionRow {
  id: string;
  context_id: string;
  restriction_type: 'project' | 'expression' | 'group';
  restriction_value: string;
  name: string | null;
  created_at: Date | string;
}

const bytes = (v: unknown): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array));

/** The sealed value of a row, as the SecretBox takes it. */
export function sealedOf(row: SealedRow): Sealed {
  return { ciphertext: bytes(row.ciphertext), iv: bytes(row.iv), tag: bytes(row.tag), wrappedKey: bytes(row.wrapped_key), keyId: row.key_id };
}

// --- Organisations and projects ----------------------------------------------------------------

export async function orgById(db: Queryable, id: string): Promise<OrgRow | undefined> {
  const [row] = await db.query<OrgRow>('SELECT id, name FROM organizations WHERE id = $1', [id]);
  return row;
}

export async function orgByName(db: Queryable, name: string): Promise<OrgRow | undefined> {
  const [row] = await db.query<OrgRow>('SELECT id, name FROM organizations WHERE name = $1', [name]);
  return row;
}

export interface ProjectRow {
  id: string;
  slug: string;
  org: string;
  /** null when the organisation has no row yet. */
  organization_id: string | null;
  /** Whether pipelines of forked pull requests get the project's variables and contexts. */
  forks_receive_secret_env_vars: boolean;
}

/** A project with the id of its organisation and what its secrets may reach. */
export async function projectById(db: Queryable, id: string): Promise<ProjectRow | undefined> {
  const [row] = await db.query<ProjectRow>(
    'SELECT pr.id, pr.slug, pr.org, o.id AS organization_id, pr.forks_receive_secret_env_vars FROM projects pr LEFT JOIN organizations o ON o.name = pr.org WHERE pr.id = $1',
    [id],
  );
  return row;
}

// --- Contexts ------------------------------------------------------------------------------------

const CONTEXT_COLUMNS = 'c.id, c.name, c.organization_id, o.name AS org, c.created_at';

export async function insertContext(tx: Queryable, c: { id: string; orgId: string; name: string }): Promise<ContextRow | undefined> {
  const [row] = await tx.query<ContextRow>(
    `WITH made AS (INSERT INTO contexts (id, organization_id, name) VALUES ($1, $2, $3) ON CONFLICT (organization_id, name) DO NOTHING RETURNING *)
     SELECT ${CONTEXT_COLUMNS} FROM made c JOIN organizations o ON o.id = c.organization_id`,
    [c.id, c.orgId, c.name],
  );
  return row;
}

/** A context by id; `lock` holds it until the transaction ends (variable writes take it, to count). */
export async function contextById(db: Queryable, id: string, lock = false): Promise<ContextRow | undefined> {
  const [row] = await db.query<ContextRow>(`SELECT ${CONTEXT_COLUMNS} FROM contexts c JOIN organizations o ON o.id = c.organization_id WHERE c.id = $1${lock ? ' FOR UPDATE OF c' : ''}`, [id]);
  return row;
}

export async function contextByName(db: Queryable, orgId: string, name: string): Promise<ContextRow | undefined> {
  const [row] = await db.query<ContextRow>(`SELECT ${CONTEXT_COLUMNS} FROM contexts c JOIN organizations o ON o.id = c.organization_id WHERE c.organization_id = $1 AND c.name = $2`, [orgId, name]);
  return row;
}

/** An organisation's contexts by name, after `after`. */
export async function listContexts(db: Queryable, orgId: string, after: string | undefined, limit: number): Promise<ContextRow[]> {
  return db.query<ContextRow>(
    `SELECT ${CONTEXT_COLUMNS} FROM contexts c JOIN organizations o ON o.id = c.organization_id
      WHERE c.organization_id = $1 AND ($2::text IS NULL OR c.name > $2) ORDER BY c.name LIMIT $3`,
    [orgId, after ?? null, limit],
  );
}

export async function deleteContext(tx: Queryable, id: string): Promise<{ variables: number; restrictions: number } | undefined> {
  const [counts] = await tx.query<{ variables: number; restrictions: number }>(
    `SELECT (SELECT count(*)::int FROM context_variables WHERE context_id = $1) AS variables,
            (SELECT count(*)::int FROM context_restrictions WHERE context_id = $1) AS restrictions`,
    [id],
  );
  const gone = await tx.query('DELETE FROM contexts WHERE id = $1 RETURNING id', [id]);
  return gone.length > 0 ? counts : undefined;
}

// --- Sealed variables (a context's or a project's) ------------------------------------------------

/** Where variables live: a context's (`context_variables`) or a project's (`project_variables`). */
export type VariableTable = { readonly table: 'context_variables'; readonly owner: 'context_id' } | { readonly table: 'project_variables'; readonly owner: 'project_id' };
export const CONTEXT_VARIABLES: VariableTable = { table: 'context_variables', owner: 'context_id' };
export const PROJECT_VARIABLES: VariableTable = { table: 'project_variables', owner: 'project_id' };

export async function countVariables(db: Queryable, where: VariableTable, ownerId: string): Promise<number> {
  const [{ count }] = await db.query<{ count: number }>(`SELECT count(*)::int AS count FROM ${where.table} WHERE ${where.owner} = $1`, [ownerId]);
  return count;
}

export async function variableExists(db: Queryable, where: VariableTable, ownerId: string, name: string): Promise<boolean> {
  return (await db.query(`SELECT 1 FROM ${where.table} WHERE ${where.owner} = $1 AND name = $2`, [ownerId, name])).length > 0;
}

/** Inserts or replaces a variable; answers its row (without the sealed value) and whether it was new. */
export async function putVariable(tx: Queryable, where: VariableTable, ownerId: string, name: string, sealed: Sealed, last4: string): Promise<VariableRow & { created: boolean }> {
  const [row] = await tx.query<VariableRow & { created: boolean }>(
    `INSERT INTO ${where.table} (${where.owner}, name, ciphertext, iv, tag, wrapped_key, key_id, last4) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (${where.owner}, name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, iv = EXCLUDED.iv, tag = EXCLUDED.tag,
       wrapped_key = EXCLUDED.wrapped_key, key_id = EXCLUDED.key_id, last4 = EXCLUDED.last4, updated_at = now()
     RETURNING name, last4, created_at, updated_at, (xmax = 0) AS created`,
    [ownerId, name, sealed.ciphertext, sealed.iv, sealed.tag, sealed.wrappedKey, sealed.keyId, last4],
  );
  return row;
}

export async function listVariables(db: Queryable, where: VariableTable, ownerId: string, after: string | undefined, limit: number): Promise<VariableRow[]> {
  return db.query<VariableRow>(
    `SELECT name, last4, created_at, updated_at FROM ${where.table} WHERE ${where.owner} = $1 AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3`,
    [ownerId, after ?? null, limit],
  );
}

export async function variableByName(db: Queryable, where: VariableTable, ownerId: string, name: string): Promise<VariableRow | undefined> {
  const [row] = await db.query<VariableRow>(`SELECT name, last4, created_at, updated_at FROM ${where.table} WHERE ${where.owner} = $1 AND name = $2`, [ownerId, name]);
  return row;
}

/** Every variable of an owner with its sealed value, by name (for the one place values are opened). */
export async function sealedVariables(db: Queryable, where: VariableTable, ownerId: string): Promise<SealedRow[]> {
  return db.query<SealedRow>(
    `SELECT name, last4, created_at, updated_at, ciphertext, iv, tag, wrapped_key, key_id FROM ${where.table} WHERE ${where.owner} = $1 ORDER BY name`,
    [ownerId],
  );
}

export async function deleteVariable(tx: Queryable, where: VariableTable, ownerId: string, name: string): Promise<boolean> {
  return (await tx.query(`DELETE FROM ${where.table} WHERE ${where.owner} = $1 AND name = $2 RETURNING name`, [ownerId, name])).length > 0;
}

// --- Restrictions ------------------------------------------------------------------------------------

export async function insertRestriction(
  tx: Queryable,
  r: { id: string; contextId: string; type: RestrictionRow['restriction_type']; value: string; name: string | null },
): Promise<RestrictionRow | undefined> {
  const [row] = await tx.query<RestrictionRow>(
    `INSERT INTO context_restrictions (id, context_id, restriction_type, restriction_value, name) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (context_id, restriction_type, restriction_value) DO NOTHING RETURNING *`,
    [r.id, r.contextId, r.type, r.value, r.name],
  );
  return row;
}

export async function listRestrictions(db: Queryable, contextId: string): Promise<RestrictionRow[]> {
  return db.query<RestrictionRow>('SELECT * FROM context_restrictions WHERE context_id = $1 ORDER BY created_at, id', [contextId]);
}

export async function countRestrictions(db: Queryable, contextId: string): Promise<number> {
  const [{ count }] = await db.query<{ count: number }>('SELECT count(*)::int AS count FROM context_restrictions WHERE context_id = $1', [contextId]);
  return count;
}

export async function deleteRestriction(tx: Queryable, contextId: string, id: string): Promise<RestrictionRow | undefined> {
  const [row] = await tx.query<RestrictionRow>('DELETE FROM context_restrictions WHERE context_id = $1 AND id = $2 RETURNING *', [contextId, id]);
  return row;
}
