import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startHttpReceiver, until, type HttpReceiver } from '../notifications/receivers';
import { flowStore, startTestGyre, type StoreKind, type TestGyre } from '../support/gyre';
import { chromiumPresent, CHROMIUM, launchChromium, openPage, pageShown, signedInContext, WAIT, watchForProblems } from './browser';

// A project's Webhooks and Notifications pages in Chromium against a whole Gyre (the notifier
// among its roles) and a local HTTP receiver: an admin adds a webhook through the form and sees
// it listed (and the API has it), sees a build's deliveries in its log with every attempt's
// answer, is told the server's reason for a metadata address, sets email and Slack
// notifications; a viewer and a stranger get the refusal, never the data.

if (!chromiumPresent) console.warn(`skipping the webhooks and notifications pages in a browser: no Chromium at ${CHROMIUM} (set GYRE_TEST_CHROMIUM)`);

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo built
workflows:
  main:
    jobs: [build]
`;

/** Typed into the pages; the page may show only their masked forms. */
const SECRET = 'whsec-typed-in-the-page-8801';
const SLACK_PATH = '/slack/T000/B000/slack-token-typed-in-4455';
const METADATA_URL = 'http://169.254.169.254/latest/meta-data/';
const RIVAL_HOOK = { name: 'rival release hook', path: '/rival-release-hook-7c1d' };

async function pageText(page: Page): Promise<string> {
  const fields = await page.evaluate(() => Array.from((globalThis as any).document.querySelectorAll('input, textarea'), (el: any) => String(el.value)).join('\n'));
  return [await page.content(), fields].join('\n');
}

(chromiumPresent ? describe.each(flowStore()) : describe.skip.each(['(no Chromium)']))('the webhooks and notifications pages on %s', (store) => {
  let gyre: TestGyre;
  let receiver: HttpReceiver;
  let browser: Browser;
  let admin: BrowserContext;
  let page: Page;
  let problems: string[];
  let projectId: string;
  let veraToken: string;

  beforeAll(async () => {
    receiver = await startHttpReceiver();
    gyre = await startTestGyre({ store: store as StoreKind, env: { GYRE_WEBHOOKS_ALLOW_PRIVATE: 'true', GYRE_WEBHOOKS_ALLOW_HTTP: 'true' } });
    await gyre.addProject('gh/acme/shop', { '.circleci/config.yml': CONFIG });
    await gyre.addProject('gh/rival/vault', { '.circleci/config.yml': CONFIG });
    projectId = (await gyre.api('GET', '/api/v2/project/gh/acme/shop')).id;
    const rivalId = (await gyre.api('GET', '/api/v2/project/gh/rival/vault')).id;
    await gyre.api('POST', '/api/v2/webhook', { name: RIVAL_HOOK.name, events: ['job-completed'], url: receiver.url + RIVAL_HOOK.path, 'verify-tls': true, 'signing-secret': 'rival-secret', scope: { id: rivalId, type: 'project' } });
    veraToken = (await gyre.api('POST', '/api/v2/users', { login: 'vera', name: 'Vera' })).token;
    await gyre.api('PUT', '/api/v2/organization/gh/acme/members/vera', { role: 'viewer' });
    browser = await launchChromium();
    admin = await signedInContext(browser, gyre);
    page = await admin.newPage();
    problems = watchForProblems(page);
    page.on('dialog', (dialog) => void dialog.accept());
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await gyre?.stop();
    await receiver?.stop();
  });

  test("an admin adds a webhook through the project's Webhooks page: it is listed with its secret masked, and the API has it; a metadata address is refused in the server's words", async () => {
    await openPage(page, `${gyre.url}/#/project/gh/acme/shop`);
    await page.click('a.webhooks-link', WAIT);
    await pageShown(page, `${gyre.url}/#/webhooks/gh/acme/shop`);
    await page.locator('.no-webhooks').waitFor(WAIT);

    const form = page.locator('form.create-webhook');
    expect(await form.locator('input.webhook-secret').getAttribute('type')).toBe('password');
    await form.locator('input.webhook-name').fill('build events');
    await form.locator('input.webhook-url').fill(`${receiver.url}/hook`);
    await form.locator('input.webhook-secret').fill(SECRET);
    await form.locator('button[type=submit]').click();

    const hook = page.locator('section.webhook[data-name="build events"]');
    await hook.waitFor(WAIT);
    expect(await hook.locator('.webhook-shown-url').textContent()).toBe(`${receiver.url}/hook`);
    expect(await hook.locator('.webhook-events').textContent()).toBe('workflow-completed, job-completed');
    expect(await hook.locator('.webhook-tls').textContent()).toBe('yes');
    expect(await hook.locator('.webhook-shown-secret').textContent()).toBe('xxxx8801');
    expect(await hook.locator('.no-deliveries').count()).toBe(1);
    // The form is empty again, ready for another webhook with both events ticked.
    expect(await form.locator('input.webhook-secret').inputValue()).toBe('');
    expect(await form.locator('input.webhook-event:checked').count()).toBe(2);
    expect(await pageText(page)).not.toContain(SECRET);
    const listed = (await gyre.api('GET', `/api/v2/webhook?scope-id=${projectId}&scope-type=project`)).items;
    expect(listed).toEqual([
      expect.objectContaining({ id: await hook.getAttribute('data-id'), name: 'build events', url: `${receiver.url}/hook`, events: ['workflow-completed', 'job-completed'], 'verify-tls': true, 'signing-secret': 'xxxx8801' }),
    ]);

    // The clouds' metadata address: what the API answers the same request, under the form.
    const refused = await gyre.raw('POST', '/api/v2/webhook', {
      body: JSON.stringify({ name: 'metadata', events: ['job-completed'], url: METADATA_URL, 'verify-tls': true, 'signing-secret': 'x', scope: { id: projectId, type: 'project' } }),
    });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/169\.254\.169\.254/);
    await form.locator('input.webhook-name').fill('metadata');
    await form.locator('input.webhook-url').fill(METADATA_URL);
    await form.locator('input.webhook-secret').fill('x');
    await form.locator('button[type=submit]').click();
    const problem = page.locator('.webhooks-problem', { hasText: '169.254.169.254' });
    await problem.waitFor(WAIT);
    expect(await problem.textContent()).toBe(`Could not add the webhook metadata: ${refused.body.message}`);
    expect(await problem.getAttribute('role')).toBe('alert');
    expect(await form.locator('input.webhook-url').inputValue()).toBe(METADATA_URL);
    expect(await page.locator('section.webhook').count()).toBe(1);
    expect((await gyre.api('GET', `/api/v2/webhook?scope-id=${projectId}&scope-type=project`)).items).toHaveLength(1);
    expect(problems).toEqual([]);
  }, 30_000);

  test('an admin changes a webhook in place: what is left untouched keeps its value, the secret stays masked, and a refused URL keeps the form open with the reason', async () => {
    const hook = page.locator('section.webhook[data-name="build events"]');
    const id = (await hook.getAttribute('data-id'))!;
    await hook.locator('button.edit-webhook-button').click();
    const form = hook.locator('form.edit-webhook');
    await form.waitFor(WAIT);
    // Filled with what the API has; the secret is write-only, so its field is empty.
    expect(await form.locator('input.webhook-name').inputValue()).toBe('build events');
    expect(await form.locator('input.webhook-url').inputValue()).toBe(`${receiver.url}/hook`);
    expect(await form.locator('input.webhook-secret').inputValue()).toBe('');
    expect(await form.locator('input.webhook-event:checked').count()).toBe(2);

    // Only job-completed, no TLS check; the secret left empty is kept.
    await form.locator('input.webhook-event[value="workflow-completed"]').uncheck();
    await form.locator('input.webhook-verify-tls').uncheck();
    await form.locator('button[type=submit]').click();
    await hook.locator('form.edit-webhook').waitFor({ state: 'detached', ...WAIT });
    expect(await hook.locator('.webhook-events').textContent()).toBe('job-completed');
    expect(await hook.locator('.webhook-tls').textContent()).toBe('no');
    expect(await hook.locator('.webhook-shown-secret').textContent()).toBe('xxxx8801');
    expect(await gyre.api('GET', `/api/v2/webhook/${id}`)).toMatchObject({ name: 'build events', events: ['job-completed'], 'verify-tls': false, 'signing-secret': 'xxxx8801' });

    // A metadata address is refused in the server's words; nothing changes and the form stays as typed.
    await hook.locator('button.edit-webhook-button').click();
    await form.locator('input.webhook-url').fill(METADATA_URL);
    await form.locator('button[type=submit]').click();
    const problem = page.locator('.webhooks-problem', { hasText: '169.254.169.254' });
    await problem.waitFor(WAIT);
    expect(await problem.textContent()).toMatch(/^Could not save the webhook build events: .*169\.254\.169\.254/);
    expect(await form.locator('input.webhook-url').inputValue()).toBe(METADATA_URL);
    expect((await gyre.api('GET', `/api/v2/webhook/${id}`)).url).toBe(`${receiver.url}/hook`);

    // Back to both events with TLS checked and a new secret, which the page shows only masked.
    await form.locator('input.webhook-url').fill(`${receiver.url}/hook`);
    await form.locator('input.webhook-event[value="workflow-completed"]').check();
    await form.locator('input.webhook-verify-tls').check();
    await form.locator('input.webhook-secret').fill('whsec-changed-in-the-page-9902');
    await form.locator('button[type=submit]').click();
    await hook.locator('form.edit-webhook').waitFor({ state: 'detached', ...WAIT });
    expect(await hook.locator('.webhook-shown-secret').textContent()).toBe('xxxx9902');
    expect(await gyre.api('GET', `/api/v2/webhook/${id}`)).toMatchObject({ events: ['workflow-completed', 'job-completed'], 'verify-tls': true, 'signing-secret': 'xxxx9902' });
    expect(await pageText(page)).not.toContain('whsec-changed-in-the-page-9902');

    // Cancel leaves it as it is.
    await hook.locator('button.edit-webhook-button').click();
    await form.locator('input.webhook-name').fill('renamed but cancelled');
    await form.locator('button.cancel-edit').click();
    await hook.locator('form.edit-webhook').waitFor({ state: 'detached', ...WAIT });
    expect((await gyre.api('GET', `/api/v2/webhook/${id}`)).name).toBe('build events');
    expect(problems).toEqual([]);
  }, 30_000);

  test("a build's deliveries to the receiver appear in the webhook's log on the page, each attempt's answer as the API gives it; deleting the webhook takes it away", async () => {
    const hook = page.locator('section.webhook[data-name="build events"]');
    const id = (await hook.getAttribute('data-id'))!;
    // The receiver fails the first post once: that delivery is tried again.
    receiver.answer('/hook', { status: 500, body: 'database is down, try later' });
    await gyre.waitForPipeline((await gyre.trigger('gh/acme/shop')).id);
    const deliveries = await until('both deliveries delivered', async () => {
      const items = (await gyre.api('GET', `/api/v2/webhook/${id}/deliveries`)).items;
      return items.length === 2 && items.every((d: any) => d.state === 'delivered') && items;
    });
    expect(deliveries.map((d: any) => d.attempts).sort()).toEqual([1, 2]);

    await page.locator('.webhook-list').waitFor(WAIT);
    await page.click('button.refresh-deliveries');
    await hook.locator('tr.delivery-row').nth(1).waitFor(WAIT);
    expect(await hook.locator('tr.delivery-row').count()).toBe(2);
    for (const d of deliveries) {
      const row = hook.locator(`tr.delivery-row[data-id="${d.id}"]`);
      expect(await row.locator('.delivery-event').textContent()).toBe(d.event);
      expect(await row.locator('.delivery-state').textContent()).toBe('delivered');
      expect(await row.locator('.delivery-attempt-count').textContent()).toBe(String(d.attempts));
      expect(await row.locator('.delivery-time time').textContent()).toMatch(/^(just now|\d+m ago)$/); // minutes on a slow run
      expect(await row.locator('.delivery-last .delivery-code').first().textContent()).toBe('HTTP 200');
    }
    expect((await hook.locator('.delivery-event').allTextContents()).sort()).toEqual(['job-completed', 'workflow-completed']);

    // The retried one folds out its attempts: the 500 with what the receiver said, then the 200.
    const retried = deliveries.find((d: any) => d.attempts === 2);
    expect(retried.answers[0]).toMatchObject({ status_code: 500, response: 'database is down, try later' });
    const row = hook.locator(`tr.delivery-row[data-id="${retried.id}"]`);
    await row.locator('.delivery-attempts > summary').click();
    const first = row.locator('li.delivery-attempt[data-attempt="1"]');
    await first.waitFor({ state: 'visible', ...WAIT });
    expect(await first.locator('.delivery-code').textContent()).toBe('HTTP 500');
    expect(await first.locator('.delivery-error').textContent()).toBe(' ' + retried.answers[0].error);
    expect(await first.locator('.delivery-body').textContent()).toBe('database is down, try later');
    expect(await row.locator('li.delivery-attempt[data-attempt="2"] .delivery-code').textContent()).toBe('HTTP 200');

    await hook.locator('button.delete-webhook').click();
    await page.locator('.no-webhooks').waitFor(WAIT);
    expect((await gyre.api('GET', `/api/v2/webhook?scope-id=${projectId}&scope-type=project`)).items).toEqual([]);
    expect(problems).toEqual([]);
  }, 30_000);

  test("an admin sets email recipients, a Slack webhook and when to notify on the project's Notifications page; the API keeps them and a bad address is refused in its words", async () => {
    await openPage(page, `${gyre.url}/#/project/gh/acme/shop`);
    await page.click('a.notifications-link', WAIT);
    await pageShown(page, `${gyre.url}/#/notifications/gh/acme/shop`);
    const form = page.locator('form.notification-form');
    await form.waitFor(WAIT);
    expect(await form.locator('input.notify-on-failed').isChecked()).toBe(true);
    expect(await form.locator('input.notify-on-fixed').isChecked()).toBe(true);
    expect(await form.locator('.slack-current').textContent()).toBe('not set');
    expect(await form.locator('input.slack-url').getAttribute('type')).toBe('password');
    await page.locator('.notification-deliveries .no-deliveries').waitFor(WAIT);

    await form.locator('textarea.notification-emails').fill('team@example.com\nops@example.com');
    await form.locator('input.slack-url').fill(receiver.url + SLACK_PATH);
    await form.locator('input.notify-on-fixed').uncheck();
    await form.locator('button[type=submit]').click();
    await form.locator('.saved-note', { hasText: 'Saved.' }).waitFor(WAIT);
    const host = new URL(receiver.url).host;
    expect(await form.locator('.slack-current').textContent()).toBe(`xxxx@${host}`);
    expect(await form.locator('input.slack-url').inputValue()).toBe('');
    expect(await pageText(page)).not.toContain('slack-token-typed-in');
    const saved = { emails: ['team@example.com', 'ops@example.com'], on_failed: true, on_fixed: false, slack_webhook_url: `xxxx@${host}` };
    expect(await gyre.api('GET', '/api/v2/project/gh/acme/shop/notifications')).toEqual(saved);

    await page.reload();
    await form.waitFor(WAIT);
    expect(await form.locator('textarea.notification-emails').inputValue()).toBe('team@example.com\nops@example.com');
    expect(await form.locator('input.notify-on-failed').isChecked()).toBe(true);
    expect(await form.locator('input.notify-on-fixed').isChecked()).toBe(false);

    const refused = await gyre.raw('PUT', '/api/v2/project/gh/acme/shop/notifications', { body: JSON.stringify({ emails: ['team@example.com', 'not-an-address'] }) });
    expect(refused.status).toBe(400);
    await form.locator('textarea.notification-emails').fill('team@example.com\nnot-an-address');
    await form.locator('button[type=submit]').click();
    const problem = page.locator('.notifications-problem', { hasText: 'not-an-address' });
    await problem.waitFor(WAIT);
    expect(await problem.textContent()).toBe(`Could not save the notifications: ${refused.body.message}`);
    expect(await gyre.api('GET', '/api/v2/project/gh/acme/shop/notifications')).toEqual(saved);

    await form.locator('button.remove-slack').click();
    await form.locator('.slack-current', { hasText: 'not set' }).waitFor(WAIT);
    expect((await gyre.api('GET', '/api/v2/project/gh/acme/shop/notifications')).slack_webhook_url).toBeNull();
    expect(problems).toEqual([]);
  }, 30_000);

  test("a project viewer is shown the API's refusal and a stranger the project's absence, never another project's webhooks or settings", async () => {
    const vera = await signedInContext(browser, gyre, veraToken);
    try {
      const seen = await vera.newPage();
      const veraProblems = watchForProblems(seen);
      const as = (path: string) => gyre.raw('GET', path, { headers: { 'Circle-Token': veraToken } });

      // A viewer of gh/acme: the webhooks need project:admin, and the page says so.
      const forbidden = await as(`/api/v2/webhook?scope-id=${projectId}&scope-type=project`);
      expect(forbidden.status).toBe(403);
      await seen.goto(`${gyre.url}/#/webhooks/gh/acme/shop`);
      const panel = seen.locator('.error-panel');
      await panel.waitFor(WAIT);
      expect(await panel.textContent()).toBe(`Error ${forbidden.body.message}`);
      expect(await seen.locator('form.create-webhook, section.webhook').count()).toBe(0);
      const forbiddenSettings = await as('/api/v2/project/gh/acme/shop/notifications');
      expect(forbiddenSettings.status).toBe(403);
      await seen.goto('about:blank');
      await seen.goto(`${gyre.url}/#/notifications/gh/acme/shop`);
      await panel.waitFor(WAIT);
      expect(await panel.textContent()).toBe(`Error ${forbiddenSettings.body.message}`);
      expect(await seen.locator('form.notification-form').count()).toBe(0);

      // Not a member of gh/rival: the project is not there for her, and nor is its webhook.
      for (const [path, api] of [['webhooks', '/api/v2/project/gh/rival/vault'], ['notifications', '/api/v2/project/gh/rival/vault/notifications']]) {
        const refusal = await as(api);
        expect(refusal.status).toBe(404);
        await seen.goto('about:blank');
        await seen.goto(`${gyre.url}/#/${path}/gh/rival/vault`);
        await panel.waitFor(WAIT);
        expect(await panel.textContent()).toBe(`Not found ${refusal.body.message}`);
        const text = await pageText(seen);
        expect(text).not.toContain(RIVAL_HOOK.name);
        expect(text).not.toContain(RIVAL_HOOK.path);
      }
      expect(veraProblems).toEqual([]);
    } finally {
      await vera.close();
    }
  }, 30_000);
});
