import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { chromiumPresent, CHROMIUM, launchChromium, openPage, signedInContext, WAIT, watchForProblems } from './browser';

// What a team does on the project and pipeline pages, in Chromium against a whole Gyre: trigger a
// pipeline with parameters from a form and read them back in the job's output; rerun a failed
// workflow from failed and a passing one whole, and see each new workflow linked to the one it
// reran; approve a job on hold.

if (!chromiumPresent) console.warn(`skipping the pipeline actions in a browser: no Chromium at ${CHROMIUM} (set GYRE_TEST_CHROMIUM)`);

function config(gate: string): string {
  return `version: 2.1
parameters:
  greeting:
    type: string
    default: hello
  loud:
    type: boolean
    default: false
  count:
    type: integer
    default: 1
jobs:
  greet:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: Greet
          command: echo "greeting=<< pipeline.parameters.greeting >> loud=<< pipeline.parameters.loud >> count=<< pipeline.parameters.count >>"
  flaky:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: Pass once the gate is open
          command: test -f ${gate}
workflows:
  main:
    jobs:
      - greet
      - flaky:
          requires: [greet]
`;
}

const APPROVAL_CONFIG = `version: 2.1
jobs:
  ship:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo shipped
workflows:
  release:
    jobs:
      - hold:
          type: approval
      - ship:
          requires: [hold]
`;

(chromiumPresent ? describe : describe.skip)('pipeline actions in the web UI', () => {
  let gyre: TestGyre;
  let browser: Browser;
  let context: BrowserContext;
  let gateDir: string;
  let gate: string;

  beforeAll(async () => {
    gateDir = mkdtempSync(join(tmpdir(), 'gyre-ui-rerun-'));
    gate = join(gateDir, 'open');
    gyre = await startTestGyre();
    await gyre.addProject('gh/acme/actions', { '.circleci/config.yml': config(gate) });
    await gyre.addProject('gh/acme/release', { '.circleci/config.yml': APPROVAL_CONFIG });
    browser = await launchChromium();
    context = await signedInContext(browser, gyre);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await gyre?.stop();
    if (gateDir) rmSync(gateDir, { recursive: true, force: true });
  });

  test('a trigger form starts a pipeline on a branch with typed parameters, and the job prints them', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/project/gh/acme/actions`);
    await page.click('summary.trigger-open', WAIT);
    const form = page.locator('form.trigger-form');
    expect(await form.locator('.trigger-branch').inputValue()).toBe('main');

    // A typed value that is not what its type allows is refused before anything is sent, naming the input.
    await form.locator('button.add-parameter').click();
    await form.locator('.parameter-row').nth(0).locator('.parameter-name').fill('count');
    await form.locator('.parameter-row').nth(0).locator('.parameter-type').selectOption('integer');
    await form.locator('.parameter-row').nth(0).locator('.parameter-value').fill('12x');
    await form.locator('button[type=submit]').click();
    await page.locator('.trigger-problem', { hasText: 'parameter 1 (count): an integer is whole digits, not "12x"' }).waitFor(WAIT);
    expect((await gyre.api('GET', '/api/v2/project/gh/acme/actions/pipeline')).items).toEqual([]);

    await form.locator('.parameter-row').nth(0).locator('.parameter-value').fill('3');
    await form.locator('button.add-parameter').click();
    await form.locator('.parameter-row').nth(1).locator('.parameter-name').fill('greeting');
    await form.locator('.parameter-row').nth(1).locator('.parameter-value').fill('<b>hi</b> & friends');
    await form.locator('button.add-parameter').click();
    await form.locator('.parameter-row').nth(2).locator('.parameter-name').fill('loud');
    await form.locator('.parameter-row').nth(2).locator('.parameter-type').selectOption('boolean');
    await form.locator('.parameter-row').nth(2).locator('.parameter-flag').selectOption('true');
    await form.locator('button[type=submit]').click();

    // The form goes on to the new pipeline's page, which shows what it was started with.
    await page.waitForURL(/#\/pipeline\/[0-9a-f-]{36}$/, WAIT);
    const pipelineId = page.url().split('/').pop()!;
    const stored = await gyre.api('GET', `/api/v2/pipeline/${pipelineId}`);
    expect(stored.trigger_parameters).toEqual({ count: 3, greeting: '<b>hi</b> & friends', loud: true });
    expect(stored.vcs.branch).toBe('main');
    expect(await page.locator('.pipeline-header .parameter[data-name="greeting"]').textContent({ timeout: WAIT.timeout })).toBe('greeting=<b>hi</b> & friends');

    await page.click('a.job-node[data-name="greet"]', WAIT);
    const log = page.locator('details.step', { hasText: 'Greet' }).locator('.log');
    await log.locator('.log-line', { hasText: 'greeting=' }).waitFor(WAIT);
    expect(await log.textContent()).toBe('greeting=<b>hi</b> & friends loud=true count=3\n');
    expect(await log.locator('b').count()).toBe(0);
    expect(problems).toEqual([]);
    await page.close();
  }, 90_000);

  test('a parameter the config does not declare is sent, and the pipeline page shows why it errored', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/project/gh/acme/actions`);
    await page.click('summary.trigger-open', WAIT);
    const form = page.locator('form.trigger-form');
    await form.locator('button.add-parameter').click();
    await form.locator('.parameter-name').fill('undeclared-one');
    await form.locator('.parameter-value').fill('x');
    await form.locator('button[type=submit]').click();
    await page.waitForURL(/#\/pipeline\//, WAIT);
    const message = page.locator('.pipeline-header .error-message').first();
    await message.waitFor(WAIT);
    expect(await message.textContent()).toContain('undeclared-one');
    expect(await page.locator('.pipeline-status').textContent()).toBe('errored');
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test('rerun from failed makes a linked workflow that reruns only the failed job; rerun whole makes another', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const pipeline = await gyre.trigger('gh/acme/actions');
    const first = await gyre.waitForPipeline(pipeline.id);
    expect(first.jobs.flaky.status).toBe('failed');
    const failedId = first.workflows[0].id;

    await openPage(page, `${gyre.url}/#/pipeline/${pipeline.id}`);
    const failed = page.locator(`section.workflow[data-workflow-id="${failedId}"]`);
    await failed.locator('.badge', { hasText: 'failed' }).waitFor(WAIT);
    writeFileSync(gate, '');
    await failed.locator('button.rerun-failed').click();

    // The page moves to the new workflow of the same pipeline, which says what it reran.
    const rerun = page.locator(`section.workflow[data-rerun-of="${failedId}"]`);
    await rerun.waitFor(WAIT);
    expect(page.url()).toMatch(new RegExp(`#/pipeline/${pipeline.id}/workflows/[0-9a-f-]{36}$`));
    const rerunId = (await rerun.getAttribute('data-workflow-id'))!;
    expect(page.url().endsWith(rerunId)).toBe(true);
    expect(await rerun.evaluate((el) => el.classList.contains('linked'))).toBe(true);
    expect(await rerun.locator('a.rerun-of').textContent()).toBe('main (failed)');
    await rerun.locator('.workflow-head .badge', { hasText: 'success' }).waitFor(WAIT);
    expect(await page.locator('section.workflow').count()).toBe(2);

    const api = await gyre.api('GET', `/api/v2/workflow/${rerunId}`);
    expect(api).toMatchObject({ rerun_of: failedId, pipeline_id: pipeline.id, status: 'success' });
    const jobs = (await gyre.api('GET', `/api/v2/workflow/${rerunId}/job`)).items;
    // greet passed the first time: copied, showing the number of the job that ran; flaky ran again.
    expect(jobs.find((j: any) => j.name === 'greet').job_number).toBe(first.jobs.greet.job_number);
    expect(jobs.find((j: any) => j.name === 'flaky').job_number).not.toBe(first.jobs.flaky.job_number);

    // The link back leads to the workflow it reran. A passing workflow offers a whole rerun only.
    await rerun.locator('a.rerun-of').click();
    await page.waitForURL(new RegExp(`/workflows/${failedId}$`), WAIT);
    const passed = page.locator(`section.workflow[data-workflow-id="${rerunId}"]`);
    await passed.locator('button.rerun-workflow').waitFor(WAIT);
    expect(await passed.locator('button.rerun-failed').count()).toBe(0);
    await passed.locator('button.rerun-workflow').click();
    const again = page.locator(`section.workflow[data-rerun-of="${rerunId}"]`);
    await again.locator('.workflow-head .badge', { hasText: 'success' }).waitFor(WAIT);
    expect(await page.locator('section.workflow').count()).toBe(3);

    // And the project's page shows the pipeline with its three workflows.
    await openPage(page, `${gyre.url}/#/project/gh/acme/actions`);
    const row = page.locator(`.pipeline-row[data-id="${pipeline.id}"]`);
    await row.waitFor(WAIT);
    expect(await row.locator('.workflow-chips .chip').count()).toBe(3);
    expect(problems).toEqual([]);
    await page.close();
  }, 120_000);

  test('an approval job on hold is approved with its button, and the job after it runs', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const pipeline = await gyre.trigger('gh/acme/release');
    await openPage(page, `${gyre.url}/#/pipeline/${pipeline.id}`);
    const hold = page.locator('.job-node[data-name="hold"][data-status="on_hold"]');
    await hold.waitFor(WAIT);
    expect(await page.getAttribute('.job-node[data-name="ship"]', 'data-status')).toBe('blocked');
    await hold.locator('button.approve').click();
    await page.locator('a.job-node[data-name="ship"][data-status="success"]').waitFor(WAIT);
    expect(await page.getAttribute('.job-node[data-name="hold"]', 'data-status')).toBe('success');
    await page.locator('section.workflow[data-name="release"] .workflow-head .badge', { hasText: 'success' }).waitFor(WAIT);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);
});
