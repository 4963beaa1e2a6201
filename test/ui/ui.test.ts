import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { flowStore, startTestGyre, type StoreKind, type TestGyre } from '../support/gyre';
import { chromiumPresent, CHROMIUM, launchChromium, openPage, pageShown, WAIT } from './browser';

// The web UI in Debian's Chromium against a real Gyre: a user signs in with the link the server
// prints, finds the pipeline, opens a job, and watches a log line arrive that the build prints
// only after the page has loaded (the step waits for a file the test creates then).

if (!chromiumPresent) console.warn(`skipping the web UI in a browser: no Chromium at ${CHROMIUM} (set GYRE_TEST_CHROMIUM)`);

function config(gate: string): string {
  return `version: 2.1
jobs:
  prepare:
    docker:
      - image: cimg/base:stable
    steps:
      - run:
          name: Markup and colour
          command: |
            echo '<b>x</b> <script>window.injected = 1</script>'
            printf '\\033[31mred alert\\033[0m back to plain\\n'
  gated:
    docker:
      - image: cimg/base:stable
    environment:
      GATE: ${gate}
    steps:
      - run:
          name: Live markup and colour
          command: printf '<b>live</b> \\033[31mlive red\\033[0m\\n'
      - run:
          name: Wait for the gate
          command: echo before; while [ ! -f "$GATE" ]; do sleep 0.1; done; echo after-the-page-loaded
workflows:
  ui:
    jobs:
      - prepare
      - gated:
          requires: [prepare]
`;
}

const BROKEN_CONFIG = `version: 2.1
jobs:
  build:
    docker:
      - image: cimg/base:stable
    steps:
      - run: echo never
workflows:
  main:
    jobs:
      - build:
          requires: [no-such-job]
`;

// The passing test comes first in the file and sorts first by name: the page must move the failure up.
const TESTS_CONFIG = `version: 2.1
jobs:
  unit:
    docker:
      - image: cimg/base:stable
    steps:
      - run:
          name: Write JUnit results
          command: |
            mkdir -p reports
            cat > reports/junit.xml <<'XML'
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuite name="ui" tests="2" failures="1">
              <testcase classname="alpha.passes" name="keeps working" time="0.05" file="spec/alpha.test.js"/>
              <testcase classname="zeta.fails" name="shows markup as text" time="1.5" file="spec/zeta.test.js">
                <failure message="boom &lt;img src=x onerror=alert(1)&gt;">stack</failure>
              </testcase>
            </testsuite>
            XML
      - store_test_results:
          path: reports
workflows:
  main:
    jobs:
      - unit
`;

/** What a page reported that a user would call broken: script errors and CSP violations. */
function watchForProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of 401/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  return problems;
}

(chromiumPresent ? describe.each(flowStore()) : describe.skip.each(['(no Chromium)']))('web UI on %s', (store) => {
  let gyre: TestGyre;
  let browser: Browser;
  let context: BrowserContext;
  let gateDir: string;
  let gate: string;
  let pipeline: { id: string; number: number };
  let broken: { id: string; number: number };
  let tested: { id: string; number: number };

  beforeAll(async () => {
    gateDir = mkdtempSync(join(tmpdir(), 'gyre-ui-gate-'));
    gate = join(gateDir, 'open');
    gyre = await startTestGyre({ store: store as StoreKind });
    await gyre.addProject('gh/acme/ui-demo', { '.circleci/config.yml': config(gate) });
    await gyre.addProject('gh/acme/broken', { '.circleci/config.yml': BROKEN_CONFIG });
    await gyre.addProject('gh/acme/ui-tests', { '.circleci/config.yml': TESTS_CONFIG });
    pipeline = await gyre.trigger('gh/acme/ui-demo');
    broken = await gyre.trigger('gh/acme/broken');
    tested = await gyre.trigger('gh/acme/ui-tests');
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  }, 60_000);

  afterAll(async () => {
    // Let the gated job finish even if a test failed before opening the gate.
    if (gate) writeFileSync(gate, '');
    await browser?.close();
    await gyre?.stop();
    if (gateDir) rmSync(gateDir, { recursive: true, force: true });
  });

  test('the page is served with a strict content security policy', async () => {
    const res = await fetch(`${gyre.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('content-security-policy')).toBe("default-src 'self'; img-src 'self' data:; style-src 'self'");
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await res.text()).not.toMatch(/<script>|<style|style=/);
    const script = await fetch(`${gyre.url}/ui/app.js`);
    expect(script.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect((await fetch(`${gyre.url}/login`)).status).toBe(200);
  });

  test('a user follows the sign-in link, opens a running job and sees a line printed after the page loaded', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);

    // The sign-in link keeps the token in the fragment; the UI trades it for a session and drops it
    // from the address. The session cookie is HttpOnly (no script on the page can read it) and is
    // not the token.
    await page.goto(`${gyre.url}/login#token=${gyre.token}`);
    await page.waitForSelector('a.card[data-slug="gh/acme/ui-demo"]', WAIT);
    await pageShown(page, `${gyre.url}/#/`);
    const session = (await context.cookies()).find((c) => c.name === 'gyre_session');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'Lax', path: '/' });
    expect(session!.value).not.toContain(gyre.token);
    expect(await page.evaluate('document.cookie')).not.toContain('gyre_session');

    await page.click('a.card[data-slug="gh/acme/ui-demo"]');
    await page.click(`.pipeline-row[data-number="${pipeline.number}"] a.pipeline-link`, WAIT);
    await pageShown(page, `${gyre.url}/#/pipeline/${pipeline.id}`);

    // The workflow's graph: two jobs, one edge from prepare to gated; gated runs once prepare is done.
    const gatedNode = page.locator('a.job-node[data-name="gated"][data-status="running"]');
    await gatedNode.waitFor(WAIT);
    expect(await page.locator('.workflow[data-name="ui"] .job-node').count()).toBe(2);
    expect(await page.locator('.workflow[data-name="ui"] .edge').count()).toBe(1);
    expect(await page.getAttribute('a.job-node[data-name="prepare"]', 'data-status')).toBe('success');
    await gatedNode.click();

    const waitStep = page.locator('details.step', { hasText: 'Wait for the gate' });
    await waitStep.locator('.log', { hasText: 'before' }).waitFor(WAIT);
    expect(await page.locator('.job-status').textContent()).toBe('running');
    expect(await waitStep.locator('.log').textContent()).not.toContain('after-the-page-loaded');
    // A marker in the page's global scope: it survives only if no reload happens from here on.
    await page.evaluate('window.gyreTestMarker = "same page"');

    writeFileSync(gate, '');

    await waitStep.locator('.log', { hasText: 'after-the-page-loaded' }).waitFor(WAIT);
    expect(await page.evaluate('window.gyreTestMarker')).toBe('same page');
    expect(await waitStep.locator('.log').textContent()).toBe('before\nafter-the-page-loaded\n');
    await page.locator('.job-status.status-success').waitFor(WAIT);
    await waitStep.locator('.step-meta', { hasText: 'exit 0' }).waitFor(WAIT);

    // Build output that arrived live is text, never markup; its ANSI red is a red span.
    const liveLog = page.locator('details.step', { hasText: 'Live markup and colour' }).locator('.log');
    expect(await liveLog.textContent()).toBe('<b>live</b> live red\n');
    expect(await liveLog.locator('b').count()).toBe(0);
    const liveRed = liveLog.locator('span.ansi-red');
    expect(await liveRed.textContent()).toBe('live red');
    // The page's own types are not in this project's lib (no DOM), hence the loose typing.
    expect(await liveRed.evaluate((el) => (globalThis as any).getComputedStyle(el).color)).toBe('rgb(240, 82, 79)');

    expect(problems).toEqual([]);
    await page.close();
  }, 90_000);

  test('a finished job reads its stored output back as escaped text with colours', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await gyre.waitForPipeline(pipeline.id);

    await openPage(page, `${gyre.url}/#/pipeline/${pipeline.id}`);
    await page.click('a.job-node[data-name="prepare"]', WAIT);
    const log = page.locator('details.step', { hasText: 'Markup and colour' }).locator('.log');
    await log.locator('span.ansi-red').waitFor(WAIT);

    expect(await log.textContent()).toBe('<b>x</b> <script>window.injected = 1</script>\nred alert back to plain\n');
    expect(await log.locator('b, script').count()).toBe(0);
    expect(await page.evaluate('window.injected')).toBeUndefined();
    expect(await log.locator('span.ansi-red').textContent()).toBe('red alert');
    expect(await page.locator('.job-status').textContent()).toBe('success');
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test("an errored pipeline shows why on the project's page", async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const stored = await gyre.api<{ state: string; errors: { message: string }[] }>('GET', `/api/v2/pipeline/${broken.id}`);
    expect(stored.state).toBe('errored');

    await openPage(page, `${gyre.url}/#/project/gh/acme/broken`);
    const row = page.locator(`.pipeline-row[data-number="${broken.number}"]`);
    await row.waitFor(WAIT);
    expect(await row.locator('.badge').textContent()).toBe('errored');
    const message = page.locator('.pipeline-error-row .error-message').first();
    expect(await message.textContent()).toBe(stored.errors[0].message);
    expect(stored.errors[0].message).toMatch(/no-such-job/);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test("a job's Tests tab lists its failure first, with the message as text", async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const dialogs: string[] = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    const { jobs } = await gyre.waitForPipeline(tested.id);
    expect(jobs.unit.status).toBe('success');

    await openPage(page, `${gyre.url}/#/job/gh/acme/ui-tests/${jobs.unit.job_number}`);
    const tab = page.locator('button.tab[data-tab="tests"]');
    await tab.locator('.tab-count[data-result="failure"]').waitFor(WAIT);
    expect(await tab.textContent()).toBe('Tests 1 failed 1 passed');
    // The steps stay the default view; the tests appear once their tab is chosen.
    expect(await page.locator('#tab-tests').isVisible()).toBe(false);
    await tab.click();
    await page.locator('#tab-tests').waitFor({ state: 'visible', ...WAIT });
    expect(await page.locator('#tab-steps').isVisible()).toBe(false);

    const tests = page.locator('#tab-tests li.test');
    expect(await tests.count()).toBe(2);
    const first = tests.nth(0);
    expect(await first.getAttribute('data-result')).toBe('failure');
    expect(await first.locator('.test-result').textContent()).toBe('failure');
    expect(await first.locator('.test-classname').textContent()).toBe('zeta.fails');
    expect(await first.locator('.test-name').textContent()).toBe('shows markup as text');
    expect(await first.locator('.test-file').textContent()).toBe('spec/zeta.test.js');
    expect(await first.locator('.test-time').textContent()).toBe('2s');
    const message = first.locator('details.test-message pre');
    expect(await message.isVisible()).toBe(true);
    expect(await message.textContent()).toBe('boom <img src=x onerror=alert(1)>');
    expect(await first.locator('.test-result').evaluate((el) => (globalThis as any).getComputedStyle(el).backgroundColor)).toBe('rgb(210, 59, 59)');
    // The message block folds away.
    await first.locator('details.test-message > summary').click();
    expect(await message.isVisible()).toBe(false);

    const second = tests.nth(1);
    expect(await second.getAttribute('data-result')).toBe('success');
    expect(await second.locator('.test-name').textContent()).toBe('keeps working');
    expect(await second.locator('.test-classname').textContent()).toBe('alpha.passes');
    expect(await second.locator('details').count()).toBe(0);

    expect(await page.locator('img').count()).toBe(0);
    expect(dialogs).toEqual([]);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test("an admin gives and changes roles on an organization's and a project's member pages, and makes a project token shown once", async () => {
    await gyre.api('POST', '/api/v2/users', { login: 'uma', name: 'Uma' });
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/`);
    await page.click('a.org-link[data-org="acme"]', WAIT);
    await pageShown(page, `${gyre.url}/#/org/gh/acme`);
    const org = page.locator('section.members[data-scope="org"]');
    await org.locator('.no-members').waitFor(WAIT);
    await org.locator('.add-login').fill('uma');
    await org.locator('.add-role').selectOption('member');
    await org.locator('.add-member button[type=submit]').click();
    await org.locator('tr.member-row[data-login="uma"][data-role="member"]').waitFor(WAIT);
    await org.locator('tr.member-row[data-login="uma"] select.member-role').selectOption('viewer');
    await org.locator('tr.member-row[data-login="uma"][data-role="viewer"]').waitFor(WAIT);
    expect((await gyre.api('GET', '/api/v2/organization/gh/acme/members')).items).toEqual([expect.objectContaining({ login: 'uma', role: 'viewer' })]);
    await org.locator('tr.member-row[data-login="uma"] button.remove-member').click();
    await org.locator('.no-members').waitFor(WAIT);
    expect((await gyre.api('GET', '/api/v2/organization/gh/acme/members')).items).toEqual([]);

    await openPage(page, `${gyre.url}/#/project/gh/acme/ui-demo`);
    await page.click('a.members-link', WAIT);
    await pageShown(page, `${gyre.url}/#/members/gh/acme/ui-demo`);
    const members = page.locator('section.members[data-scope="project"]');
    await members.locator('.add-login').fill('uma');
    await members.locator('.add-role').selectOption('write');
    await members.locator('.add-member button[type=submit]').click();
    await members.locator('tr.member-row[data-login="uma"][data-role="write"]').waitFor(WAIT);

    const tokens = page.locator('section.tokens[data-scope="project"]');
    await tokens.locator('.token-label').fill('deployer');
    await tokens.locator('.token-scope').selectOption('trigger');
    await tokens.locator('.create-token button[type=submit]').click();
    const shown = tokens.locator('.new-token .token-value');
    await shown.waitFor(WAIT);
    const token = (await shown.textContent())!;
    expect(token).toMatch(/^gyre_[0-9a-f]{40}$/);
    const row = tokens.locator('tr.token-row[data-label="deployer"]');
    expect(await row.textContent()).toContain(`trigger${token.slice(0, 9)}…`);
    expect((await fetch(`${gyre.url}/api/v2/project/gh/acme/ui-demo/pipeline`, { method: 'POST', headers: { 'Circle-Token': token, 'Content-Type': 'application/json' }, body: '{}' })).status).toBe(201);
    // Shown once: not after the page is loaded again.
    await page.reload();
    await tokens.locator('tr.token-row[data-label="deployer"]').waitFor(WAIT);
    expect(await page.locator('.new-token').count()).toBe(0);
    expect(await page.content()).not.toContain(token);
    await tokens.locator('tr.token-row[data-label="deployer"] button.revoke-token').click();
    await tokens.locator('.no-tokens').waitFor(WAIT);
    expect((await fetch(`${gyre.url}/api/v2/project/gh/acme/ui-demo`, { headers: { 'Circle-Token': token } })).status).toBe(401);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test('a user makes a personal token on the tokens page, sees it once, and revokes it', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/`);
    await page.click('.who a.nav-tokens', WAIT);
    const tokens = page.locator('section.tokens[data-scope="personal"]');
    await tokens.locator('tr.token-row').first().waitFor(WAIT);
    await tokens.locator('.token-label').fill('laptop');
    await tokens.locator('.token-expires').fill('30');
    await tokens.locator('.create-token button[type=submit]').click();
    const token = (await tokens.locator('.new-token .token-value').textContent({ timeout: WAIT.timeout }))!;
    expect((await fetch(`${gyre.url}/api/v2/me`, { headers: { 'Circle-Token': token } })).status).toBe(200);
    const row = tokens.locator('tr.token-row[data-label="laptop"]');
    expect(await row.locator('td').nth(4).textContent()).not.toBe('never');
    await row.locator('button.revoke-token').click();
    await row.waitFor({ state: 'detached', ...WAIT });
    expect(await page.locator('.new-token').count()).toBe(0);
    expect((await fetch(`${gyre.url}/api/v2/me`, { headers: { 'Circle-Token': token } })).status).toBe(401);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test('an admin reads the audit log; a user who is not an admin has no audit page', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/`);
    await page.click('.who a.nav-audit', WAIT);
    const set = page.locator('tr.audit-row[data-action="project.member.set"]').first();
    await set.waitFor(WAIT);
    expect(await set.locator('.audit-actor').textContent()).toBe('admin');
    expect(await set.locator('.audit-target').textContent()).toBe('user uma');
    await page.locator('tr.audit-row[data-action="token.revoke"][data-result="success"]').first().waitFor(WAIT);
    await page.selectOption('select.audit-since', '1h');
    await page.locator('tr.audit-row[data-action="project.token.create"]').first().waitFor(WAIT);
    expect(problems).toEqual([]);
    await page.close();

    const nadia = (await gyre.api('POST', '/api/v2/users', { login: 'nadia' })).token;
    const fresh = await browser.newContext();
    const other = await fresh.newPage();
    await other.goto(`${gyre.url}/login#token=${nadia}`);
    await other.locator('.who .login', { hasText: 'nadia' }).waitFor(WAIT);
    expect(await other.locator('.who a.nav-audit').count()).toBe(0);
    await other.goto(`${gyre.url}/#/audit`);
    await other.locator('.error-panel', { hasText: 'instance:admin' }).waitFor(WAIT);
    await fresh.close();
  }, 60_000);

  test('without a session the UI asks to sign in, refuses a wrong token, and signing out ends the session', async () => {
    const fresh = await browser.newContext();
    const page = await fresh.newPage();
    const problems = watchForProblems(page);

    await page.goto(`${gyre.url}/#/project/gh/acme/ui-demo`);
    await page.waitForSelector('.signin input#token', WAIT);
    await page.fill('#token', 'not-the-token');
    await page.click('form.signin-token button[type=submit]');
    await page.locator('.form-error', { hasText: 'not accepted' }).waitFor(WAIT);

    await page.fill('#token', gyre.token);
    await page.click('form.signin-token button[type=submit]');
    // Signing in goes on to the page that was asked for.
    await page.locator(`.pipeline-row[data-number="${pipeline.number}"]`).waitFor(WAIT);

    // Signing out ends the session on the server: its cookie, replayed by anyone, is refused.
    const session = (await fresh.cookies()).find((c) => c.name === 'gyre_session')!;
    expect((await fetch(`${gyre.url}/api/v2/me`, { headers: { Cookie: `gyre_session=${session.value}` } })).status).toBe(200);
    await page.click('.who button.link');
    await page.waitForSelector('.signin input#token', WAIT);
    expect((await fetch(`${gyre.url}/api/v2/me`, { headers: { Cookie: `gyre_session=${session.value}` } })).status).toBe(401);
    expect(problems).toEqual([]);
    await fresh.close();
  }, 60_000);
});
