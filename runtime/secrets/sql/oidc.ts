import type { Queryable } from '../../store/store';

/**
 * The SQL of OIDC tokens for jobs (../oidc-tokens.ts): organisations' signing keys (the private
 * key only sealed) and their custom claims. One function per statement; ids are checked to look
 * like UUIDs by the caller before they reach a `uuid` parameter.
 */

export interface SigningKeyRow {
  kid: string;
  organization_id: string;
  alg: string;
  public_jwk: Record<string, unknown>;
  ciphertext: Buffer;
  iv: Buffer;
  tag: Buffer;
  wrapped_key: Buffer;
  key_id: string;
  state: 'active' | 'retired';
  created_at: Date;
  retires_at: Date;
}

const KEY_COLUMNS = 'kid, organization_id, alg, public_jwk, ciphertext, iv, tag, wrapped_key, key_id, state, created_at, retires_at';

/** The organisation of this id, if there is one. */
export async function orgById(db: Queryable, orgId: string): Promise<{ id: string; name: string } | undefined> {
  const [row] = await db.query<{ id: string; name: string }>('SELECT id, name FROM organizations WHERE id = $1', [orgId]);
  return row;
}

/** The project of this id, with its organisation's name, if it is one of the organisation `orgId`'s. */
export async function projectOfOrg(db: Queryable, orgId: string, projectId: string): Promise<{ id: string; slug: string; org: string } | undefined> {
  const [row] = await db.query<{ id: string; slug: string; org: string }>(
    'SELECT pr.id, pr.slug, pr.org FROM projects pr JOIN organizations o ON o.name = pr.org WHERE pr.id = $1 AND o.id = $2',
    [projectId, orgId],
  );
  return row;
}

/** The key an organisation signs with now. */
export async function activeKey(db: Queryable, orgId: string): Promise<SigningKeyRow | undefined> {
  const [row] = await db.query<SigningKeyRow>(`SELECT ${KEY_COLUMNS} FROM oidc_signing_keys WHERE organization_id = $1 AND state = 'active'`, [orgId]);
  return row;
}

/** The public keys to publish: the active one first, then those retired after `retiredSince`, newest first. */
export async function publishedKeys(db: Queryable, orgId: string, retiredSince: Date): Promise<{ kid: string; public_jwk: Record<string, unknown> }[]> {
  return db.query(
    `SELECT kid, public_jwk FROM oidc_signing_keys
      WHERE organization_id = $1 AND (state = 'active' OR retires_at > $2)
      ORDER BY state = 'active' DESC, created_at DESC`,
    [orgId, retiredSince],
  );
}

/** Organisations that have signing keys (what a rotation of every organisation goes through). */
export async function orgsWithKeys(db: Queryable): Promise<string[]> {
  return (await db.query<{ organization_id: string }>(`SELECT DISTINCT organization_id FROM oidc_signing_keys WHERE state = 'active' ORDER BY organization_id`)).map((r) => r.organization_id);
}

/** Organisations whose active key is due to be replaced at `now`. */
export async function orgsDueForRotation(db: Queryable, now: Date): Promise<string[]> {
  return (await db.query<{ organization_id: string }>(`SELECT organization_id FROM oidc_signing_keys WHERE state = 'active' AND retires_at <= $1 ORDER BY organization_id`, [now])).map((r) => r.organization_id);
}

/**
 * Adds an organisation's active key, unless it has one already (another process made it first):
 * answers whether this one went in.
 */
export async function insertActiveKey(tx: Queryable, row: Omit<SigningKeyRow, 'state'>): Promise<boolean> {
  const made = await tx.query(
    `INSERT INTO oidc_signing_keys (kid, organization_id, alg, public_jwk, ciphertext, iv, tag, wrapped_key, key_id, state, created_at, retires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11)
     ON CONFLICT (organization_id) WHERE state = 'active' DO NOTHING
     RETURNING kid`,
    [row.kid, row.organization_id, row.alg, JSON.stringify(row.public_jwk), row.ciphertext, row.iv, row.tag, row.wrapped_key, row.key_id, row.created_at, row.retires_at],
  );
  return made.length === 1;
}

/** Retires the active key `kid` as of `at`; false when it is not the active key any more (rotated meanwhile). */
export async function retireKey(tx: Queryable, kid: string, at: Date): Promise<boolean> {
  const done = await tx.query(`UPDATE oidc_signing_keys SET state = 'retired', retires_at = $2 WHERE kid = $1 AND state = 'active' RETURNING kid`, [kid, at]);
  return done.length === 1;
}

/** Deletes keys retired before `before` (no token they signed is still valid); answers how many. */
export async function deleteRetiredKeys(db: Queryable, before: Date): Promise<number> {
  return (await db.query(`DELETE FROM oidc_signing_keys WHERE state = 'retired' AND retires_at < $1 RETURNING kid`, [before])).length;
}

// --- Custom claims ------------------------------------------------------------------------------

export interface ClaimsRow {
  organization_id: string;
  project_id: string | null;
  audience: string[] | null;
  audience_updated_at: Date | null;
  ttl: string | null;
  ttl_updated_at: Date | null;
}

const CLAIM_COLUMNS = 'organization_id, project_id, audience, audience_updated_at, ttl, ttl_updated_at';

/** The organisation's own custom claims (`projectId` null) or one project's. */
export async function claimsOf(db: Queryable, orgId: string, projectId: string | null): Promise<ClaimsRow | undefined> {
  const [row] = await db.query<ClaimsRow>(
    `SELECT ${CLAIM_COLUMNS} FROM oidc_custom_claims WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2::uuid`,
    [orgId, projectId],
  );
  return row;
}

/** KEY_COLUMNS of the table aliased `k`. */
const KEY_COLUMNS_OF_K = KEY_COLUMNS.split(', ')
  .map((c) => `k.${c}`)
  .join(', ');

/** A token's custom claims, where set: the organisation's and the project's. */
export interface TokenClaims {
  audience: string[] | null;
  ttl: string | null;
}

/**
 * What minting a project's token reads, in one statement (on the way to every task's first
 * command): whether the project is the organisation's, the organisation's custom claims and the
 * project's, and the organisation's active signing key. Each join finds one row at most (the
 * unique indexes of 510_oidc.sql).
 */
export async function mintInputs(db: Queryable, orgId: string, projectId: string): Promise<{ projectIsOrgs: boolean; claims: { org?: TokenClaims; project?: TokenClaims }; active?: SigningKeyRow }> {
  const [row] = await db.query<SigningKeyRow & { project_id: string | null; org_claims: boolean; org_audience: string[] | null; org_ttl: string | null; project_claims: boolean; project_audience: string[] | null; project_ttl: string | null }>(
    `SELECT pr.id AS project_id,
            oc.organization_id IS NOT NULL AS org_claims, oc.audience AS org_audience, oc.ttl AS org_ttl,
            pc.organization_id IS NOT NULL AS project_claims, pc.audience AS project_audience, pc.ttl AS project_ttl,
            ${KEY_COLUMNS_OF_K}
       FROM (SELECT $1::uuid AS org_id, $2::uuid AS project_id) asked
       LEFT JOIN (projects pr JOIN organizations o ON o.name = pr.org) ON pr.id = asked.project_id AND o.id = asked.org_id
       LEFT JOIN oidc_custom_claims oc ON oc.organization_id = asked.org_id AND oc.project_id IS NULL
       LEFT JOIN oidc_custom_claims pc ON pc.organization_id = asked.org_id AND pc.project_id = asked.project_id
       LEFT JOIN oidc_signing_keys k ON k.organization_id = asked.org_id AND k.state = 'active'`,
    [orgId, projectId],
  );
  const { project_id, org_claims, org_audience, org_ttl, project_claims, project_audience, project_ttl, ...active } = row;
  return {
    projectIsOrgs: project_id !== null,
    claims: {
      ...(org_claims ? { org: { audience: org_audience, ttl: org_ttl } } : {}),
      ...(project_claims ? { project: { audience: project_audience, ttl: project_ttl } } : {}),
    },
    ...(active.kid !== null ? { active: active as SigningKeyRow } : {}),
  };
}

/**
 * Sets the claims given (undefined: leave as is), stamping each one set with `at`, making the row
 * if there is none; answers the row after.
 */
export async function setClaims(tx: Queryable, orgId: string, projectId: string | null, claims: { audience?: string[]; ttl?: string }, at: Date): Promise<ClaimsRow> {
  const params = [orgId, projectId, claims.audience ?? null, claims.audience !== undefined, claims.ttl ?? null, claims.ttl !== undefined, at];
  const values = `($1, $2::uuid, CASE WHEN $4 THEN $3::text[] END, CASE WHEN $4 THEN $7::timestamptz END, CASE WHEN $6 THEN $5::text END, CASE WHEN $6 THEN $7::timestamptz END, $7)`;
  const update = `audience = CASE WHEN $4 THEN $3::text[] ELSE c.audience END,
    audience_updated_at = CASE WHEN $4 THEN $7::timestamptz ELSE c.audience_updated_at END,
    ttl = CASE WHEN $6 THEN $5::text ELSE c.ttl END,
    ttl_updated_at = CASE WHEN $6 THEN $7::timestamptz ELSE c.ttl_updated_at END,
    updated_at = $7`;
  const conflict = projectId === null ? '(organization_id) WHERE project_id IS NULL' : '(project_id) WHERE project_id IS NOT NULL';
  const [row] = await tx.query<ClaimsRow>(
    `INSERT INTO oidc_custom_claims AS c (organization_id, project_id, audience, audience_updated_at, ttl, ttl_updated_at, updated_at)
     VALUES ${values}
     ON CONFLICT ${conflict} DO UPDATE SET ${update}
     RETURNING ${CLAIM_COLUMNS}`,
    params,
  );
  return row;
}

/** Unsets the claims named; the row goes when nothing is left set. Answers what is left, if anything. */
export async function clearClaims(tx: Queryable, orgId: string, projectId: string | null, which: { audience: boolean; ttl: boolean }, at: Date): Promise<ClaimsRow | undefined> {
  const [row] = await tx.query<ClaimsRow>(
    `UPDATE oidc_custom_claims SET
       audience = CASE WHEN $3 THEN NULL ELSE audience END,
       audience_updated_at = CASE WHEN $3 THEN NULL ELSE audience_updated_at END,
       ttl = CASE WHEN $4 THEN NULL ELSE ttl END,
       ttl_updated_at = CASE WHEN $4 THEN NULL ELSE ttl_updated_at END,
       updated_at = $5
     WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2::uuid
     RETURNING ${CLAIM_COLUMNS}`,
    [orgId, projectId, which.audience, which.ttl, at],
  );
  if (row && row.audience === null && row.ttl === null) {
    await tx.query('DELETE FROM oidc_custom_claims WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2::uuid', [orgId, projectId]);
    return undefined;
  }
  return row;
}
