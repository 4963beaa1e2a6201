/**
 * Gyre's web UI: a single page that reads the REST API (CircleCI API v2 shapes, through api.js)
 * with the browser session's cookie and routes on the URL fragment (links.js lists the pages).
 * Each page is a view module under views/; this one only starts the UI, routes, and shows the
 * sign-in page when the session is missing or over.
 *
 * Everything that came from the API or from a build is put in the page as text nodes
 * (textContent), never as markup. The page has no inline script or style (the server's CSP
 * forbids both); positions are set through the CSSOM, which the policy allows. The modules are
 * native ES modules served as they are: there is no build step.
 */
import { SignInRequired } from './api.js';
import { errorPanel, fill, h, main, onSignInRequired, setCrumbs } from './dom.js';
import { links, parseRoute } from './links.js';
import { createView } from './view.js';
import { auditPage } from './views/audit.js';
import { insightsPage } from './views/insights.js';
import { jobPage } from './views/job.js';
import { orgPage, projectMembersPage } from './views/members.js';
import { projectNotificationsPage, projectWebhooksPage } from './views/notifications.js';
import { pipelinePage } from './views/pipeline.js';
import { projectPage } from './views/project.js';
import { projectsPage } from './views/projects.js';
import { contextPage, contextsPage, projectVariablesPage } from './views/settings.js';
import { forgetUser, hasPendingSignInError, loadMe, signInPage, takeErrorFromFragment, takeTokenFromFragment } from './views/signin.js';
import { tokensPage } from './views/tokens.js';

const pages = {
  projects: projectsPage,
  project: projectPage,
  pipeline: pipelinePage,
  job: jobPage,
  insights: insightsPage,
  org: orgPage,
  members: projectMembersPage,
  envvars: projectVariablesPage,
  webhooks: projectWebhooksPage,
  notifications: projectNotificationsPage,
  contexts: contextsPage,
  context: contextPage,
  tokens: tokensPage,
  audit: auditPage,
};

let currentView = null;

function showSignIn(message) {
  if (currentView) currentView.dispose();
  currentView = createView();
  signInPage(currentView, route, message);
}

/**
 * The address whose page `#main` now holds, once its first load is drawn: until then the old page
 * may still be on screen under the new address (an assistive tool or a test waits for it).
 */
function markShown(view, hash) {
  if (view.alive) main().dataset.shown = hash;
}

async function route() {
  if (currentView) currentView.dispose();
  const view = (currentView = createView());
  const hash = location.hash || '#/';
  delete main().dataset.shown;
  try {
    await show(view, hash);
  } finally {
    markShown(view, hash);
  }
}

async function show(view, hash) {
  const target = parseRoute(hash);
  const page = pages[target.page];
  try {
    await loadMe(showSignIn);
    if (!view.alive) return;
    if (!page) {
      setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'Not found' });
      fill(main(), h('div', { className: 'panel' }, 'There is no page at this address. ', h('a', { href: links.projects() }, 'Go to projects')));
      return;
    }
    await page(view, target);
  } catch (err) {
    if (!view.alive) return;
    if (err instanceof SignInRequired) return showSignIn();
    fill(main(), errorPanel(err));
  }
}

async function start() {
  onSignInRequired(() => showSignIn());
  takeErrorFromFragment();
  await takeTokenFromFragment();
  if (location.pathname === '/login' && !hasPendingSignInError()) history.replaceState(null, '', '/' + (location.hash || '#/'));
  window.addEventListener('hashchange', async () => {
    if (await takeTokenFromFragment()) forgetUser();
    route();
  });
  route();
}

start();
