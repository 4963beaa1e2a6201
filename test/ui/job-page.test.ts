import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { chromiumPresent, CHROMIUM, launchChromium, openPage, pageShown, signedInContext, WAIT, watchForProblems } from './browser';

// A job's page in Chromium against a whole Gyre: the Artifacts tab lists what the job stored and
// its link downloads it; a search marks the matching lines of the log and can hide the others; a
// step's raw log downloads as the build wrote it; Cancel stops a running job.

if (!chromiumPresent) console.warn(`skipping the job page in a browser: no Chromium at ${CHROMIUM} (set GYRE_TEST_CHROMIUM)`);

/** A file name a build chose: markup, which the page must show as text. */
const HOSTILE_NAME = '<img src=x onerror=alert(1)>.txt';

const CONFIG = `version: 2.1
jobs:
  report:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: Write a report
          command: |
            mkdir -p out
            printf 'artifact body 42\\n' > 'out/${HOSTILE_NAME}'
            printf 'plain notes\\n' > out/notes.txt
            echo "alpha one"
            echo "beta two"
            printf '\\033[31mALPHA red\\033[0m three\\n'
            echo "gamma (.* four"
      - store_artifacts:
          path: out
          destination: reports
  sleeper:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: Sleep a long time
          command: echo started-sleeping; sleep 300; echo never-printed
workflows:
  main:
    jobs: [report, sleeper]
`;

const REPORT_OUTPUT = 'alpha one\nbeta two\n\x1b[31mALPHA red\x1b[0m three\ngamma (.* four\n';

(chromiumPresent ? describe : describe.skip)('the job page in the web UI', () => {
  let gyre: TestGyre;
  let browser: Browser;
  let context: BrowserContext;
  let jobs: Record<string, number>;

  /** Waits until the pipeline's job `name` has `status`; answers its number. */
  async function jobReaches(pipelineId: string, name: string, status: string): Promise<number> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const workflows = (await gyre.api('GET', `/api/v2/pipeline/${pipelineId}/workflow`)).items;
      for (const w of workflows) {
        const job = (await gyre.api('GET', `/api/v2/workflow/${w.id}/job`)).items.find((j: any) => j.name === name);
        if (job?.status === status) return job.job_number;
      }
      if (Date.now() > deadline) throw new Error(`job ${name} of pipeline ${pipelineId} did not reach ${status}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    gyre = await startTestGyre();
    await gyre.addProject('gh/acme/jobs', { '.circleci/config.yml': CONFIG });
    const pipeline = await gyre.trigger('gh/acme/jobs');
    jobs = { report: await jobReaches(pipeline.id, 'report', 'success'), sleeper: await jobReaches(pipeline.id, 'sleeper', 'running') };
    browser = await launchChromium();
    context = await signedInContext(browser, gyre);
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await gyre?.stop();
  });

  test('the Artifacts tab lists what the job stored, as text, and a link downloads it', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const dialogs: string[] = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    await openPage(page, `${gyre.url}/#/job/gh/acme/jobs/${jobs.report}`);
    const tab = page.locator('button.tab[data-tab="artifacts"]');
    await tab.locator('.artifact-count').waitFor(WAIT);
    expect(await tab.textContent()).toBe('Artifacts 2');
    expect(await page.locator('#tab-artifacts').isVisible()).toBe(false);
    await tab.click();

    const items = page.locator('#tab-artifacts li.artifact');
    expect(await items.count()).toBe(2);
    const hostile = page.locator('#tab-artifacts a.artifact-link', { hasText: HOSTILE_NAME });
    expect(await hostile.textContent()).toBe(`reports/${HOSTILE_NAME}`);
    expect(await page.locator('#tab-artifacts img').count()).toBe(0);

    const [download] = await Promise.all([page.waitForEvent('download', WAIT), hostile.click()]);
    expect(readFileSync((await download.path())!, 'utf8')).toBe('artifact body 42\n');
    const [notes] = await Promise.all([page.waitForEvent('download', WAIT), page.locator('#tab-artifacts a.artifact-link', { hasText: 'notes.txt' }).click()]);
    expect(notes.suggestedFilename()).toBe('notes.txt');
    expect(readFileSync((await notes.path())!, 'utf8')).toBe('plain notes\n');
    expect(dialogs).toEqual([]);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test('a search marks the matching lines of the log, in any case, and can hide the others', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/job/gh/acme/jobs/${jobs.report}`);
    const log = page.locator('details.step', { hasText: 'Write a report' }).locator('.log');
    await log.locator('.log-line').first().waitFor(WAIT);
    const lines = log.locator('.log-line');
    expect(await lines.count()).toBe(4);

    await page.fill('input.log-search', 'alpha');
    await page.locator('.log-matches', { hasText: '2 matching lines' }).waitFor(WAIT);
    expect(await log.locator('mark.log-match').allTextContents()).toEqual(['alpha', 'ALPHA']);
    // The mark sits inside the line's colour: the red stays red.
    expect(await log.locator('span.ansi-red mark.log-match').textContent()).toBe('ALPHA');
    expect(await log.locator('.log-line.match').allTextContents()).toEqual(['alpha one\n', 'ALPHA red three\n']);
    // Marking changes nothing of the text itself.
    expect(await log.textContent()).toBe('alpha one\nbeta two\nALPHA red three\ngamma (.* four\n');
    expect(await log.locator('.log-line', { hasText: 'beta two' }).isVisible()).toBe(true);

    await page.check('input.log-filter');
    await log.locator('.log-line', { hasText: 'beta two' }).waitFor({ state: 'hidden', ...WAIT });
    expect(await log.locator('.log-line:visible').allTextContents()).toEqual(['alpha one\n', 'ALPHA red three\n']);
    if (process.env.GYRE_TEST_SCREENSHOTS) await page.screenshot({ path: join(process.env.GYRE_TEST_SCREENSHOTS, 'log-search.png') });

    // What is typed is text to find, never a pattern.
    await page.fill('input.log-search', '(.*');
    await page.locator('.log-matches', { hasText: '1 matching line' }).waitFor(WAIT);
    expect(await log.locator('.log-line:visible').allTextContents()).toEqual(['gamma (.* four\n']);
    await page.fill('input.log-search', 'nothing like this');
    await page.locator('.log-matches', { hasText: '0 matching lines' }).waitFor(WAIT);
    expect(await log.locator('.log-line:visible').count()).toBe(0);

    // An empty search shows every line again, unmarked.
    await page.fill('input.log-search', '');
    await page.locator('.log-matches:empty').waitFor({ state: 'attached', ...WAIT });
    await log.locator('.log-line', { hasText: 'beta two' }).waitFor({ state: 'visible', ...WAIT });
    expect(await log.locator('.log-line:visible').count()).toBe(4);
    expect(await log.locator('mark').count()).toBe(0);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test("a step's raw log downloads as the build wrote it, colour codes and all", async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/job/gh/acme/jobs/${jobs.report}`);
    const step = page.locator('details.step', { hasText: 'Write a report' });
    await step.locator('.log-line').first().waitFor(WAIT);
    const [download] = await Promise.all([page.waitForEvent('download', WAIT), step.locator('a.raw-log').click()]);
    const index = await step.getAttribute('data-index');
    expect(download.suggestedFilename()).toBe(`report-${jobs.report}-step-${index}.log`);
    expect(readFileSync((await download.path())!, 'utf8')).toBe(REPORT_OUTPUT);
    // The page stays where it was.
    await pageShown(page, `${gyre.url}/#/job/gh/acme/jobs/${jobs.report}`);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test('Cancel stops a running job: its page and the API say canceled', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await openPage(page, `${gyre.url}/#/job/gh/acme/jobs/${jobs.sleeper}`);
    await page.locator('details.step .log', { hasText: 'started-sleeping' }).waitFor(WAIT);
    expect(await page.locator('.job-status').textContent()).toBe('running');
    // A finished job offers no Cancel; this one does.
    await page.locator('button.cancel-job').click();
    await page.locator('.job-status.status-canceled').waitFor(WAIT);
    expect(await page.locator('button.cancel-job').count()).toBe(0);
    const job = await gyre.api('GET', `/api/v2/project/gh/acme/jobs/job/${jobs.sleeper}`);
    expect(job.status).toBe('canceled');
    expect(await page.locator('details.step .log').first().textContent()).not.toContain('never-printed');

    await openPage(page, `${gyre.url}/#/job/gh/acme/jobs/${jobs.report}`);
    await page.locator('.job-status.status-success').waitFor(WAIT);
    expect(await page.locator('button.cancel-job').count()).toBe(0);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);
});
