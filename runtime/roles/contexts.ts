import { publishOidcDocuments } from '../secrets/oidc-tokens';
import { rewrapAll } from '../secrets/rewrap';
import { SEALED_TABLES } from '../secrets/sealed-tables';
import { every, type Role } from './role';

/**
 * `contexts`: keeps secrets' keys current. At start and hourly it replaces the OIDC signing keys
 * that are due (older than 30 days; the retired key stays published until the tokens it signed
 * expire), and re-wraps the data keys of sealed values still wrapped by an older wrapping key (after
 * GYRE_SECRETS_KEY_FILE gained a key, or a KMS key was rotated), in batches, while Gyre serves.
 * With GYRE_JOB_OIDC_PUBLISH_BUCKET it also publishes every organisation's OIDC discovery documents at
 * start and hourly. Contexts, variables and their restrictions are served by the API; values are opened only for the
 * agent that holds a task's lease.
 */
export const contextsRole: Role = {
  name: 'contexts',
  async start(core) {
    const log = core.log.child({ role: 'contexts' });
    const sweep = async () => {
      // The public bucket may be new, or have missed a change while it refused writes: publish every
      // organisation's documents at start and hourly (key changes publish themselves as they happen).
      if (core.oidcPublisher) {
        try {
          const orgs = await core.store.query<{ id: string }>('SELECT id FROM organizations ORDER BY id');
          const written = await publishOidcDocuments(core.oidc, core.oidcPublisher, orgs.map((o) => o.id));
          log.info('OIDC discovery documents published', { organizations: orgs.length, objects: written.length });
        } catch (error) {
          log.error('publishing OIDC discovery documents failed (cloud token services cannot verify new keys until this works)', { error: (error as Error).message });
        }
      }
      try {
        const rotated = await core.oidc.rotateDue();
        if (rotated.length > 0) log.info('OIDC signing keys replaced', { organizations: rotated.length });
      } catch (error) {
        log.error('OIDC key rotation failed', { error: (error as Error).message });
      }
      try {
        const moved = await rewrapAll(core.store, core.secretBox, SEALED_TABLES);
        if (moved.rewrapped > 0 || moved.failed > 0) log.info('secrets re-wrapped with the current key', { key: moved.keyId, rewrapped: moved.rewrapped, failed: moved.failed, remaining: moved.remaining });
      } catch (error) {
        log.error('re-wrapping secrets failed', { error: (error as Error).message });
      }
    };
    await sweep();
    const stop = every(60 * 60_000, sweep, () => undefined);
    return {
      async stop() {
        stop();
      },
    };
  },
};
