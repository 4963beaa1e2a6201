import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page, Route } from 'playwright-core';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { chromiumPresent, CHROMIUM, launchChromium, openPage, pageShown, signedInContext, WAIT, watchForProblems } from './browser';

// A project's insights page in Chromium: the workflow metrics of CircleCI's
// GET /insights/{project-slug}/workflows as a table, and each workflow's recent runs
// (GET /insights/{project-slug}/workflows/{name}) as a chart of green and red points. The
// answers come from the Gyre under test when it serves them, and otherwise from a fixture in the
// spec's shapes (test/fixtures/ui/insights.json); a server without the routes gets a message.

if (!chromiumPresent) console.warn(`skipping the insights page in a browser: no Chromium at ${CHROMIUM} (set GYRE_TEST_CHROMIUM)`);

const FIXTURE = JSON.parse(readFileSync(join(__dirname, '../fixtures/ui/insights.json'), 'utf8')) as { summary: { items: any[] }; runs: Record<string, any[]> };
const HOSTILE = '<img src=x onerror=alert(1)>';

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo built
workflows:
  build:
    jobs: [build]
`;

/** Answers the insights routes from the fixture; records the query of each summary request. */
async function serveFixture(page: Page, asked: URLSearchParams[]): Promise<void> {
  await page.route('**/api/v2/insights/**', async (route: Route) => {
    const url = new URL(route.request().url());
    const match = /\/insights\/gh\/acme\/charts\/workflows(?:\/([^/]+))?$/.exec(url.pathname);
    if (!match) return route.fulfill({ status: 404, contentType: 'application/json', body: '{"message":"not in the fixture"}' });
    if (!match[1]) {
      asked.push(url.searchParams);
      return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(FIXTURE.summary) });
    }
    const runs = FIXTURE.runs[decodeURIComponent(match[1])] ?? [];
    return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ items: runs, next_page_token: null }) });
  });
}

/** How many of the chart's pixels are (close to) this colour. */
function pixelsOf(page: Page, selector: string, rgb: [number, number, number]): Promise<number> {
  return page.locator(selector).evaluate((canvas: any, colour: number[]) => {
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (Math.abs(data[i] - colour[0]) < 8 && Math.abs(data[i + 1] - colour[1]) < 8 && Math.abs(data[i + 2] - colour[2]) < 8 && data[i + 3] > 200) n++;
    return n;
  }, rgb);
}

(chromiumPresent ? describe : describe.skip)('the insights page in the web UI', () => {
  let gyre: TestGyre;
  let browser: Browser;
  let context: BrowserContext;

  beforeAll(async () => {
    gyre = await startTestGyre();
    await gyre.addProject('gh/acme/charts', { '.circleci/config.yml': CONFIG });
    await gyre.waitForPipeline((await gyre.trigger('gh/acme/charts')).id);
    browser = await launchChromium();
    context = await signedInContext(browser, gyre);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await gyre?.stop();
  });

  test("the project's Insights link shows what this server answers: its metrics, or that insights are not available", async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const served = await gyre.raw('GET', '/api/v2/insights/gh/acme/charts/workflows?reporting-window=last-30-days');
    await openPage(page, `${gyre.url}/#/project/gh/acme/charts`);
    await page.click('a.insights-link', WAIT);
    await pageShown(page, `${gyre.url}/#/insights/gh/acme/charts`);
    if (served.status === 404) {
      const message = page.locator('.insights-unavailable');
      await message.waitFor(WAIT);
      expect(await message.textContent()).toContain('Insights are not available for gh/acme/charts on this server.');
      expect(await page.locator('table.insights-workflows').count()).toBe(0);
    } else if (served.status === 200) {
      const items: any[] = served.body.items;
      if (!items.length) {
        await page.locator('.no-insights').waitFor(WAIT);
      } else {
        await page.locator('tr.insights-row').first().waitFor(WAIT);
        expect(await page.locator('tr.insights-row').count()).toBe(items.length);
        const shown = await page.locator('tr.insights-row').evaluateAll((rows) => rows.map((r: any) => [r.dataset.name, r.querySelector('.insights-runs').textContent]));
        expect(Object.fromEntries(shown)).toEqual(Object.fromEntries(items.map((w) => [w.name, String(w.metrics.total_runs)])));
      }
    } else {
      // Any other answer is an error the page shows in the API's words (the browser logs its status).
      await page.locator('.error-panel', { hasText: served.body.message }).waitFor(WAIT);
    }
    expect(problems.filter((p) => !(served.status >= 500 && p.includes(`status of ${served.status}`)))).toEqual([]);
    await page.close();
  }, 60_000);

  test('workflow metrics in the API shapes read as a table, and each workflow as a chart of its runs', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    const dialogs: string[] = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    const asked: URLSearchParams[] = [];
    await serveFixture(page, asked);
    await openPage(page, `${gyre.url}/#/insights/gh/acme/charts`);

    const build = page.locator('tr.insights-row[data-name="build"]');
    await build.waitFor(WAIT);
    expect(await page.locator('tr.insights-row').evaluateAll((rows) => rows.map((r: any) => r.dataset.name))).toEqual(['build', HOSTILE]);
    expect(await build.locator('.insights-runs').textContent()).toBe('5');
    expect(await build.locator('.insights-success').textContent()).toBe(' 80%');
    expect(await build.locator('.insights-failed').textContent()).toBe('1');
    expect(await build.locator('.insights-throughput').textContent()).toBe('0.17 / day');
    expect(await build.locator('.insights-median').textContent()).toBe('1m 5s');
    expect(await build.locator('.insights-p95').textContent()).toBe('2m 10s');
    expect(await build.locator('.insights-mttr').textContent()).toBe('10m 0s');
    expect(await page.locator(`tr.insights-row[data-name="${HOSTILE}"] .insights-mttr`).textContent()).toBe('—');
    // The success rate is also a bar, as wide as the rate.
    expect(await build.locator('.rate-fill').evaluate((el: any) => el.style.width)).toBe('80%');
    expect(asked[0].get('reporting-window')).toBe('last-30-days');
    expect(asked[0].has('all-branches')).toBe(false);

    // Each workflow's runs: green points for successes, red for failures, on a chart per workflow.
    const chart = page.locator('.insights-chart[data-name="build"]');
    await chart.locator('canvas').waitFor(WAIT);
    expect(await chart.getAttribute('data-runs')).toBe('5');
    expect(await chart.locator('.u-title').textContent()).toBe('build: duration of each run');
    expect(await chart.locator('.u-legend .u-label').allTextContents()).toEqual(['Time', 'success', 'failed']);
    expect(await pixelsOf(page, '.insights-chart[data-name="build"] canvas', [31, 157, 85])).toBeGreaterThan(20);
    expect(await pixelsOf(page, '.insights-chart[data-name="build"] canvas', [210, 59, 59])).toBeGreaterThan(5);
    const hostileChart = page.locator('.insights-chart').nth(1);
    await hostileChart.locator('canvas').waitFor(WAIT);
    expect(await hostileChart.locator('.u-title').textContent()).toBe(`${HOSTILE}: duration of each run`);
    expect(await page.locator('main img').count()).toBe(0);
    if (process.env.GYRE_TEST_SCREENSHOTS) await page.screenshot({ path: join(process.env.GYRE_TEST_SCREENSHOTS, 'insights.png'), fullPage: true });

    // Another window and all branches ask again with those.
    await page.check('input.insights-all-branches');
    await page.selectOption('select.insights-window', 'last-7-days');
    await page.waitForFunction((n) => (globalThis as any).document.querySelectorAll('.insights-chart canvas').length === n, 2, WAIT);
    const last = asked[asked.length - 1];
    expect(last.get('reporting-window')).toBe('last-7-days');
    expect(last.get('all-branches')).toBe('true');
    expect(last.has('branch')).toBe(false);
    expect(dialogs).toEqual([]);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  test('a server without the insights routes gets a message, not an error', async () => {
    const page = await context.newPage();
    const problems = watchForProblems(page);
    await page.route('**/api/v2/insights/**', (route) => route.fulfill({ status: 404, contentType: 'application/json', body: '{"message":"route not found: GET /api/v2/insights/gh/acme/charts/workflows"}' }));
    await openPage(page, `${gyre.url}/#/insights/gh/acme/charts`);
    const message = page.locator('.insights-unavailable');
    await message.waitFor(WAIT);
    expect(await message.textContent()).toBe('Insights are not available for gh/acme/charts on this server. The API answered: route not found: GET /api/v2/insights/gh/acme/charts/workflows');
    expect(await page.locator('.error-panel').count()).toBe(0);
    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);
});
