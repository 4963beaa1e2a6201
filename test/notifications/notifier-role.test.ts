import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROLE_NAMES } from '../../runtime/roles/names';
import { createTestDatabase } from '../support/database';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { startHttpReceiver, until, type HttpReceiver } from './receivers';

/**
 * The `notifier` role is what sends: in a cluster, processes without it (the conductor writes the
 * deliveries) leave them in the outbox, and a `gyre server --roles=notifier` process on the same
 * PostgreSQL delivers them, opening the signing secret with the shared key wrapper.
 */

const CONFIG = `version: 2.1
jobs:
  compile:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: exit 1
workflows:
  build:
    jobs: [compile]
`;

(process.env.DATABASE_URL ? describe : describe.skip)('the notifier role on its own', () => {
  let database: { url: string; drop(): Promise<void> };
  let keys: string;
  let receiver: HttpReceiver;
  let rest: TestGyre | undefined;
  let notifier: TestGyre | undefined;

  beforeAll(async () => {
    database = await createTestDatabase();
    keys = mkdtempSync(join(tmpdir(), 'gyre-keys-'));
    receiver = await startHttpReceiver();
  });
  afterAll(async () => {
    await notifier?.stop();
    await rest?.stop();
    await receiver?.stop();
    await database?.drop();
    rmSync(keys, { recursive: true, force: true });
  });

  test('processes without it leave deliveries waiting; a --roles=notifier process sends them', async () => {
    const shared = {
      DATABASE_URL: database.url,
      GYRE_SECRETS_KEY_FILE: join(keys, 'keys'),
      GYRE_WEBHOOKS_ALLOW_PRIVATE: 'true',
      GYRE_WEBHOOKS_ALLOW_HTTP: 'true',
    };
    expect(ROLE_NAMES).toContain('notifier');
    rest = await startTestGyre({ env: { ...shared, GYRE_ROLES: ROLE_NAMES.filter((r) => r !== 'notifier').join(',') } });
    await rest.addProject('gh/acme/app', { '.circleci/config.yml': CONFIG });
    const projectId = (await rest.api('GET', '/api/v2/project/gh/acme/app')).id;
    const hook = await rest.api('POST', '/api/v2/webhook', {
      name: 'to the notifier',
      events: ['workflow-completed'],
      url: `${receiver.url}/hook`,
      'verify-tls': true,
      'signing-secret': 'role-secret-0123456789',
      scope: { id: projectId, type: 'project' },
    });
    const { id } = await rest.trigger('gh/acme/app');
    await rest.waitForPipeline(id, 60_000);
    const waiting = await until('the delivery to be written', async () => (await rest!.api('GET', `/api/v2/webhook/${hook.id}/deliveries`)).items[0]);
    await new Promise((r) => setTimeout(r, 1500));
    expect(receiver.received).toEqual([]);
    expect(waiting).toMatchObject({ event: 'workflow-completed', state: 'pending', attempts: 0 });

    // The same admin token: a new one would replace it for both (they share the database).
    notifier = await startTestGyre({ env: { ...shared, GYRE_ROLES: 'notifier', GYRE_ADMIN_TOKEN: rest.token } });
    const got = await until('the delivery', () => receiver.received[0]);
    expect(got.headers['circleci-signature']).toBe(`v1=${createHmac('sha256', 'role-secret-0123456789').update(got.body).digest('hex')}`);
    expect(JSON.parse(got.body)).toMatchObject({ type: 'workflow-completed', workflow: { name: 'build', status: 'failed' } });
    await until('the log to show it delivered', async () => (await rest!.api('GET', `/api/v2/webhook/${hook.id}/deliveries`)).items[0].state === 'delivered');
  }, 120_000);
});
