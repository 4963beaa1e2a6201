import { createHmac, timingSafeEqual } from 'node:crypto';
import { commitFiles, startTestGyre, type TestGyre } from '../support/gyre';
import { startHttpReceiver, startSmtpServer, until, type HttpReceiver, type Received, type SmtpStandIn } from './receivers';

/**
 * Outbound webhooks and notifications, end to end: a whole Gyre (every role, the notifier's
 * sender among them) runs pipelines whose workflows fail and pass, and a local HTTP receiver and
 * SMTP server (`smtp-server`) see what it sends: CircleCI's webhook payloads signed with the
 * project's secret, retried after a 500, emails and Slack messages on failed and on fixed. Every
 * answer of CircleCI's `/webhook` routes is checked against the API v2 description.
 */

const CONFIG = `version: 2.1
parameters:
  pass:
    type: boolean
    default: false
jobs:
  compile:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: test "<< pipeline.parameters.pass >>" = true
workflows:
  build:
    jobs: [compile]
`;

const SECRET = 'whsec-Zq8v2LmN4pR7tY1uW3xK5cB9';
const SECOND_SECRET = 'whsec-second-Hq2Jk4Lm6Np8Qr0S';
const SLACK_TOKEN = 'T000/B000/XXXXslacktokenYYYY';

/** The receiver's check, as a receiver would write it: HMAC of the raw body with the secret, compared in constant time. */
function signatureValid(r: Received, secret: string): boolean {
  const header = String(r.headers['circleci-signature'] ?? '');
  const given = header.split(',').map((s) => s.trim()).find((s) => s.startsWith('v1='))?.slice(3) ?? '';
  const expected = createHmac('sha256', secret).update(r.body).digest('hex');
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

describe('outbound webhooks and notifications', () => {
  let g: TestGyre;
  let receiver: HttpReceiver;
  let smtp: SmtpStandIn;
  let repo: string;
  let projectId: string;
  /** Every answer the API gave in this file: none may hold a secret. */
  const answers: string[] = [];

  const call = async (method: string, path: string, body?: unknown, token?: string) => {
    const r = await g.raw(method, path, { body: body === undefined ? undefined : JSON.stringify(body), ...(token ? { headers: { 'Circle-Token': token } } : {}) });
    answers.push(r.text);
    return r;
  };
  const ok = async (method: string, path: string, body?: unknown) => {
    const r = await call(method, path, body);
    if (r.status >= 400) throw new Error(`${method} ${path} → ${r.status}: ${r.text}`);
    return r.body;
  };
  const run = async (branch: string, pass: boolean) => {
    const { id } = await g.trigger('gh/acme/app', { branch, parameters: { pass } });
    const done = await g.waitForPipeline(id, 60_000);
    return { id, ...done };
  };
  const at = (path: string) => receiver.received.filter((r) => r.path === path);

  beforeAll(async () => {
    receiver = await startHttpReceiver();
    smtp = await startSmtpServer();
    g = await startTestGyre({
      store: 'pglite',
      env: { GYRE_WEBHOOKS_ALLOW_PRIVATE: 'true', GYRE_WEBHOOKS_ALLOW_HTTP: 'true', GYRE_SMTP_URL: smtp.url, GYRE_SMTP_FROM: 'Gyre CI <ci@gyre.test>' },
    });
    repo = await g.addProject('gh/acme/app', { '.circleci/config.yml': CONFIG });
    projectId = (await ok('GET', '/api/v2/project/gh/acme/app')).id;
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await receiver?.stop();
    await smtp?.stop();
  });

  let hook: any;

  test('a failed workflow sends signed workflow-completed and job-completed events in CircleCI’s format', async () => {
    hook = await ok('POST', '/api/v2/webhook', {
      name: 'build events',
      events: ['workflow-completed', 'job-completed'],
      url: `${receiver.url}/hook`,
      'verify-tls': true,
      'signing-secret': SECRET,
      scope: { id: projectId, type: 'project' },
    });
    expect(hook).toEqual({
      id: expect.any(String),
      scope: { id: projectId, type: 'project' },
      name: 'build events',
      events: ['workflow-completed', 'job-completed'],
      url: `${receiver.url}/hook`,
      'verify-tls': true,
      'signing-secret': `xxxx${SECRET.slice(-4)}`,
      'created-at': expect.any(String),
      'updated-at': expect.any(String),
    });
    expect(await ok('GET', `/api/v2/webhook?scope-id=${projectId}&scope-type=project`)).toEqual({ items: [hook], next_page_token: null });
    expect(await ok('GET', `/api/v2/webhook/${hook.id}`)).toEqual(hook);

    const { id: pipelineId, workflows, jobs } = await run('main', false);
    expect(workflows[0].status).toBe('failed');
    const [jobEvent, workflowEvent] = await until('both events', () => {
      const got = at('/hook');
      const job = got.find((r) => r.headers['circleci-event-type'] === 'job-completed');
      const workflow = got.find((r) => r.headers['circleci-event-type'] === 'workflow-completed');
      return job && workflow && [job, workflow];
    });
    for (const r of [jobEvent, workflowEvent]) {
      expect(signatureValid(r, SECRET)).toBe(true);
      expect(signatureValid(r, 'another secret')).toBe(false);
      expect(r.headers['content-type']).toBe('application/json');
    }
    const workflow = JSON.parse(workflowEvent.body);
    expect(workflow).toEqual({
      type: 'workflow-completed',
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      happened_at: workflows[0].stopped_at,
      webhook: { id: hook.id, name: 'build events' },
      project: { id: projectId, name: 'app', slug: 'gh/acme/app' },
      organization: { id: expect.any(String), name: 'acme' },
      workflow: { id: workflows[0].id, name: 'build', status: 'failed', created_at: workflows[0].created_at, stopped_at: workflows[0].stopped_at, url: `${g.url}/#/pipeline/${pipelineId}/workflows/${workflows[0].id}` },
      pipeline: {
        id: pipelineId,
        number: expect.any(Number),
        created_at: expect.any(String),
        trigger: { type: 'api' },
        vcs: { provider_name: 'github', origin_repository_url: repo, target_repository_url: repo, revision: expect.stringMatching(/^[0-9a-f]{40}$/), commit: { subject: 'fixture', body: '' }, branch: 'main' },
      },
    });
    expect(workflow.organization.id).toBe((await ok('GET', '/api/v2/organization/gh/acme')).id);
    const job = JSON.parse(jobEvent.body);
    expect(job).toMatchObject({ type: 'job-completed', webhook: { id: hook.id }, project: workflow.project, pipeline: workflow.pipeline, workflow: { id: workflows[0].id, name: 'build' } });
    expect(job.job).toEqual({ id: jobs.compile.id, number: jobs.compile.job_number, name: 'compile', status: 'failed', started_at: jobs.compile.started_at, stopped_at: jobs.compile.stopped_at });
    expect(job.id).not.toBe(workflow.id);

    // The delivery log: both delivered with the receiver's answer.
    const log = await until('the log to show both delivered', async () => {
      const page = await ok('GET', `/api/v2/webhook/${hook.id}/deliveries`);
      return page.items.length === 2 && page.items.every((d: any) => d.state === 'delivered') && page;
    });
    expect(log.items.map((d: any) => d.event).sort()).toEqual(['job-completed', 'workflow-completed']);
    for (const d of log.items) expect(d).toMatchObject({ channel: 'webhook', state: 'delivered', attempts: 1, next_attempt_at: null, answers: [{ attempt: 1, status_code: 200, response: 'ok', error: null }] });
    expect(log.items.find((d: any) => d.event === 'workflow-completed').subject_id).toBe(workflows[0].id);
  }, 90_000);

  test('a receiver answering 500 then 200 gets the same signed body again, and the log shows both answers', async () => {
    const flaky = await ok('POST', '/api/v2/webhook', {
      name: 'flaky',
      events: ['workflow-completed'],
      url: `${receiver.url}/flaky`,
      'verify-tls': false,
      'signing-secret': SECOND_SECRET,
      scope: { id: projectId, type: 'project' },
    });
    // Beside it, a webhook on jobs only: the one look-up for both events hands each its own.
    const jobsOnly = await ok('POST', '/api/v2/webhook', {
      name: 'jobs only',
      events: ['job-completed'],
      url: `${receiver.url}/jobs-only`,
      'verify-tls': false,
      'signing-secret': SECOND_SECRET,
      scope: { id: projectId, type: 'project' },
    });
    receiver.answer('/flaky', { status: 500, body: 'database is down, try later' });
    await run('main', true);
    // Between the attempts the log says when the next one is due.
    const waiting = await until('the first answer in the log', async () => {
      const d = (await ok('GET', `/api/v2/webhook/${flaky.id}/deliveries`)).items[0];
      // At least one: on a slow machine the retry (about 1 s later) may be in by the first look.
      return d?.answers.length >= 1 && d;
    });
    if (waiting.state === 'pending' && waiting.answers.length === 1) expect(Date.parse(waiting.next_attempt_at)).toBeGreaterThan(Date.parse(waiting.answers[0].at));
    expect(waiting.answers[0]).toMatchObject({ attempt: 1, status_code: 500, response: 'database is down, try later', error: 'the receiver answered HTTP 500' });
    const delivered = await until('the retry', async () => {
      const d = (await ok('GET', `/api/v2/webhook/${flaky.id}/deliveries`)).items[0];
      return d?.state === 'delivered' && d;
    });
    expect(delivered).toMatchObject({ attempts: 2, next_attempt_at: null, answers: [{ attempt: 1, status_code: 500 }, { attempt: 2, status_code: 200, response: 'ok', error: null }] });
    const [first, second] = at('/flaky');
    expect(at('/flaky')).toHaveLength(2);
    expect(second.body).toBe(first.body);
    expect(JSON.parse(second.body).id).toBe(JSON.parse(first.body).id);
    expect(signatureValid(second, SECOND_SECRET)).toBe(true);
    await until('the job event to the jobs-only webhook', async () => at('/jobs-only').length >= 1);
    await new Promise((r) => setTimeout(r, 500));
    expect(at('/jobs-only').map((r) => r.headers['circleci-event-type'])).toEqual(['job-completed']);
    expect(at('/flaky').map((r) => r.headers['circleci-event-type'])).toEqual(['workflow-completed', 'workflow-completed']);
    await ok('DELETE', `/api/v2/webhook/${flaky.id}`);
    await ok('DELETE', `/api/v2/webhook/${jobsOnly.id}`);
  }, 90_000);

  test('email and Slack on a failed workflow, then on fixed, naming the project, branch and workflow', async () => {
    const settings = await ok('PUT', '/api/v2/project/gh/acme/app/notifications', {
      emails: ['dev@example.com', 'lead@example.com'],
      slack_webhook_url: `${receiver.url}/services/${SLACK_TOKEN}`,
    });
    expect(settings).toEqual({ emails: ['dev@example.com', 'lead@example.com'], on_failed: true, on_fixed: true, slack_webhook_url: `xxxx@${new URL(receiver.url).host}` });
    expect(await ok('GET', '/api/v2/project/gh/acme/app/notifications')).toEqual(settings);

    // A branch name a hostile author chose: Slack must not turn it into a mention.
    const branch = 'fix<!channel>';
    commitFiles(repo, branch, { 'notes.txt': 'x\n' }, 'Try <@U0123> a fix');
    const mailsBefore = smtp.mails.length;
    const slackBefore = at(`/services/${SLACK_TOKEN}`).length;
    await run(branch, false);
    const failedMail = await until('the failure email', () => smtp.mails[mailsBefore]);
    expect(failedMail.from).toBe('ci@gyre.test');
    expect(failedMail.to.sort()).toEqual(['dev@example.com', 'lead@example.com']);
    expect(failedMail.fromHeader).toBe('"Gyre CI" <ci@gyre.test>');
    expect(failedMail.subject).toMatch(/^\[gh\/acme\/app\] Failed: workflow build on branch fix<!channel> \(pipeline \d+\)$/);
    // Text only: nothing a branch or commit says can become markup.
    expect(failedMail.html).toBe(false);
    expect(failedMail.text).toContain('Project:  gh/acme/app');
    expect(failedMail.text).toContain('Branch:   fix<!channel>');
    expect(failedMail.text).toContain('Workflow: build (failed)');
    expect(failedMail.text).toContain('Failed jobs: compile');
    expect(failedMail.text).toMatch(new RegExp(`${g.url.replace(/[.]/g, '\\.')}/#/pipeline/[0-9a-f-]{36}/workflows/[0-9a-f-]{36}`));
    const slack = await until('the Slack message', () => at(`/services/${SLACK_TOKEN}`)[slackBefore]);
    const { text } = JSON.parse(slack.body);
    expect(text).toContain(':red_circle: Workflow *build* of *gh/acme/app* failed on branch `fix&lt;!channel&gt;`');
    expect(text).not.toContain('<!channel>');
    expect(text).not.toContain('<@U0123>');

    // Passing after a failure on the same branch: fixed.
    await run(branch, true);
    const fixedMail = await until('the fixed email', () => smtp.mails[mailsBefore + 1]);
    expect(fixedMail.subject).toMatch(/^\[gh\/acme\/app\] Fixed: workflow build on branch fix<!channel>/);
    expect(fixedMail.text).toContain('It passed after the previous run of this workflow on the same branch failed.');
    expect(fixedMail.text).toContain('Workflow: build (success)');
    const fixedSlack = await until('the fixed Slack message', () => at(`/services/${SLACK_TOKEN}`)[slackBefore + 1]);
    expect(JSON.parse(fixedSlack.body).text).toMatch(/^:large_green_circle: Workflow \*build\* of \*gh\/acme\/app\* is fixed/);

    // Passing again is news to no one; a failure on another branch does not make this one "fixed".
    await run(branch, true);
    await run('main', true);
    const log = await until('the notification log to settle', async () => {
      const page = await ok('GET', '/api/v2/project/gh/acme/app/notifications/deliveries');
      return page.items.every((d: any) => d.state !== 'pending') && page;
    });
    expect(log.items.map((d: any) => `${d.channel} ${d.event} ${d.state}`).sort()).toEqual([
      'email workflow-failed delivered',
      'email workflow-fixed delivered',
      'slack workflow-failed delivered',
      'slack workflow-fixed delivered',
    ]);
    expect(log.items.find((d: any) => d.channel === 'email').answers[0]).toMatchObject({ status_code: 250, error: null });
    expect(smtp.mails).toHaveLength(mailsBefore + 2);
  }, 180_000);

  test('webhook and Slack URLs that point at the metadata service are refused, even with private addresses allowed', async () => {
    const refused = await call('POST', '/api/v2/webhook', {
      name: 'steal credentials',
      events: ['workflow-completed'],
      url: 'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
      'verify-tls': true,
      'signing-secret': 'x',
      scope: { id: projectId, type: 'project' },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/^url is refused: 169\.254\.169\.254 is a linkLocal address, which deliveries never go to/);
    for (const url of ['http://[fd00:ec2::254]/latest/', 'http://0.0.0.0:8080/api/v2/me', 'ftp://example.com/']) {
      const r = await call('POST', '/api/v2/webhook', { name: 'x', events: ['job-completed'], url, 'verify-tls': true, 'signing-secret': 'x', scope: { id: projectId, type: 'project' } });
      expect({ url, status: r.status }).toEqual({ url, status: 400 });
    }
    const slack = await call('PUT', '/api/v2/project/gh/acme/app/notifications', { slack_webhook_url: 'http://169.254.169.254/latest/' });
    expect(slack.status).toBe(400);
    expect(slack.body.message).toMatch(/^slack_webhook_url is refused: 169\.254\.169\.254/);
    const update = await call('PUT', `/api/v2/webhook/${hook.id}`, { url: 'http://[::ffff:169.254.169.254]/' });
    expect(update.status).toBe(400);
    expect((await ok('GET', `/api/v2/webhook/${hook.id}`)).url).toBe(`${receiver.url}/hook`);
  });

  test('bad input is refused naming the field and what is allowed', async () => {
    const base = { name: 'x', events: ['workflow-completed'], url: `${receiver.url}/x`, 'verify-tls': true, 'signing-secret': 's', scope: { id: projectId, type: 'project' } };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ events: [] }, /events must name at least one of workflow-completed, job-completed/],
      [{ events: ['build-started'] }, /events/],
      [{ 'signing-secret': '' }, /signing-secret must be 1 to 1024 characters/],
      [{ name: '   ' }, /name must be 1 to 256 characters/],
    ];
    for (const [change, message] of cases) {
      const r = await call('POST', '/api/v2/webhook', { ...base, ...change });
      expect({ change, status: r.status, message: r.body.message }).toEqual({ change, status: 400, message: expect.stringMatching(message) });
    }
    const notUuid = await call('POST', '/api/v2/webhook', { ...base, scope: { id: 'gh/acme/app', type: 'project' } });
    expect(notUuid.status).toBe(404);
    const emails = await call('PUT', '/api/v2/project/gh/acme/app/notifications', { emails: ['dev@example.com\r\nBcc: all@example.com'] });
    expect(emails.status).toBe(400);
    expect(emails.body.message).toMatch(/^emails: 'dev@example\.com\r\nBcc: all@example\.com' is not an email address/);
    // A project holds at most five webhooks, as on CircleCI.
    const made: string[] = [];
    for (let i = 0; i < 4; i++) made.push((await ok('POST', '/api/v2/webhook', { ...base, name: `extra ${i}` })).id);
    const sixth = await call('POST', '/api/v2/webhook', { ...base, name: 'one too many' });
    expect(sixth.status).toBe(409);
    expect(sixth.body.message).toMatch(/already has 5 webhooks/);
    for (const id of made) await ok('DELETE', `/api/v2/webhook/${id}`);
    expect((await call('GET', `/api/v2/webhook/${made[0]}`)).status).toBe(404);
  });

  test('only project admins manage webhooks and read their logs; others get 403, or 404 when they cannot see the project', async () => {
    const tokenOf = async (login: string) => (await ok('POST', '/api/v2/users', { login })).token as string;
    const writer = await tokenOf('dev-writer');
    const outsider = await tokenOf('outsider');
    await ok('PUT', '/api/v2/project/gh/acme/app/members/dev-writer', { role: 'write' });
    const body = { name: 'mine', events: ['workflow-completed'], url: `${receiver.url}/mine`, 'verify-tls': true, 'signing-secret': 'mine', scope: { id: projectId, type: 'project' } };

    const asWriter = await call('POST', '/api/v2/webhook', body, writer);
    expect(asWriter.status).toBe(403);
    expect(asWriter.body.message).toMatch(/needs project:admin/);
    expect((await call('GET', `/api/v2/webhook?scope-id=${projectId}&scope-type=project`, undefined, writer)).status).toBe(403);
    expect((await call('GET', `/api/v2/webhook/${hook.id}`, undefined, writer)).status).toBe(403);
    expect((await call('GET', `/api/v2/webhook/${hook.id}/deliveries`, undefined, writer)).status).toBe(403);
    expect((await call('PUT', `/api/v2/webhook/${hook.id}`, { url: `${receiver.url}/stolen` }, writer)).status).toBe(403);
    expect((await call('DELETE', `/api/v2/webhook/${hook.id}`, undefined, writer)).status).toBe(403);
    expect((await call('PUT', '/api/v2/project/gh/acme/app/notifications', { emails: ['me@example.com'] }, writer)).status).toBe(403);

    const asOutsider = await call('POST', '/api/v2/webhook', body, outsider);
    expect(asOutsider.status).toBe(404);
    expect(asOutsider.body.message).toBe(`project not found: ${projectId}`);
    expect((await call('GET', `/api/v2/webhook/${hook.id}`, undefined, outsider)).body.message).toBe(`webhook not found: ${hook.id}`);
    expect((await ok('GET', `/api/v2/webhook?scope-id=${projectId}&scope-type=project`)).items.map((w: any) => w.id)).toEqual([hook.id]);
  });

  test('a signing secret never appears in an answer or in the database; a new one signs from then on', async () => {
    const updated = await ok('PUT', `/api/v2/webhook/${hook.id}`, { 'signing-secret': 'short-new', events: ['workflow-completed'] });
    expect(updated['signing-secret']).toBe('xxxx');
    expect(updated.events).toEqual(['workflow-completed']);
    const before = at('/hook').length;
    await run('main', false);
    const next = await until('the next delivery', () => at('/hook')[before]);
    expect(signatureValid(next, 'short-new')).toBe(true);
    expect(signatureValid(next, SECRET)).toBe(false);

    for (const secret of [SECRET, SECOND_SECRET, 'short-new', SLACK_TOKEN]) {
      expect(answers.filter((a) => a.includes(secret))).toEqual([]);
    }
    // Every row of every table, as text.
    const tables = await g.gyre.store.query<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`);
    expect(tables.map((t) => t.table_name)).toEqual(expect.arrayContaining(['webhooks', 'project_notifications', 'notification_deliveries', 'notification_attempts', 'outbox', 'audit_events']));
    const found: string[] = [];
    for (const { table_name } of tables) {
      const rows = await g.gyre.store.query<{ row: string }>(`SELECT t::text AS row FROM "${table_name}" t`);
      for (const { row } of rows) {
        // bytea columns print as hex: look for the secrets' hex too.
        for (const secret of [SECRET, SECOND_SECRET, 'short-new', SLACK_TOKEN]) {
          if (row.includes(secret) || row.includes(Buffer.from(secret).toString('hex'))) found.push(`${table_name}: ${secret}`);
        }
      }
    }
    expect(found).toEqual([]);
  }, 90_000);
});
