/**
 * One workflow on a pipeline's page: its status and actions (cancel while it runs; rerun it whole
 * or from its failed jobs once it has finished), the workflow it reran, and its jobs drawn as a
 * graph (approval jobs on hold carry an Approve button).
 */
import { approveJob, cancelWorkflow, rerunWorkflow } from '../api.js';
import { act, actionButton, cssToken, h, spanDuration, statusBadge, svg } from '../dom.js';
import { links } from '../links.js';
import { ACTIVE_WORKFLOW } from './status.js';

/** Workflow statuses that have ended: such a workflow can be rerun. */
const FINISHED_WORKFLOW = ['success', 'failed', 'error', 'canceled', 'unauthorized', 'not_run'];
/** A rerun from failed needs something that failed. */
const RERUN_FAILED = ['failed', 'error', 'canceled', 'unauthorized'];

export function workflowSection(view, { workflow, jobs, slug, rerunOf, refresh }) {
  const after = async () => {
    if (view.alive) await refresh().catch(() => {});
  };
  const actions = [];
  if (ACTIVE_WORKFLOW.includes(workflow.status)) {
    actions.push(
      actionButton({ className: 'danger cancel-workflow' }, 'Cancel workflow', async () => {
        await act(null, 'Could not cancel workflow ' + workflow.name, () => cancelWorkflow(workflow.id));
        await after();
      }),
    );
  }
  if (FINISHED_WORKFLOW.includes(workflow.status)) {
    const rerun = (fromFailed) => async () => {
      let started = null;
      const what = 'Could not rerun workflow ' + workflow.name + (fromFailed ? ' from failed' : '');
      if (await act(null, what, async () => (started = await rerunWorkflow(workflow.id, fromFailed ? { from_failed: true } : {})))) {
        // The new workflow belongs to the same pipeline: show the page with it in view.
        location.hash = links.workflow(workflow.pipeline_id, started.workflow_id);
      }
    };
    if (RERUN_FAILED.includes(workflow.status)) actions.push(actionButton({ className: 'rerun-failed' }, 'Rerun from failed', rerun(true)));
    actions.push(actionButton({ className: 'rerun-workflow' }, 'Rerun workflow', rerun(false)));
  }
  return h(
    'section',
    { className: 'panel workflow', dataset: { workflowId: workflow.id, name: workflow.name, status: workflow.status, rerunOf: workflow.rerun_of || undefined } },
    h(
      'header',
      { className: 'workflow-head' },
      h('h2', null, workflow.name),
      statusBadge(workflow.status),
      h('span', { className: 'muted duration' }, spanDuration(workflow.created_at, workflow.stopped_at)),
      workflow.rerun_of
        ? h('span', { className: 'muted rerun-note' }, 'rerun of ', h('a', { className: 'rerun-of', href: links.workflow(workflow.pipeline_id, workflow.rerun_of) }, rerunOf ? rerunOf.name + ' (' + String(rerunOf.status).replace(/_/g, ' ') + ')' : 'an earlier workflow'))
        : null,
      h('span', { className: 'spacer' }),
      actions,
    ),
    jobGraph(view, workflow, jobs, slug, after),
  );
}

const NODE_W = 200;
const NODE_H = 52;
const GAP_X = 56;
const GAP_Y = 14;

/**
 * Places jobs in columns by dependency depth (a job sits one column right of its deepest
 * requirement) and orders each column by where its requirements sit, which keeps fan-out/fan-in
 * edges mostly uncrossed.
 */
export function layoutJobs(jobs) {
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const depth = new Map();
  const depthOf = (job, trail) => {
    if (depth.has(job.id)) return depth.get(job.id);
    if (trail.has(job.id)) return 0; // a cycle would be a server bug; do not loop on it
    trail.add(job.id);
    const deps = (job.dependencies || []).map((d) => byId.get(d)).filter(Boolean);
    const d = deps.length ? 1 + Math.max(...deps.map((dep) => depthOf(dep, trail))) : 0;
    trail.delete(job.id);
    depth.set(job.id, d);
    return d;
  };
  jobs.forEach((j) => depthOf(j, new Set()));

  const columns = [];
  jobs.forEach((j, i) => {
    const d = depth.get(j.id);
    (columns[d] = columns[d] || []).push({ job: j, order: i });
  });
  const row = new Map();
  columns.forEach((column, c) => {
    if (c > 0) {
      const centre = (entry) => {
        const rows = (entry.job.dependencies || []).filter((d) => row.has(d)).map((d) => row.get(d));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
      };
      column.sort((a, b) => centre(a) - centre(b) || a.order - b.order);
    }
    column.forEach((entry, r) => row.set(entry.job.id, r));
  });

  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const height = tallest * NODE_H + (tallest - 1) * GAP_Y;
  const positions = new Map();
  columns.forEach((column, c) => {
    const columnHeight = column.length * NODE_H + (column.length - 1) * GAP_Y;
    const top = (height - columnHeight) / 2;
    column.forEach((entry, r) => positions.set(entry.job.id, { x: c * (NODE_W + GAP_X), y: top + r * (NODE_H + GAP_Y) }));
  });
  return { positions, width: columns.length * NODE_W + Math.max(0, columns.length - 1) * GAP_X, height };
}

function jobGraph(view, workflow, jobs, slug, after) {
  if (!jobs.length) return h('p', { className: 'muted' }, 'No jobs.');
  const { positions, width, height } = layoutJobs(jobs);
  const graph = h('div', { className: 'graph', attrs: { role: 'list' } });
  graph.style.width = width + 'px';
  graph.style.height = height + 'px';

  const edges = svg('svg', { class: 'edges', width, height, viewBox: '0 0 ' + width + ' ' + height, 'aria-hidden': 'true' });
  for (const job of jobs) {
    const to = positions.get(job.id);
    for (const dep of job.dependencies || []) {
      const from = positions.get(dep);
      if (!from) continue;
      const x1 = from.x + NODE_W;
      const y1 = from.y + NODE_H / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      edges.append(svg('path', { class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, 'data-from': dep, 'data-to': job.id }));
    }
  }
  graph.append(edges);

  for (const job of jobs) {
    const pos = positions.get(job.id);
    const isApproval = job.type === 'approval';
    const meta = [job.status ? String(job.status).replace(/_/g, ' ') : '', spanDuration(job.started_at, job.stopped_at)].filter(Boolean).join(' · ');
    const content = [
      h('span', { className: 'node-icon', attrs: { 'aria-hidden': 'true' } }),
      h('span', { className: 'node-text' }, h('span', { className: 'node-name' }, job.name), h('span', { className: 'node-meta' }, isApproval ? (job.status === 'on_hold' ? 'on hold' : 'approval · ' + meta) : meta)),
    ];
    const props = {
      className: 'job-node status-' + cssToken(job.status) + (isApproval ? ' approval' : ''),
      title: job.name + ' — ' + job.status,
      dataset: { jobId: job.id, name: job.name, status: job.status },
      attrs: { role: 'listitem' },
    };
    let node;
    if (job.job_number !== undefined && job.job_number !== null && !isApproval) {
      node = h('a', Object.assign(props, { href: links.job(job.project_slug || slug, job.job_number) }), content);
    } else {
      node = h('div', props, content);
      if (isApproval && job.status === 'on_hold') {
        node.append(
          actionButton({ className: 'primary approve' }, 'Approve', async () => {
            await act(null, 'Could not approve ' + job.name, () => approveJob(workflow.id, job.approval_request_id || job.id));
            await after();
          }),
        );
      }
    }
    node.style.left = pos.x + 'px';
    node.style.top = pos.y + 'px';
    node.style.width = NODE_W + 'px';
    node.style.height = NODE_H + 'px';
    graph.append(node);
  }
  return h('div', { className: 'graph-scroll' }, graph);
}
