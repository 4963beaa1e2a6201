import { randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { Audit } from '../audit/audit-log';
import { InputError, NotFoundError } from '../domain/errors';
import type { Store } from '../store/store';
import type { Sealed, SecretBox } from './secret-box';
import * as sql from './sql/oidc';

/**
 * OpenID Connect ID tokens for jobs, as CircleCI issues them: `CIRCLE_OIDC_TOKEN` and
 * `CIRCLE_OIDC_TOKEN_V2` (which differ only in `sub`), signed RS256 by a key of the job's
 * organisation, with CircleCI's claim names, so a cloud's trust policy written for CircleCI
 * (`oidc.circleci.com/org/<id>:sub`, `oidc.circleci.com/project-id`, …) works unchanged once its
 * provider URL is Gyre's issuer, `<GYRE_PUBLIC_URL>/org/<organization id>` (or
 * GYRE_JOB_OIDC_ISSUER_URL's, when the documents are published to a public bucket).
 *
 * - `iss`: the organisation's issuer; `aud`: the organisation id, or the custom claims' audience;
 *   `iat`, `exp` (one hour later, or the custom claims' `ttl`), `jti`.
 * - `sub`: `org/<org>/project/<project>/user/<user>` (v1); v2 adds
 *   `/vcs-origin/<origin>/vcs-ref/<ref>` when the pipeline came from a repository.
 * - `oidc.circleci.com/…`: org-id, project-id, pipeline-id, context-ids, ssh-rerun, and when known
 *   vcs-origin, vcs-ref, workflow-id, job-id, pipeline-definition-id.
 *
 * Each organisation has its own keys (made on its first token): a token of one organisation never
 * verifies under another's keys. Private keys are stored only sealed by the SecretBox, bound to
 * their organisation and kid, and opened into memory when first needed. The active key is replaced
 * after `rotateAfterDays`; a replaced key stays in the JWKS for `keepRetiredDays`, so tokens it
 * signed keep verifying until they expire.
 */

/** The algorithm CircleCI signs job tokens with, and Gyre too. */
export const OIDC_ALG = 'RS256';

/** CircleCI's names of the claims about the job. */
export const OIDC_CLAIMS = {
  orgId: 'oidc.circleci.com/org-id',
  projectId: 'oidc.circleci.com/project-id',
  pipelineId: 'oidc.circleci.com/pipeline-id',
  pipelineDefinitionId: 'oidc.circleci.com/pipeline-definition-id',
  workflowId: 'oidc.circleci.com/workflow-id',
  jobId: 'oidc.circleci.com/job-id',
  contextIds: 'oidc.circleci.com/context-ids',
  vcsOrigin: 'oidc.circleci.com/vcs-origin',
  vcsRef: 'oidc.circleci.com/vcs-ref',
  sshRerun: 'oidc.circleci.com/ssh-rerun',
} as const;

/** A token's lifetime unless custom claims say otherwise (CircleCI's: one hour). */
export const DEFAULT_TTL = '1h';
/** The shortest and longest `ttl` custom claims may set. */
export const MIN_TTL_MS = 60_000;
export const MAX_TTL_MS = 24 * 3600_000;
/** At most this many audiences in custom claims. */
export const MAX_AUDIENCES = 10;

/** The user in `sub` of a job no user started (a schedule, a webhook): the nil UUID, which no user has. */
export const NO_USER = '00000000-0000-0000-0000-000000000000';

const DAY_MS = 24 * 3600_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** `vcs-origin` or `vcs-ref` as a path segment: in a value it would let `sub` pass for another origin or ref. */
const SUB_MARKER = /(^|\/)vcs-(origin|ref)(\/|$)/;
const CONTROL_OR_SPACE = /[\u0000-\u0020\u007f-\u009f]/;

/** What a job's tokens say about it. */
export interface MintInput {
  readonly orgId: string;
  readonly projectId: string;
  /** The user who caused the job to run; without one (a schedule), `sub` names NO_USER. */
  readonly userId?: string;
  /** The contexts the job uses (an empty list for none). */
  readonly contextIds: readonly string[];
  /** The repository, as `host/path` (`github.com/acme/app`, see `vcsOriginOf`); absent for a pipeline from no repository. */
  readonly vcsOrigin?: string;
  /** The ref built, `refs/heads/<branch>` or `refs/tags/<tag>`; absent with `vcsOrigin`. */
  readonly vcsRef?: string;
  readonly pipelineId: string;
  readonly pipelineDefinitionId?: string;
  readonly workflowId?: string;
  readonly jobId?: string;
  /** The job is a rerun with SSH (someone may be at its shell). @default false */
  readonly sshRerun?: boolean;
}

/** The OpenID Provider configuration of an organisation's issuer (`/.well-known/openid-configuration`). */
export interface OpenIdConfiguration {
  readonly issuer: string;
  readonly jwks_uri: string;
  readonly response_types_supported: string[];
  readonly subject_types_supported: string[];
  readonly id_token_signing_alg_values_supported: string[];
  readonly scopes_supported: string[];
  readonly claims_supported: string[];
}

/** An organisation's or a project's custom claims, in CircleCI's `ClaimResponse` shape (fields not set are left out). */
export interface ClaimsView {
  readonly org_id: string;
  readonly project_id?: string;
  readonly audience?: string[];
  readonly audience_updated_at?: string;
  readonly ttl?: string;
  readonly ttl_updated_at?: string;
}

/** The claims custom claims can set. */
export const CUSTOM_CLAIMS = ['audience', 'ttl'] as const;
export type CustomClaim = (typeof CUSTOM_CLAIMS)[number];

/**
 * Custom claims (CircleCI's `/org/{orgID}/oidc-custom-claims` and the project variant): `audience`
 * replaces `aud`, `ttl` the lifetime, for the organisation's tokens or one project's (the project's
 * win, claim by claim). `projectId` undefined means the organisation's own. Changes record
 * themselves in the audit log in their transaction.
 */
export interface OidcCustomClaims {
  get(orgId: string, projectId?: string): Promise<ClaimsView>;
  /** Sets `audience`, `ttl` or both; the others stay as they are. */
  patch(orgId: string, projectId: string | undefined, changes: { audience?: readonly string[]; ttl?: string }, audit?: Audit): Promise<ClaimsView>;
  /** Unsets the claims named (the defaults apply again); answers what is left. */
  remove(orgId: string, projectId: string | undefined, claims: readonly CustomClaim[], audit?: Audit): Promise<ClaimsView>;
}

export interface OidcIssuer {
  /** Both tokens of a job. A NotFoundError when the project is not one of the organisation's; an InputError names a value that cannot go in a token. */
  mint(input: MintInput): Promise<{ v1: string; v2: string }>;
  /** The organisation's issuer URL (`iss`). */
  issuer(orgId: string): string;
  /** The public keys tokens of the organisation verify with: the active key and the retired ones still published. A NotFoundError for an unknown organisation. */
  jwks(orgId: string): Promise<{ keys: JWK[] }>;
  /** The organisation's OpenID Provider configuration. A NotFoundError for an unknown organisation. */
  discovery(orgId: string): Promise<OpenIdConfiguration>;
  /** Replaces the active key now: one organisation's (made if it has none), or every organisation's that has one. Retired keys past `keepRetiredDays` are deleted. */
  rotate(orgId?: string): Promise<void>;
  /**
   * Makes the organisation's active key if it has none (or replaces it when due) and opens it in
   * this process, so its first job's tokens do not wait for an RSA key to be made (90–300 ms of
   * CPU). Done when a project is added. A NotFoundError for an unknown organisation.
   */
  prepare(orgId: string): Promise<void>;
  /** Replaces the keys that are due (older than `rotateAfterDays`); answers the organisations rotated. For a periodic sweep: `mint` also replaces a due key before it signs. */
  rotateDue(): Promise<string[]>;
  readonly customClaims: OidcCustomClaims;
}

export interface OidcIssuerOptions {
  readonly store: Store;
  /** Seals private keys at rest; the key wrapper behind it is the only way to open them. */
  readonly box: SecretBox;
  /** The base of issuer URLs: GYRE_JOB_OIDC_ISSUER_URL when set, else GYRE_PUBLIC_URL (read per call, so it may be known only once the server listens). */
  publicUrl(): string;
  readonly now?: () => Date;
  /** Days a key signs before it is replaced. @default 30 */
  readonly rotateAfterDays?: number;
  /** Days a replaced key stays published (at least 1: the longest token lifetime). @default 7 */
  readonly keepRetiredDays?: number;
  /**
   * Where the organisation's documents are published when its keys change
   * (GYRE_JOB_OIDC_PUBLISH_BUCKET; `publishOidcDocuments`). A new key is published before it is
   * stored, and a key is found to sign with only once stored (by this process or another), so a
   * verifier reading the published JWKS finds every key a token names.
   */
  readonly publish?: {
    readonly put: PutObject;
    /** A publication that failed; the key change goes on. Without it, the failure fails the change. */
    readonly failed?: (orgId: string, error: Error) => void;
  };
}

/** Makes the issuer of every organisation's job tokens. */
export function createOidcIssuer(options: OidcIssuerOptions): OidcIssuer {
  const { store, box } = options;
  const now = options.now ?? (() => new Date());
  const rotateAfterDays = options.rotateAfterDays ?? 30;
  const keepRetiredDays = options.keepRetiredDays ?? 7;
  if (!(rotateAfterDays > 0)) throw new Error(`rotateAfterDays must be more than 0 (got ${rotateAfterDays})`);
  if (!(keepRetiredDays >= MAX_TTL_MS / DAY_MS)) throw new Error(`keepRetiredDays must be at least ${MAX_TTL_MS / DAY_MS}, the longest token lifetime (got ${keepRetiredDays})`);

  /** Private keys opened from their sealed rows, by kid. */
  const privateKeys = new Map<string, Promise<CryptoKey>>();
  /** Key changes under way in this process, by organisation, so concurrent first tokens make one key. */
  const changing = new Map<string, Promise<void>>();

  const issuerOf = (orgId: string) => `${options.publicUrl().replace(/\/+$/, '')}/org/${orgId}`;
  const contextOf = (orgId: string, kid: string) => `oidc-signing-key:${orgId}:${kid}`;

  const orgOrFail = async (orgId: string) => {
    const org = UUID.test(orgId) ? await sql.orgById(store, orgId) : undefined;
    if (!org) throw new NotFoundError('organization', orgId.slice(0, 256));
    return org;
  };

  const makeKey = async (orgId: string): Promise<Omit<sql.SigningKeyRow, 'state'>> => {
    const pair = await generateKeyPair(OIDC_ALG, { modulusLength: 2048, extractable: true });
    const publicJwk = await exportJWK(pair.publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const sealed = await box.seal(JSON.stringify(await exportJWK(pair.privateKey)), contextOf(orgId, kid));
    const at = now();
    return {
      kid,
      organization_id: orgId,
      alg: OIDC_ALG,
      public_jwk: { ...publicJwk, kid, alg: OIDC_ALG, use: 'sig' },
      ciphertext: sealed.ciphertext,
      iv: sealed.iv,
      tag: sealed.tag,
      wrapped_key: sealed.wrappedKey,
      key_id: sealed.keyId,
      created_at: at,
      retires_at: new Date(at.getTime() + rotateAfterDays * DAY_MS),
    };
  };

  /** Publishes the organisation's documents (with `coming`, a key about to be stored), when publishing is set. */
  const publish = async (orgId: string, coming?: JWK) => {
    if (!options.publish) return;
    try {
      await publishOidcDocuments(issuer, options.publish.put, [orgId], coming && { orgId, key: coming });
    } catch (error) {
      if (!options.publish.failed) throw error;
      options.publish.failed(orgId, error as Error);
    }
  };

  /** Makes a new active key, retiring `current` (unless another process replaced it first), published before it is stored. */
  const replaceKey = async (orgId: string, current: string | undefined) => {
    const fresh = await makeKey(orgId);
    await publish(orgId, fresh.public_jwk as JWK);
    const changed = await store.transaction(async (tx) => {
      if (current && !(await sql.retireKey(tx, current, now()))) return false;
      return sql.insertActiveKey(tx, fresh);
    });
    if (changed) {
      if (current) privateKeys.delete(current);
      await sql.deleteRetiredKeys(store, new Date(now().getTime() - keepRetiredDays * DAY_MS));
    }
    // Again, what is stored now: a publication in between (another process's key change, the hourly
    // one of every organisation) wrote the JWKS without this key, or this one's overwrote the key
    // of another process that stored its own first.
    await publish(orgId);
  };

  const once = (orgId: string, change: () => Promise<void>) => {
    let pending = changing.get(orgId);
    if (!pending) {
      pending = change().finally(() => changing.delete(orgId));
      changing.set(orgId, pending);
    }
    return pending;
  };

  const privateKeyOf = (row: sql.SigningKeyRow): Promise<CryptoKey> => {
    let key = privateKeys.get(row.kid);
    if (!key) {
      const sealed: Sealed = { ciphertext: row.ciphertext, iv: row.iv, tag: row.tag, wrappedKey: row.wrapped_key, keyId: row.key_id };
      key = box.open(sealed, contextOf(row.organization_id, row.kid)).then((text) => importJWK(JSON.parse(text) as JWK, OIDC_ALG) as Promise<CryptoKey>);
      privateKeys.set(row.kid, key);
      key.catch(() => privateKeys.delete(row.kid));
    }
    return key;
  };

  /** The organisation's active key (`read`: its row as just read), made (or replaced when due) first if needed. */
  const signingKey = async (orgId: string, read?: sql.SigningKeyRow): Promise<{ kid: string; key: CryptoKey }> => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const row = attempt === 0 && read ? read : await sql.activeKey(store, orgId);
      if (row && row.retires_at.getTime() > now().getTime()) return { kid: row.kid, key: await privateKeyOf(row) };
      await once(orgId, () => replaceKey(orgId, row?.kid));
    }
    throw new Error(`organization ${orgId} has no OIDC signing key after three attempts to make one`);
  };

  const customClaims = createCustomClaims(store, now, orgOrFail);

  const issuer: OidcIssuer = {
    issuer: issuerOf,
    customClaims,

    async mint(input) {
      checkMintInput(input);
      // On the way to every task's first command: what it reads is one statement, and the two
      // tokens are signed at once. A key is made only once the project is known to be the organisation's.
      const { projectIsOrgs, claims: custom, active } = await sql.mintInputs(store, input.orgId, input.projectId);
      if (!projectIsOrgs) throw new NotFoundError('project', `${input.projectId} of organization ${input.orgId}`);
      const audience = custom.project?.audience ?? custom.org?.audience ?? [input.orgId];
      const ttlSeconds = Math.floor(parseTtl(custom.project?.ttl ?? custom.org?.ttl ?? DEFAULT_TTL, 'ttl') / 1000);
      const { kid, key } = await signingKey(input.orgId, active);
      const iat = Math.floor(now().getTime() / 1000);
      const v1Subject = `org/${input.orgId}/project/${input.projectId}/user/${input.userId ?? NO_USER}`;
      const fromRepository = input.vcsOrigin !== undefined && input.vcsRef !== undefined;
      const v2Subject = fromRepository ? `${v1Subject}/vcs-origin/${input.vcsOrigin}/vcs-ref/${input.vcsRef}` : v1Subject;
      const claims: Record<string, unknown> = {
        iss: issuerOf(input.orgId),
        aud: audience.length === 1 ? audience[0] : audience,
        iat,
        exp: iat + ttlSeconds,
        [OIDC_CLAIMS.orgId]: input.orgId,
        [OIDC_CLAIMS.projectId]: input.projectId,
        [OIDC_CLAIMS.pipelineId]: input.pipelineId,
        [OIDC_CLAIMS.contextIds]: [...input.contextIds],
        [OIDC_CLAIMS.sshRerun]: input.sshRerun ?? false,
        ...(input.pipelineDefinitionId ? { [OIDC_CLAIMS.pipelineDefinitionId]: input.pipelineDefinitionId } : {}),
        ...(input.workflowId ? { [OIDC_CLAIMS.workflowId]: input.workflowId } : {}),
        ...(input.jobId ? { [OIDC_CLAIMS.jobId]: input.jobId } : {}),
        ...(fromRepository ? { [OIDC_CLAIMS.vcsOrigin]: input.vcsOrigin, [OIDC_CLAIMS.vcsRef]: input.vcsRef } : {}),
      };
      const sign = (sub: string) => new SignJWT({ ...claims, sub, jti: randomUUID() }).setProtectedHeader({ alg: OIDC_ALG, kid, typ: 'JWT' }).sign(key);
      const [v1, v2] = await Promise.all([sign(v1Subject), sign(v2Subject)]);
      return { v1, v2 };
    },

    async jwks(orgId) {
      await orgOrFail(orgId);
      const rows = await sql.publishedKeys(store, orgId, new Date(now().getTime() - keepRetiredDays * DAY_MS));
      return { keys: rows.map((r) => r.public_jwk as JWK) };
    },

    async discovery(orgId) {
      await orgOrFail(orgId);
      const issuer = issuerOf(orgId);
      return {
        issuer,
        jwks_uri: `${issuer}/.well-known/jwks-pub.json`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: [OIDC_ALG],
        scopes_supported: ['openid'],
        claims_supported: ['aud', 'exp', 'iat', 'iss', 'jti', 'sub', ...Object.values(OIDC_CLAIMS)],
      };
    },

    async prepare(orgId) {
      await orgOrFail(orgId);
      await signingKey(orgId);
    },

    async rotate(orgId) {
      const orgs = orgId === undefined ? await sql.orgsWithKeys(store) : [(await orgOrFail(orgId)).id];
      for (const org of orgs) await replaceKey(org, (await sql.activeKey(store, org))?.kid);
    },

    async rotateDue() {
      const due = await sql.orgsDueForRotation(store, now());
      for (const org of due) await once(org, async () => replaceKey(org, (await sql.activeKey(store, org))?.kid));
      return due;
    },
  };
  return issuer;
}

function createCustomClaims(store: Store, now: () => Date, orgOrFail: (orgId: string) => Promise<{ id: string; name: string }>): OidcCustomClaims {
  /**
   * The organisation, and the project when one is named. A project that is not the organisation's
   * is not found, in the words the HTTP boundary uses for a project the caller cannot see, whether
   * or not the organisation exists: nothing about another organisation shows.
   */
  const targetOf = async (orgId: string, projectId: string | undefined) => {
    if (projectId === undefined) return { org: await orgOrFail(orgId), project: undefined };
    const project = UUID.test(orgId) && UUID.test(projectId) ? await sql.projectOfOrg(store, orgId, projectId) : undefined;
    if (!project) throw new NotFoundError('project', projectId.slice(0, 256));
    return { org: { id: orgId, name: project.org }, project };
  };
  const viewOf = (orgId: string, projectId: string | undefined, row: sql.ClaimsRow | undefined): ClaimsView => ({
    org_id: orgId,
    ...(projectId ? { project_id: projectId } : {}),
    ...(row?.audience ? { audience: row.audience, audience_updated_at: isoOf(row.audience_updated_at) } : {}),
    ...(row?.ttl ? { ttl: row.ttl, ttl_updated_at: isoOf(row.ttl_updated_at) } : {}),
  });
  const auditDetail = (org: { id: string; name: string }, project: { id: string; slug: string } | undefined, detail: Record<string, unknown>) => ({
    target: { type: 'oidc-custom-claims', id: project ? project.id : org.id },
    org: org.name,
    ...(project ? { project: project.slug } : {}),
    detail,
  });

  return {
    async get(orgId, projectId) {
      const { org, project } = await targetOf(orgId, projectId);
      return viewOf(org.id, project?.id, await sql.claimsOf(store, org.id, project?.id ?? null));
    },

    async patch(orgId, projectId, changes, audit) {
      const audience = changes.audience === undefined ? undefined : checkAudience(changes.audience);
      if (changes.ttl !== undefined) parseTtl(changes.ttl, 'ttl');
      if (audience === undefined && changes.ttl === undefined) throw new InputError('send audience, ttl or both', 'body');
      const { org, project } = await targetOf(orgId, projectId);
      const row = await store.transaction(async (tx) => {
        const after = await sql.setClaims(tx, org.id, project?.id ?? null, { audience, ttl: changes.ttl }, now());
        await audit?.record(tx, auditDetail(org, project, { ...(audience ? { audience } : {}), ...(changes.ttl !== undefined ? { ttl: changes.ttl } : {}) }));
        return after;
      });
      return viewOf(org.id, project?.id, row);
    },

    async remove(orgId, projectId, claims, audit) {
      for (const claim of claims) if (!(CUSTOM_CLAIMS as readonly string[]).includes(claim)) throw new InputError(`claim '${String(claim).slice(0, 50)}' cannot be removed: the claims are ${CUSTOM_CLAIMS.join(', ')}`, 'claims');
      if (claims.length === 0) throw new InputError(`name the claims to remove: ${CUSTOM_CLAIMS.join(', ')}`, 'claims');
      const { org, project } = await targetOf(orgId, projectId);
      const row = await store.transaction(async (tx) => {
        const left = await sql.clearClaims(tx, org.id, project?.id ?? null, { audience: claims.includes('audience'), ttl: claims.includes('ttl') }, now());
        await audit?.record(tx, auditDetail(org, project, { removed: [...new Set(claims)] }));
        return left;
      });
      return viewOf(org.id, project?.id, row);
    },
  };
}

function isoOf(value: Date | string | null): string | undefined {
  if (value === null) return undefined;
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

/**
 * A duration as CircleCI's custom claims write it (`^([0-9]+(ms|s|m|h|d|w)){1,7}$`: `1h`, `1h30m`),
 * in milliseconds, within MIN_TTL_MS and MAX_TTL_MS; an InputError naming `field` otherwise.
 */
export function parseTtl(text: string, field: string): number {
  if (typeof text !== 'string' || !/^([0-9]+(ms|s|m|h|d|w)){1,7}$/.test(text)) {
    throw new InputError(`${field} '${String(text).slice(0, 50)}' must be a duration such as 30m, 1h or 1h30m (units ms, s, m, h, d, w)`, field);
  }
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: DAY_MS, w: 7 * DAY_MS };
  let total = 0;
  for (const [, amount, u] of text.matchAll(/([0-9]+)(ms|s|m|h|d|w)/g)) total += Number(amount) * unit[u];
  if (!(total >= MIN_TTL_MS && total <= MAX_TTL_MS)) throw new InputError(`${field} '${text}' must be between 1m and 24h`, field);
  return total;
}

/** An audience list as custom claims may set it: 1 to MAX_AUDIENCES distinct values of 1 to 1000 printable characters. */
function checkAudience(audience: readonly string[]): string[] {
  if (!Array.isArray(audience) || audience.length === 0 || audience.length > MAX_AUDIENCES) throw new InputError(`audience must list 1 to ${MAX_AUDIENCES} values`, 'audience');
  for (const [i, value] of audience.entries()) {
    if (typeof value !== 'string' || value.length === 0 || value.length > 1000 || CONTROL_OR_SPACE.test(value)) {
      throw new InputError(`audience[${i}] must be 1 to 1000 characters without spaces or control characters`, `audience[${i}]`);
    }
  }
  return [...new Set(audience)];
}

/** Refuses what cannot go in a token: ids that are not UUIDs, and origins or refs that would make `sub` ambiguous. */
function checkMintInput(input: MintInput): void {
  const ids: [string, string | undefined][] = [
    ['orgId', input.orgId],
    ['projectId', input.projectId],
    ['userId', input.userId],
    ['pipelineId', input.pipelineId],
    ['pipelineDefinitionId', input.pipelineDefinitionId],
    ['workflowId', input.workflowId],
    ['jobId', input.jobId],
  ];
  for (const [name, value] of ids) {
    if (value === undefined && name !== 'orgId' && name !== 'projectId' && name !== 'pipelineId') continue;
    if (typeof value !== 'string' || !UUID.test(value)) throw new InputError(`${name} '${String(value).slice(0, 100)}' must be a UUID`, name);
  }
  if (!Array.isArray(input.contextIds) || input.contextIds.length > 100) throw new InputError('contextIds must be a list of at most 100 context ids', 'contextIds');
  for (const [i, id] of input.contextIds.entries()) if (typeof id !== 'string' || !UUID.test(id)) throw new InputError(`contextIds[${i}] '${String(id).slice(0, 100)}' must be a UUID`, `contextIds[${i}]`);
  if ((input.vcsOrigin === undefined) !== (input.vcsRef === undefined)) throw new InputError('vcsOrigin and vcsRef go together: give both or neither', input.vcsOrigin === undefined ? 'vcsOrigin' : 'vcsRef');
  for (const [name, value] of [['vcsOrigin', input.vcsOrigin], ['vcsRef', input.vcsRef]] as const) {
    if (value === undefined) continue;
    if (typeof value !== 'string' || value.length === 0 || value.length > 1024 || CONTROL_OR_SPACE.test(value)) {
      throw new InputError(`${name} must be 1 to 1024 characters without spaces or control characters`, name);
    }
    if (SUB_MARKER.test(value)) {
      throw new InputError(`${name} '${value.slice(0, 200)}' holds a 'vcs-origin' or 'vcs-ref' path segment, which would let the v2 sub claim pass for another repository or ref`, name);
    }
  }
}

/**
 * A repository URL as CircleCI's `vcs-origin` writes it: host and path, without scheme, user,
 * port or `.git` (`https://github.com/acme/app.git` and `git@github.com:acme/app.git` are both
 * `github.com/acme/app`). A local path is the path without its leading slashes.
 */
export function vcsOriginOf(repoUrl: string): string {
  const text = repoUrl.trim();
  let hostAndPath: string;
  const scp = /^(?:[^@/\s]+@)?([^:/\s]+):(?!\/\/)(.+)$/.exec(text);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    const url = new URL(text);
    hostAndPath = `${url.hostname}${url.pathname}`;
  } else if (scp && !text.startsWith('/')) {
    hostAndPath = `${scp[1]}/${scp[2]}`;
  } else {
    hostAndPath = text;
  }
  return hostAndPath.replace(/^\/+/, '').replace(/\/+$/, '').replace(/\.git$/, '');
}

/** Writes one object to the public bucket: its key, body and Content-Type. */
export type PutObject = (key: string, body: Buffer, contentType: string) => Promise<void>;

/**
 * Publishes organisations' discovery documents to a public bucket, as objects
 * `org/<id>/.well-known/jwks-pub.json` and `org/<id>/.well-known/openid-configuration`, for
 * verifiers that cannot reach Gyre (the issuer's base URL, GYRE_JOB_OIDC_ISSUER_URL, is then the
 * bucket's). The JWKS goes first, so a verifier never reads a configuration whose keys are not
 * out yet. The issuer runs it on every key change (its `publish` option, with the key about to be stored as
 * `coming`); the `contexts` role runs it for every organisation at start and hourly.
 * Answers the keys written.
 */
export async function publishOidcDocuments(
  issuer: Pick<OidcIssuer, 'jwks' | 'discovery'>,
  putObject: PutObject,
  orgIds: readonly string[],
  coming?: { readonly orgId: string; readonly key: JWK },
): Promise<string[]> {
  const written: string[] = [];
  for (const orgId of orgIds) {
    const base = `org/${orgId}/.well-known`;
    const jwks = await issuer.jwks(orgId);
    // A key about to be stored (`coming`) is published with the stored ones.
    const keys = coming?.orgId === orgId && !jwks.keys.some((k) => k.kid === coming.key.kid) ? [coming.key, ...jwks.keys] : jwks.keys;
    const documents: [string, unknown][] = [
      [`${base}/jwks-pub.json`, { ...jwks, keys }],
      [`${base}/openid-configuration`, await issuer.discovery(orgId)],
    ];
    for (const [key, document] of documents) {
      await putObject(key, Buffer.from(JSON.stringify(document)), 'application/json');
      written.push(key);
    }
  }
  return written;
}
