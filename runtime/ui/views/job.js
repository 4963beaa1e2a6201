/**
 * A job's page: its header (status, duration, a Cancel button while it has not finished) and
 * three tabs: its steps with their logs (searchable, each downloadable raw), its test results and
 * its artifacts.
 */
import { cancelJob, getJob, getPipeline } from '../api.js';
import { act, actionButton, cssToken, fact, fill, formatDuration, h, main, setCrumbs, spanDuration, statusBadge, timeAgo } from '../dom.js';
import { links } from '../links.js';
import { POLL_MS } from '../view.js';
import { createArtifacts } from './artifacts.js';
import { createStepList } from './log.js';
import { FINISHED_JOB, STARTED_JOB } from './status.js';
import { createTestResults } from './tests.js';

export async function jobPage(view, { slug, number }) {
  let job = await getJob(slug, number);
  const pipelineId = job.pipeline && job.pipeline.id;
  // Only for the pipeline's number in the breadcrumbs: not worth failing the page over.
  const pipeline = pipelineId ? await getPipeline(pipelineId).catch(() => null) : null;
  if (!view.alive) return;
  const pipelineName = pipeline ? 'Pipeline #' + pipeline.number : 'Pipeline';
  setCrumbs(
    { text: 'Projects', href: links.projects() },
    { text: slug, href: links.project(slug) },
    pipelineId ? { text: pipelineName, href: links.pipeline(pipelineId) } : null,
    { text: job.name + ' #' + job.number },
  );

  const header = h('section', { className: 'panel job-header' });
  const nodesBar = h('nav', { className: 'nodes', attrs: { 'aria-label': 'Parallel runs' } });
  const stepsBox = h('div', { className: 'steps', attrs: { 'aria-live': 'off' } });

  // Searching the log: matches are marked, and with "only matching lines" the rest are hidden.
  const searchInput = h('input', { type: 'search', className: 'log-search', placeholder: 'Search the log', spellcheck: false, maxLength: 500, attrs: { 'aria-label': 'Search the log' } });
  const onlyMatching = h('input', { type: 'checkbox', className: 'log-filter' });
  const matchCount = h('span', { className: 'log-matches muted', attrs: { role: 'status' } });
  const searchBar = h('div', { className: 'log-search-bar inline-form' }, searchInput, h('label', null, onlyMatching, ' Only matching lines'), matchCount);
  let searchRun = 0;
  async function runSearch() {
    const run = ++searchRun;
    const query = searchInput.value;
    if (!logs) return;
    const count = await logs.search(query, onlyMatching.checked);
    if (run !== searchRun || !view.alive) return;
    showCount(query, count);
  }
  function showCount(query, count) {
    fill(matchCount, query ? (count === 1 ? '1 matching line' : count + ' matching lines') : '');
  }
  let searchTimer = null;
  searchInput.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 150);
  });
  onlyMatching.addEventListener('change', runSearch);

  const panels = {
    steps: h('div', { className: 'tab-panel', id: 'tab-steps', attrs: { role: 'tabpanel' } }, nodesBar, searchBar, stepsBox),
    tests: h('div', { className: 'tab-panel', id: 'tab-tests', hidden: true, attrs: { role: 'tabpanel' } }),
    artifacts: h('div', { className: 'tab-panel', id: 'tab-artifacts', hidden: true, attrs: { role: 'tabpanel' } }),
  };
  const tabs = {};
  for (const [name, label] of [['steps', 'Steps'], ['tests', ''], ['artifacts', '']]) {
    tabs[name] = h('button', { type: 'button', className: 'tab', dataset: { tab: name }, attrs: { role: 'tab', 'aria-controls': 'tab-' + name }, onclick: () => showTab(name) }, label);
  }
  fill(main(), header, h('nav', { className: 'tabs', attrs: { role: 'tablist', 'aria-label': 'Job' } }, Object.values(tabs)), Object.values(panels));
  const testResults = createTestResults(view, tabs.tests, panels.tests, slug, number);
  const artifacts = createArtifacts(view, tabs.artifacts, panels.artifacts, slug, number);

  function showTab(name) {
    for (const [tabName, tab] of Object.entries(tabs)) {
      const selected = tabName === name;
      tab.classList.toggle('selected', selected);
      tab.setAttribute('aria-selected', String(selected));
      panels[tabName].hidden = !selected;
    }
  }
  showTab('steps');

  let node = 0;
  let logs = null; // the step list of the node on screen

  async function refreshJob() {
    job = await getJob(slug, number);
    if (view.alive) drawHeader();
  }

  function drawHeader() {
    const cancel = FINISHED_JOB.includes(job.status)
      ? null
      : actionButton({ className: 'danger cancel-job' }, 'Cancel job', async () => {
          await act(null, 'Could not cancel ' + job.name + ' #' + job.number, () => cancelJob(slug, number));
          await refreshJob().catch(() => {});
        });
    fill(
      header,
      h('h1', null, job.name, ' ', h('span', { className: 'muted' }, '#' + job.number), ' ', statusBadge(job.status, 'job-status'), h('span', { className: 'spacer' }), cancel),
      h(
        'dl',
        { className: 'facts' },
        fact('Project', h('a', { href: links.project(slug) }, slug)),
        pipelineId ? fact('Pipeline', h('a', { href: links.pipeline(pipelineId) }, pipeline ? '#' + pipeline.number : 'open')) : null,
        job.latest_workflow ? fact('Workflow', job.latest_workflow.name || '') : null,
        fact('Executor', (job.executor && job.executor.type) || '—'),
        fact('Duration', job.duration !== undefined && job.duration !== null ? formatDuration(job.duration) : spanDuration(job.started_at, job.stopped_at) || '—'),
        fact('Started', timeAgo(job.started_at)),
      ),
    );
    const runs = job.parallel_runs || [];
    if ((job.parallelism || 1) > 1 && runs.length) {
      fill(
        nodesBar,
        h('span', { className: 'muted' }, 'Parallel runs:'),
        runs.map((r) =>
          h(
            'button',
            {
              type: 'button',
              className: 'node-tab status-' + cssToken(r.status) + (r.index === node ? ' selected' : ''),
              attrs: { 'aria-pressed': r.index === node },
              onclick: () => {
                if (r.index === node) return;
                node = r.index;
                drawHeader();
                showNode();
              },
            },
            String(r.index),
          ),
        ),
      );
    } else {
      fill(nodesBar);
    }
  }

  function showNode() {
    if (logs) logs.dispose();
    logs = createStepList(view, stepsBox, { slug, number, node, jobName: job.name, onLinesChanged: () => showCount(searchInput.value, logs.matchCount()) });
    if (STARTED_JOB.includes(job.status)) logs.follow(onEnd);
    else logs.loadFinished().then(() => searchInput.value && runSearch());
  }

  async function onEnd() {
    job = await getJob(slug, number);
    if (!view.alive) return;
    drawHeader();
    testResults.load();
    artifacts.load();
  }

  drawHeader();
  showNode();
  // Results and artifacts are stored by steps of the job, so a running job may have some already.
  testResults.load();
  artifacts.load();

  // Keep the header (status, duration) current while the job runs; the log follows its stream.
  view.later(
    () =>
      view.poll(
        async () => {
          job = await getJob(slug, number);
          if (!view.alive) return false;
          drawHeader();
          const done = FINISHED_JOB.includes(job.status);
          if (done) {
            testResults.load();
            artifacts.load();
          }
          if (logs && !logs.following && STARTED_JOB.includes(job.status)) logs.follow(onEnd);
          return !done;
        },
        (running) => (running ? POLL_MS : null),
      ),
    POLL_MS,
  );
}
