import { Type } from '@sinclair/typebox';
import { auditOf, type GyreApp } from '../api/http-app';
import { Segment } from '../api/schemas';
import { InputError } from '../domain/errors';
import { CUSTOM_CLAIMS, MAX_AUDIENCES, type CustomClaim, type OidcIssuer } from './oidc-tokens';

/**
 * The HTTP side of job tokens:
 *
 * - public, for verifiers (a cloud's identity provider, Vault, jose's `createRemoteJWKSet`):
 *   `GET /org/<organization id>/.well-known/openid-configuration` and
 *   `GET /org/<organization id>/.well-known/jwks-pub.json` (CircleCI's paths under the issuer);
 *   an organisation id that does not exist is a 404, and that is all they say about one;
 * - CircleCI's custom claims API: `GET`, `PATCH`, `DELETE /api/v2/org/<org id>/oidc-custom-claims`
 *   (read: the organisation's roles; change: its admins) and
 *   `/api/v2/org/<org id>/project/<project id>/oidc-custom-claims` (the project's readers; its
 *   admins). `DELETE` takes `?claims=audience,ttl`.
 *
 * The id the permission is about is the path's `:id` (the organisation's, or the project's in the
 * project variant), as the policy reads ids (`of: 'org-id'`, `of: 'project-id'`).
 */
export interface OidcRouteDeps {
  readonly issuer: OidcIssuer;
}

/** How long verifiers may keep the documents (after a rotation, a verifier that meets an unknown kid fetches the JWKS again). */
export const OIDC_DOCUMENT_CACHE = 'public, max-age=300';

const OrgParams = Type.Object({ orgId: Segment });
const OrgClaimsParams = Type.Object({ id: Segment });
const ProjectClaimsParams = Type.Object({ orgID: Segment, id: Segment });
const ClaimsBody = Type.Object({
  audience: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1000 }), { minItems: 1, maxItems: MAX_AUDIENCES })),
  ttl: Type.Optional(Type.String({ maxLength: 64, pattern: '^([0-9]+(ms|s|m|h|d|w)){1,7}$' })),
});
const DeleteQuery = Type.Object({ claims: Type.String({ minLength: 1, maxLength: 100, description: `comma-separated: ${CUSTOM_CLAIMS.join(', ')}` }) });

/** `audience,ttl` → the claims named; an InputError naming one that is not a claim. */
function claimsOf(list: string): CustomClaim[] {
  const names = list.split(',').map((c) => c.trim()).filter((c) => c.length > 0);
  for (const name of names) if (!(CUSTOM_CLAIMS as readonly string[]).includes(name)) throw new InputError(`query.claims names '${name.slice(0, 50)}': the claims are ${CUSTOM_CLAIMS.join(', ')}`, 'claims');
  if (names.length === 0) throw new InputError(`query.claims must name ${CUSTOM_CLAIMS.join(', ')} or both`, 'claims');
  return names as CustomClaim[];
}

export function registerOidcRoutes(app: GyreApp, deps: OidcRouteDeps): void {
  const { issuer } = deps;

  // --- Discovery, for verifiers -----------------------------------------------------------------

  app.get('/org/:orgId/.well-known/openid-configuration', { config: { auth: 'public' }, schema: { params: OrgParams } }, async (request, reply) => {
    const document = await issuer.discovery(request.params.orgId);
    reply.header('Cache-Control', OIDC_DOCUMENT_CACHE);
    return document;
  });

  app.get('/org/:orgId/.well-known/jwks-pub.json', { config: { auth: 'public' }, schema: { params: OrgParams } }, async (request, reply) => {
    const jwks = await issuer.jwks(request.params.orgId);
    reply.header('Cache-Control', OIDC_DOCUMENT_CACHE);
    return jwks;
  });

  // --- Custom claims ----------------------------------------------------------------------------

  const ORG = '/api/v2/org/:id/oidc-custom-claims';
  const PROJECT = '/api/v2/org/:orgID/project/:id/oidc-custom-claims';
  const claims = issuer.customClaims;

  app.get(ORG, { config: { permission: 'org:read', of: 'org-id' }, schema: { params: OrgClaimsParams } }, async (request) => claims.get(request.params.id));

  app.patch(ORG, { config: { permission: 'org:admin', of: 'org-id', action: 'oidc.claims.set' }, schema: { params: OrgClaimsParams, body: ClaimsBody } }, async (request) =>
    claims.patch(request.params.id, undefined, request.body, auditOf(request)),
  );

  app.delete(ORG, { config: { permission: 'org:admin', of: 'org-id', action: 'oidc.claims.remove' }, schema: { params: OrgClaimsParams, querystring: DeleteQuery } }, async (request) =>
    claims.remove(request.params.id, undefined, claimsOf(request.query.claims), auditOf(request)),
  );

  app.get(PROJECT, { config: { permission: 'project:read', of: 'project-id' }, schema: { params: ProjectClaimsParams } }, async (request) =>
    claims.get(request.params.orgID, request.params.id),
  );

  app.patch(PROJECT, { config: { permission: 'project:admin', of: 'project-id', action: 'oidc.claims.set' }, schema: { params: ProjectClaimsParams, body: ClaimsBody } }, async (request) =>
    claims.patch(request.params.orgID, request.params.id, request.body, auditOf(request)),
  );

  app.delete(PROJECT, { config: { permission: 'project:admin', of: 'project-id', action: 'oidc.claims.remove' }, schema: { params: ProjectClaimsParams, querystring: DeleteQuery } }, async (request) =>
    claims.remove(request.params.orgID, request.params.id, claimsOf(request.query.claims), auditOf(request)),
  );
}
