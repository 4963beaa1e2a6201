import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { TestGyre } from '../support/gyre';

/** Debian's Chromium (GYRE_TEST_CHROMIUM names another); the UI's browser tests skip without one. */
export const CHROMIUM = process.env.GYRE_TEST_CHROMIUM || '/usr/bin/chromium';
export const chromiumPresent = existsSync(CHROMIUM);

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
export const WAIT = { timeout: 30_000 };

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** A browser context signed in to `gyre` with its admin token, through the sign-in link. */
export async function signedInContext(browser: Browser, gyre: TestGyre, token = gyre.token): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  await page.goto(`${gyre.url}/login#token=${token}`);
  await page.locator('.who .login').waitFor(WAIT);
  await page.close();
  return context;
}

/**
 * What a page reported that a user would call broken: script errors and CSP violations. A
 * refused request is a 4xx the browser logs; the page shows it, which the tests check.
 */
export function watchForProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  return problems;
}

/**
 * Goes to `url` and waits until the UI has drawn that page. Going to another address of the same
 * page is a change of fragment only: `page.goto` returns at once while the previous page is still
 * on screen, and a click then lands on its links (a flaky failure once in CI).
 */
export async function openPage(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await pageShown(page, url);
}

/** Waits until the browser is at `url` and the UI has drawn its page. */
export async function pageShown(page: Page, url: string): Promise<void> {
  await page.waitForURL(url, WAIT);
  const hash = new URL(url).hash || '#/';
  await page.locator(`#main[data-shown=${JSON.stringify(hash)}]`).waitFor({ state: 'attached', ...WAIT });
}
