import type { Browser, BrowserContext, Page } from 'playwright-core';
import { flowStore, startTestGyre, type StoreKind, type TestGyre } from '../support/gyre';
import { chromiumPresent, CHROMIUM, launchChromium, openPage, pageShown, WAIT } from './browser';

// The secrets pages in Chromium against a whole Gyre, as a user sees them: an admin adds a project
// variable and sees only its masked form, then and after a reload; makes a context, gives it a
// variable and restrictions, and takes them away again; an organization viewer who tries the same
// is told why not, in the API's words.

if (!chromiumPresent) console.warn(`skipping the secrets pages in a browser: no Chromium at ${CHROMIUM} (set GYRE_TEST_CHROMIUM)`);

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo hi
workflows:
  main:
    jobs: [build]
`;

/** Values typed into the pages: none may ever come back into one. */
const SECRETS = {
  project: 'proj-S3cret-typed-in-4242',
  context: 'ctx-S3cret-typed-in-7788',
  replaced: 'ctx-S3cret-replaced-9911',
  viewer: 'viewer-S3cret-never-saved-5050',
};

/** What a page reported that a user would call broken: script errors and CSP violations. */
function watchForProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // A refused write is a 4xx the browser logs; the page shows it, which the tests check.
    if (message.type() === 'error' && !/status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  return problems;
}

/** Confirm dialogs: answered by `answer` (true accepts), their questions kept. */
function answerDialogs(page: Page, answer: () => boolean): string[] {
  const asked: string[] = [];
  page.on('dialog', (dialog) => {
    asked.push(dialog.message());
    void (answer() ? dialog.accept() : dialog.dismiss());
  });
  return asked;
}

/** Everything the page holds: its markup, its text, and what its form fields hold. */
async function everythingOn(page: Page): Promise<string> {
  const fields = await page.evaluate(() => Array.from((globalThis as any).document.querySelectorAll('input, select, textarea'), (el: any) => String(el.value)).join('\n'));
  return [await page.content(), await page.locator('body').innerText(), fields].join('\n');
}

(chromiumPresent ? describe.each(flowStore()) : describe.skip.each(['(no Chromium)']))('secrets pages on %s', (store) => {
  let gyre: TestGyre;
  let browser: Browser;
  let admin: BrowserContext;
  let viewerToken: string;
  let projectId: string;
  /** Every API answer a page received, to search for values afterwards. */
  const answers: Promise<string>[] = [];

  beforeAll(async () => {
    gyre = await startTestGyre({ store: store as StoreKind });
    await gyre.addProject('gh/acme/shop', { '.circleci/config.yml': CONFIG });
    await gyre.addProject('gh/acme/docs', { '.circleci/config.yml': CONFIG });
    projectId = (await gyre.api('GET', '/api/v2/project/gh/acme/shop')).id;
    viewerToken = (await gyre.api('POST', '/api/v2/users', { login: 'vera', name: 'Vera' })).token;
    await gyre.api('PUT', '/api/v2/organization/gh/acme/members/vera', { role: 'viewer' });
    browser = await launchChromium();
    admin = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    admin.on('response', (res) => {
      if (res.url().includes('/api/v2/')) answers.push(res.text().catch(() => ''));
    });
    const page = await admin.newPage();
    await page.goto(`${gyre.url}/login#token=${gyre.token}`);
    await page.locator('.who .login', { hasText: 'admin' }).waitFor(WAIT);
    await page.close();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await gyre?.stop();
  });

  test("an admin adds a project variable on the project's settings page and sees only its masked form, also after a reload", async () => {
    const page = await admin.newPage();
    const problems = watchForProblems(page);
    let accept = false;
    const asked = answerDialogs(page, () => accept);

    await openPage(page, `${gyre.url}/#/project/gh/acme/shop`);
    await page.click('a.envvars-link', WAIT);
    await pageShown(page, `${gyre.url}/#/envvars/gh/acme/shop`);
    const section = page.locator('section.variables[data-scope="project"]');
    await section.locator('.no-variables').waitFor(WAIT);

    const value = section.locator('input.variable-value');
    expect(await value.getAttribute('type')).toBe('password');
    await section.locator('input.variable-name').fill('DEPLOY_TOKEN');
    await value.fill(SECRETS.project);
    await section.locator('form.add-variable button[type=submit]').click();

    const row = section.locator('tr.variable-row[data-name="DEPLOY_TOKEN"]');
    await row.waitFor(WAIT);
    expect(await row.locator('.variable-name').textContent()).toBe('DEPLOY_TOKEN');
    expect(await row.locator('.variable-value').textContent()).toBe('xxxx4242');
    expect(await row.locator('.variable-date time').textContent()).toBe('just now');
    // The field is emptied once the value is saved: nothing on the page holds it any more.
    expect(await value.inputValue()).toBe('');
    expect(await section.locator('input.variable-name').inputValue()).toBe('');
    expect(await everythingOn(page)).not.toContain(SECRETS.project);
    expect((await gyre.api('GET', '/api/v2/project/gh/acme/shop/envvar')).items).toEqual([expect.objectContaining({ name: 'DEPLOY_TOKEN', value: 'xxxx4242' })]);

    await page.reload();
    await row.waitFor(WAIT);
    expect(await row.locator('.variable-value').textContent()).toBe('xxxx4242');
    expect(await everythingOn(page)).not.toContain(SECRETS.project);

    // A name a shell would not take: the API's reason, under the form; the value stays in its field to fix the name.
    await section.locator('input.variable-name').fill('NOT VALID');
    await value.fill('whatever-value');
    await section.locator('form.add-variable button[type=submit]').click();
    await section.locator('.form-error', { hasText: 'must start with a letter or _' }).waitFor(WAIT);
    expect(await section.locator('.form-error').textContent()).toMatch(/^Could not save NOT VALID: .*environment variable name "NOT VALID" must start with a letter or _/);
    expect(await section.locator('tr.variable-row').count()).toBe(1);

    // Deleting asks first; no keeps the variable, yes removes it.
    await row.locator('button.delete-variable').click();
    expect(asked).toEqual(['Delete the environment variable DEPLOY_TOKEN from gh/acme/shop? Jobs will no longer get it.']);
    expect(await row.count()).toBe(1);
    accept = true;
    await row.locator('button.delete-variable').click();
    await section.locator('.no-variables').waitFor(WAIT);
    expect(await section.locator('.form-error').textContent()).toBe('');
    expect((await gyre.api('GET', '/api/v2/project/gh/acme/shop/envvar')).items).toEqual([]);

    expect(problems).toEqual([]);
    await page.close();
  }, 90_000);

  test("an admin makes a context from the organization's page, gives it a variable and restrictions, and takes them away", async () => {
    const page = await admin.newPage();
    const problems = watchForProblems(page);
    const asked = answerDialogs(page, () => true);

    await openPage(page, `${gyre.url}/#/org/gh/acme`);
    await page.click('a.contexts-link', WAIT);
    await pageShown(page, `${gyre.url}/#/contexts/gh/acme`);
    const contexts = page.locator('section.contexts');
    await contexts.locator('.no-contexts').waitFor(WAIT);
    await contexts.locator('input.context-name').fill('deploy-creds');
    await contexts.locator('form.create-context button[type=submit]').click();
    const contextRow = contexts.locator('tr.context-row[data-name="deploy-creds"]');
    await contextRow.waitFor(WAIT);
    // The same name twice: the API's conflict, in its words.
    await contexts.locator('input.context-name').fill('deploy-creds');
    await contexts.locator('form.create-context button[type=submit]').click();
    await contexts.locator('.form-error', { hasText: 'Could not create the context deploy-creds: ' }).waitFor(WAIT);
    expect(await contexts.locator('tr.context-row').count()).toBe(1);

    const id = (await contextRow.getAttribute('data-id'))!;
    await contextRow.locator('a.context-link').click();
    await pageShown(page, `${gyre.url}/#/contexts/gh/acme/${id}`);
    expect(await page.locator('h1 .context-title').textContent({ timeout: WAIT.timeout })).toBe('deploy-creds');

    // A variable, then a new value for it through the row's Replace.
    const variables = page.locator('section.variables[data-scope="context"]');
    await variables.locator('.no-variables').waitFor(WAIT);
    expect(await variables.locator('input.variable-value').getAttribute('type')).toBe('password');
    await variables.locator('input.variable-name').fill('DEPLOY_KEY');
    await variables.locator('input.variable-value').fill(SECRETS.context);
    await variables.locator('form.add-variable button[type=submit]').click();
    const variable = variables.locator('tr.variable-row[data-name="DEPLOY_KEY"]');
    await variable.locator('.variable-value', { hasText: 'xxxx7788' }).waitFor(WAIT);
    await variable.locator('button.replace-variable').click();
    expect(await variables.locator('input.variable-name').inputValue()).toBe('DEPLOY_KEY');
    await variables.locator('input.variable-value').fill(SECRETS.replaced);
    await variables.locator('form.add-variable button[type=submit]').click();
    await variable.locator('.variable-value', { hasText: 'xxxx9911' }).waitFor(WAIT);
    expect(await variables.locator('tr.variable-row').count()).toBe(1);
    expect((await gyre.api('GET', `/api/v2/context/${id}/environment-variable`)).items).toEqual([expect.objectContaining({ variable: 'DEPLOY_KEY', value: 'xxxx9911' })]);

    // Restrictions: a project chosen by its slug, an expression, and a bad expression refused with the API's reason.
    const restrictions = page.locator('section.restrictions');
    await restrictions.locator('.no-restrictions').waitFor(WAIT);
    expect(await restrictions.locator('.no-restrictions').textContent()).toBe('No restrictions: every project of gh/acme may use this context.');
    expect((await restrictions.locator('select.restriction-project option').allTextContents()).sort()).toEqual(['gh/acme/docs', 'gh/acme/shop']);
    await restrictions.locator('select.restriction-project').selectOption({ label: 'gh/acme/shop' });
    await restrictions.locator('form.add-restriction button[type=submit]').click();
    const projectRow = restrictions.locator('tr.restriction-row[data-type="project"]');
    await projectRow.waitFor(WAIT);
    expect(await projectRow.locator('.restriction-shown').textContent()).toBe('gh/acme/shop');

    await restrictions.locator('select.restriction-type').selectOption('expression');
    expect(await restrictions.locator('select.restriction-project').isVisible()).toBe(false);
    await restrictions.locator('input.restriction-value').fill('pipeline.parameters.deploy == true');
    await restrictions.locator('form.add-restriction button[type=submit]').click();
    const refused = restrictions.locator('.form-error', { hasText: 'Could not add the restriction: ' });
    await refused.waitFor(WAIT);
    expect(await refused.textContent()).toMatch(/restriction_value is not a context expression: .*pipeline\.parameters/);
    await restrictions.locator('input.restriction-value').fill('pipeline.git.branch == "main"');
    await restrictions.locator('form.add-restriction button[type=submit]').click();
    const expressionRow = restrictions.locator('tr.restriction-row[data-type="expression"]');
    await expressionRow.waitFor(WAIT);
    expect(await expressionRow.locator('.restriction-shown').textContent()).toBe('pipeline.git.branch == "main"');
    expect(await restrictions.locator('.form-error').textContent()).toBe('');
    const stored = (await gyre.api('GET', `/api/v2/context/${id}/restrictions`)).items;
    expect(stored).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ restriction_type: 'project', restriction_value: projectId, name: 'gh/acme/shop' }),
        expect.objectContaining({ restriction_type: 'expression', restriction_value: 'pipeline.git.branch == "main"' }),
      ]),
    );
    expect(stored).toHaveLength(2);

    expect(await everythingOn(page)).not.toContain(SECRETS.context);
    expect(await everythingOn(page)).not.toContain(SECRETS.replaced);

    // Taking them away, each after a question.
    await projectRow.locator('button.delete-restriction').click();
    await projectRow.waitFor({ state: 'detached', ...WAIT });
    await expressionRow.locator('button.delete-restriction').click();
    await restrictions.locator('.no-restrictions').waitFor(WAIT);
    expect((await gyre.api('GET', `/api/v2/context/${id}/restrictions`)).items).toEqual([]);
    await variable.locator('button.delete-variable').click();
    await variables.locator('.no-variables').waitFor(WAIT);
    expect((await gyre.api('GET', `/api/v2/context/${id}/environment-variable`)).items).toEqual([]);
    await page.locator('h1 button.delete-context').click();
    await page.waitForURL(`${gyre.url}/#/contexts/gh/acme`, WAIT);
    await page.locator('section.contexts .no-contexts').waitFor(WAIT);
    expect((await gyre.api('GET', '/api/v2/context?owner-slug=gh/acme')).items).toEqual([]);
    expect(asked).toEqual([
      'Delete this project restriction?',
      'Delete this expression restriction?',
      'Delete the environment variable DEPLOY_KEY from the context deploy-creds? Jobs will no longer get it.',
      'Delete the context deploy-creds with all its variables and restrictions? Jobs that name it will no longer run.',
    ]);

    expect(problems).toEqual([]);
    await page.close();
  }, 120_000);

  test('no API answer the pages received holds a value typed into them', async () => {
    const bodies = await Promise.all(answers);
    expect(bodies.length).toBeGreaterThan(10);
    for (const secret of [SECRETS.project, SECRETS.context, SECRETS.replaced]) expect(bodies.filter((b) => b.includes(secret))).toEqual([]);
  });

  test("an organization viewer sees the masked variables and contexts, and is told the API's reason when trying to change them", async () => {
    await gyre.api('POST', '/api/v2/project/gh/acme/shop/envvar', { name: 'EXISTING', value: 'existing-value-1234' });
    const context = await gyre.api('POST', '/api/v2/context', { name: 'shared', owner: { slug: 'gh/acme' } });
    const fresh = await browser.newContext();
    try {
      const page = await fresh.newPage();
      const problems = watchForProblems(page);
      await page.goto(`${gyre.url}/login#token=${viewerToken}`);
      await page.locator('.who .login', { hasText: 'vera' }).waitFor(WAIT);

      // What the API says to Vera for the same write, to hold the page to it.
      const refusal = await fetch(`${gyre.url}/api/v2/project/gh/acme/shop/envvar`, {
        method: 'POST',
        headers: { 'Circle-Token': viewerToken, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'SNEAKY', value: 'x' }),
      });
      expect(refusal.status).toBe(403);
      const message = ((await refusal.json()) as { message: string }).message;
      expect(message).toMatch(/project:admin/);

      await openPage(page, `${gyre.url}/#/envvars/gh/acme/shop`);
      const section = page.locator('section.variables[data-scope="project"]');
      const row = section.locator('tr.variable-row[data-name="EXISTING"]');
      await row.waitFor(WAIT);
      expect(await row.locator('.variable-value').textContent()).toBe('xxxx1234');
      await section.locator('input.variable-name').fill('SNEAKY');
      await section.locator('input.variable-value').fill(SECRETS.viewer);
      await section.locator('form.add-variable button[type=submit]').click();
      const error = section.locator('.form-error');
      await error.locator('text=project:admin').waitFor(WAIT);
      expect(await error.textContent()).toBe(`Could not save SNEAKY: ${message}`);
      expect(await error.getAttribute('role')).toBe('alert');
      expect(await section.locator('tr.variable-row').count()).toBe(1);

      // Contexts: Vera sees them, and is refused a new one with the organization's reason.
      await openPage(page, `${gyre.url}/#/contexts/gh/acme`);
      await page.locator('tr.context-row[data-name="shared"]').waitFor(WAIT);
      await page.fill('input.context-name', 'vera-context');
      await page.click('form.create-context button[type=submit]');
      const contextError = page.locator('section.contexts .form-error');
      await contextError.locator('text=org:admin').waitFor(WAIT);
      expect(await contextError.textContent()).toMatch(/^Could not create the context vera-context: Your token may not do this on gh\/acme: .*needs org:admin/);

      await page.click('tr.context-row[data-name="shared"] a.context-link');
      const variables = page.locator('section.variables[data-scope="context"]');
      await variables.locator('.no-variables').waitFor(WAIT);
      await variables.locator('input.variable-name').fill('SNEAKY');
      await variables.locator('input.variable-value').fill(SECRETS.viewer);
      await variables.locator('form.add-variable button[type=submit]').click();
      await variables.locator('.form-error', { hasText: 'needs org:admin' }).waitFor(WAIT);
      expect(await variables.locator('.no-variables').count()).toBe(1);

      expect((await gyre.api('GET', '/api/v2/project/gh/acme/shop/envvar')).items.map((v: { name: string }) => v.name)).toEqual(['EXISTING']);
      expect((await gyre.api('GET', '/api/v2/context?owner-slug=gh/acme')).items.map((c: { name: string }) => c.name)).toEqual(['shared']);
      expect((await gyre.api('GET', `/api/v2/context/${context.id}/environment-variable`)).items).toEqual([]);
      expect(problems).toEqual([]);
    } finally {
      await fresh.close();
    }
  }, 90_000);
});
