/**
 * A project's insights: for each workflow over a chosen window (and branch), its runs, success
 * rate, throughput, durations and mean time to recovery (CircleCI's GET
 * /insights/{project-slug}/workflows), and a chart of its recent runs' durations, green for
 * successes and red for failures (GET /insights/{project-slug}/workflows/{name}). Charts are
 * uPlot, served from Gyre itself; a server without the insights routes gets a message, not an error.
 */
import uPlot from '../vendor/uPlot.esm.js';
import { ApiError, getProject, insightsWorkflowRuns, insightsWorkflows, SignInRequired } from '../api.js';
import { errorPanel, fill, formatDuration, h, main, requireSignIn, select, setCrumbs } from '../dom.js';
import { links } from '../links.js';

const WINDOWS = [
  ['last-24-hours', 'last 24 hours'],
  ['last-7-days', 'last 7 days'],
  ['last-30-days', 'last 30 days'],
  ['last-60-days', 'last 60 days'],
  ['last-90-days', 'last 90 days'],
];
/** Charts are drawn for this many workflows at most (the busiest first). */
const MAX_CHARTS = 6;
const COLOURS = { success: '#1f9d55', failed: '#d23b3b' };

/** A duration the API gives in seconds, as the rest of the UI writes durations. */
function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return '—';
  return Number(value) === 0 ? '0s' : formatDuration(Math.round(Number(value) * 1000));
}
const percent = (rate) => (Number.isFinite(Number(rate)) ? Math.round(Number(rate) * 1000) / 10 + '%' : '—');
const perDay = (value) => (Number.isFinite(Number(value)) ? (Math.round(Number(value) * 100) / 100).toString() + ' / day' : '—');

function rateBar(rate) {
  const fill = h('span', { className: 'rate-fill' });
  fill.style.width = Math.max(0, Math.min(100, Number(rate) * 100 || 0)) + '%';
  return h('span', { className: 'rate-bar', attrs: { 'aria-hidden': 'true' } }, fill);
}

/** uPlot's columns for runs: x (seconds since the epoch, ascending), then a duration per outcome. */
export function chartData(runs) {
  const points = runs
    .map((r) => ({ t: Date.parse(r.created_at) / 1000, d: r.duration === null || r.duration === undefined ? null : Number(r.duration), ok: r.status === 'success' }))
    .filter((p) => Number.isFinite(p.t) && p.d !== null && Number.isFinite(p.d))
    .sort((a, b) => a.t - b.t);
  return [points.map((p) => p.t), points.map((p) => (p.ok ? p.d : null)), points.map((p) => (p.ok ? null : p.d))];
}

/**
 * The chart's x range: the reporting window (or the runs, where they fall outside it), padded so
 * no point sits on an edge; one run alone still gets a readable span of time around it.
 */
export function timeRange(xs, windowStart, windowEnd) {
  const start = Math.min(Date.parse(windowStart) / 1000 || Infinity, xs[0]);
  const end = Math.max(Date.parse(windowEnd) / 1000 || -Infinity, xs[xs.length - 1]);
  const pad = Math.max(3600, (end - start) * 0.03);
  return [start - pad, end + pad];
}

/** Draws a chart of the runs into `box`; answers the uPlot instance (to destroy), or null. */
function drawChart(box, name, runs, windowStart, windowEnd) {
  const data = chartData(runs);
  if (!data[0].length) {
    fill(box, h('p', { className: 'muted no-runs' }, 'No finished runs of ' + name + ' in this window.'));
    return null;
  }
  fill(box);
  const points = (colour) => ({ show: true, size: 7, stroke: colour, fill: colour });
  const plot = new uPlot(
    {
      title: name + ': duration of each run',
      width: Math.max(320, Math.min(1100, (box.clientWidth || 900) - 8)),
      height: 220,
      scales: {
        x: { time: true, range: () => timeRange(data[0], windowStart, windowEnd) },
        y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.15] },
      },
      series: [
        {},
        { label: 'success', stroke: COLOURS.success, paths: () => null, points: points(COLOURS.success), value: (_u, v) => seconds(v) },
        { label: 'failed', stroke: COLOURS.failed, paths: () => null, points: points(COLOURS.failed), value: (_u, v) => seconds(v) },
      ],
      axes: [{}, { size: 70, values: (_u, ticks) => ticks.map((v) => seconds(v)) }],
    },
    data,
    box,
  );
  box.dataset.runs = String(data[0].length);
  return plot;
}

export async function insightsPage(view, { slug }) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: slug, href: links.project(slug) }, { text: 'Insights' });
  const project = await getProject(slug).catch(() => null);
  if (!view.alive) return;
  const defaultBranch = (project && project.vcs_info && project.vcs_info.default_branch) || '';
  const windowSelect = select(WINDOWS, 'last-30-days', { className: 'insights-window', attrs: { 'aria-label': 'Reporting window' } });
  const branch = h('input', { type: 'text', className: 'insights-branch', placeholder: defaultBranch || 'default branch', maxLength: 1024, spellcheck: false, attrs: { 'aria-label': 'Branch' } });
  const allBranches = h('input', { type: 'checkbox', className: 'insights-all-branches' });
  const body = h('div', { className: 'insights-body' });
  const controls = h(
    'form',
    { className: 'insights-controls inline-form', onsubmit: (e) => { e.preventDefault(); load(); } },
    windowSelect,
    h('label', null, 'Branch ', branch),
    h('label', null, allBranches, ' All branches'),
    h('button', { type: 'submit' }, 'Show'),
  );
  windowSelect.addEventListener('change', () => load());
  allBranches.addEventListener('change', () => {
    branch.disabled = allBranches.checked;
    load();
  });
  fill(main(), h('h1', null, 'Insights', h('span', { className: 'muted' }, slug)), controls, body);

  let run = 0;
  const plots = [];
  const destroyPlots = () => {
    for (const plot of plots.splice(0)) plot.destroy();
  };
  view.onDispose(destroyPlots);
  async function load() {
    const mine = ++run;
    destroyPlots();
    const options = { window: windowSelect.value, branch: branch.value.trim() || undefined, allBranches: allBranches.checked };
    fill(body, h('p', { className: 'muted' }, 'Loading insights…'));
    let workflows;
    try {
      workflows = await insightsWorkflows(slug, options);
    } catch (err) {
      if (err instanceof SignInRequired) return requireSignIn();
      if (mine !== run || !view.alive) return;
      if (err instanceof ApiError && err.status === 404) {
        fill(
          body,
          h('div', { className: 'panel insights-unavailable', attrs: { role: 'status' } },
            h('strong', null, 'Insights are not available'), ' for ' + slug + ' on this server. ',
            h('span', { className: 'muted' }, 'The API answered: ' + err.message)),
        );
      } else {
        fill(body, errorPanel(err));
      }
      return;
    }
    if (mine !== run || !view.alive) return;
    if (!workflows.length) {
      fill(body, h('p', { className: 'panel muted no-insights' }, 'No workflow of ' + slug + ' ran in this window on ' + (options.allBranches ? 'any branch' : options.branch || 'the default branch') + '.'));
      return;
    }
    const sorted = [...workflows].sort((a, b) => b.metrics.total_runs - a.metrics.total_runs || String(a.name).localeCompare(String(b.name)));
    const rows = sorted.map((w) => {
      const m = w.metrics;
      const d = m.duration_metrics || {};
      return h(
        'tr',
        { className: 'insights-row', dataset: { name: String(w.name) } },
        h('td', { className: 'insights-name' }, String(w.name)),
        h('td', { className: 'insights-runs num' }, String(m.total_runs)),
        h('td', { className: 'insights-success num' }, rateBar(m.success_rate), ' ', percent(m.success_rate)),
        h('td', { className: 'insights-failed num' }, String(m.failed_runs)),
        h('td', { className: 'insights-throughput num' }, perDay(m.throughput)),
        h('td', { className: 'insights-median num' }, seconds(d.median)),
        h('td', { className: 'insights-p95 num' }, seconds(d.p95)),
        h('td', { className: 'insights-mttr num' }, m.mttr === null || m.mttr === undefined ? '—' : seconds(m.mttr)),
      );
    });
    const charts = sorted.slice(0, MAX_CHARTS).map((w) => ({ name: String(w.name), start: w.window_start, end: w.window_end, box: h('div', { className: 'insights-chart', dataset: { name: String(w.name) } }, h('p', { className: 'muted' }, 'Loading runs…')) }));
    fill(
      body,
      h(
        'table',
        { className: 'grid insights-workflows' },
        h('thead', null, h('tr', null, ['Workflow', 'Runs', 'Success rate', 'Failed', 'Throughput', 'Median', 'P95', 'Mean time to recovery'].map((t) => h('th', null, t)))),
        h('tbody', null, rows),
      ),
      h('section', { className: 'panel insights-charts' }, h('h2', null, 'Recent runs'), charts.map((c) => c.box)),
    );
    await Promise.all(
      charts.map(async (c) => {
        try {
          const runs = await insightsWorkflowRuns(slug, c.name, { branch: options.branch, allBranches: options.allBranches, startDate: c.start });
          if (mine !== run || !view.alive) return;
          const plot = drawChart(c.box, c.name, runs, c.start, c.end);
          if (plot) plots.push(plot);
        } catch (err) {
          if (err instanceof SignInRequired) return requireSignIn();
          if (mine === run && view.alive) fill(c.box, h('p', { className: 'muted' }, 'The runs of ' + c.name + ' could not be read: ' + err.message));
        }
      }),
    );
  }
  await load();
}
