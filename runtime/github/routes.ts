import { readRawBody, type GyreApp } from '../api/http-app';
import type { GitHubWebhooks } from './webhooks';

/** GitHub's largest delivery: it does not send a payload above 25 MB. */
export const MAX_DELIVERY_BYTES = 25 * 1024 * 1024;

const header = (value: string | string[] | undefined) => (typeof value === 'string' ? value : undefined);

/**
 * `POST /webhooks/github`: public (GitHub signs the delivery; runtime/github/webhooks.ts checks the
 * signature before anything else), its body read raw, since the signature is over its bytes.
 */
export async function registerGitHubWebhookRoute(app: GyreApp, deps: { webhooks: GitHubWebhooks }): Promise<void> {
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    scope.post('/webhooks/github', { config: { auth: 'public', action: false }, bodyLimit: MAX_DELIVERY_BYTES }, async (request, reply) => {
      const body = await readRawBody(request, MAX_DELIVERY_BYTES, 'a GitHub delivery');
      const answer = await deps.webhooks.receive({
        id: header(request.headers['x-github-delivery']),
        event: header(request.headers['x-github-event']),
        signature: header(request.headers['x-hub-signature-256']),
        body,
      });
      reply.code(answer.status).header('Cache-Control', 'no-store');
      return answer.body;
    });
  });
}
