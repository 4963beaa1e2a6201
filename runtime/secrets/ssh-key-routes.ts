import { Type } from '@sinclair/typebox';
import { auditOf, type GyreApp } from '../api/http-app';
import { Segment, SlugParams } from '../api/schemas';
import type { Projects } from '../projects/projects';
import type { SshKeys } from './ssh-keys';

/**
 * A project's SSH keys over CircleCI's paths and shapes:
 *
 * - Checkout keys, API v2: `GET /project/{slug}/checkout-key` (`?digest=md5|sha256`, md5 by
 *   default), `POST` with `{type: deploy-key | user-key}`, `GET` and `DELETE
 *   /project/{slug}/checkout-key/{fingerprint}` (MD5 or SHA256, the latter URL-encoded).
 * - Additional SSH keys, API v1.1: `POST /project/:vcs/:org/:repo/ssh-key` with `{hostname,
 *   private_key}` and `DELETE` with `{fingerprint, hostname}` (as CircleCI's), and a `GET` of Gyre's
 *   that lists them (public halves and fingerprints, as CircleCI's project settings show them).
 *
 * Reading public halves needs `project:read`; making and deleting keys `project:admin`. No answer,
 * error or audit record holds a private key.
 */
export interface SshKeyRouteDeps {
  readonly sshKeys: SshKeys;
  readonly projects: Projects;
}

const CHECKOUT_KEY = '/api/v2/project/:vcs/:org/:repo/checkout-key';
const SSH_KEY = '/api/v1.1/project/:vcs/:org/:repo/ssh-key';
const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;

/** An RSA key of 16384 bits in PEM is about 12.5 KiB; JSON escapes each line end in two bytes. */
const SSH_KEY_BODY_BYTES = 64 * 1024;

const FingerprintParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, fingerprint: Segment });
const Fingerprint = Type.String({ maxLength: 200 });
const Hostname = Type.Union([Type.String({ maxLength: 300 }), Type.Null()]);

export function registerSshKeyRoutes(app: GyreApp, deps: SshKeyRouteDeps): void {
  const { sshKeys, projects } = deps;

  // --- Checkout keys (v2) ---------------------------------------------------------------------------

  app.get(
    CHECKOUT_KEY,
    { config: { permission: 'project:read' }, schema: { params: SlugParams, querystring: Type.Object({ digest: Type.Optional(Type.Union([Type.Literal('md5'), Type.Literal('sha256')])) }) } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      return sshKeys.listCheckoutKeys(project.id, request.query.digest ?? 'md5');
    },
  );

  app.post(
    CHECKOUT_KEY,
    {
      config: { permission: 'project:admin', action: 'project.checkout-key.create' },
      schema: { params: SlugParams, body: Type.Object({ type: Type.Optional(Type.String({ maxLength: 100 })) }) },
    },
    async (request, reply) => {
      const project = await projects.get(slugOf(request.params));
      const made = await sshKeys.createCheckoutKey(project, request.body.type, auditOf(request));
      reply.code(201);
      return made;
    },
  );

  app.get(`${CHECKOUT_KEY}/:fingerprint`, { config: { permission: 'project:read' }, schema: { params: FingerprintParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return sshKeys.getCheckoutKey(project.id, request.params.fingerprint);
  });

  app.delete(
    `${CHECKOUT_KEY}/:fingerprint`,
    { config: { permission: 'project:admin', action: 'project.checkout-key.delete' }, schema: { params: FingerprintParams } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      await sshKeys.deleteCheckoutKey(project, request.params.fingerprint, auditOf(request));
      return { message: 'Checkout key deleted.' };
    },
  );

  // --- Additional SSH keys (v1.1) ---------------------------------------------------------------------

  app.get(SSH_KEY, { config: { permission: 'project:read' }, schema: { params: SlugParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return sshKeys.listSshKeys(project.id);
  });

  app.post(
    SSH_KEY,
    {
      config: { permission: 'project:admin', action: 'project.ssh-key.add' },
      bodyLimit: SSH_KEY_BODY_BYTES,
      schema: { params: SlugParams, body: Type.Object({ hostname: Type.Optional(Hostname), private_key: Type.Optional(Type.String()) }) },
    },
    async (request, reply) => {
      const project = await projects.get(slugOf(request.params));
      const made = await sshKeys.addSshKey(project, { hostname: request.body.hostname, privateKey: request.body.private_key }, auditOf(request));
      reply.code(201);
      return made;
    },
  );

  // CircleCI's takes its fields in the body; the query is accepted too, for clients that send no body with DELETE.
  app.delete(
    SSH_KEY,
    {
      config: { permission: 'project:admin', action: 'project.ssh-key.delete' },
      schema: {
        params: SlugParams,
        querystring: Type.Object({ fingerprint: Type.Optional(Fingerprint), hostname: Type.Optional(Type.String({ maxLength: 300 })) }),
        body: Type.Optional(Type.Object({ fingerprint: Type.Optional(Fingerprint), hostname: Type.Optional(Hostname) })),
      },
    },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      const body = request.body ?? {};
      await sshKeys.deleteSshKey(project, { fingerprint: body.fingerprint ?? request.query.fingerprint, hostname: body.hostname !== undefined ? body.hostname : request.query.hostname }, auditOf(request));
      return { message: 'SSH key deleted.' };
    },
  );
}
