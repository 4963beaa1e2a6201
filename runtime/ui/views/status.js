/** How pipelines and workflows read at a glance: which are still going, and one status for many. */
import { h } from '../dom.js';

export const ACTIVE_WORKFLOW = ['running', 'failing', 'on_hold'];
const ACTIVE_PIPELINE = ['created', 'setup-pending', 'setup', 'pending'];
export const FINISHED_JOB = ['success', 'failed', 'not_run', 'canceled', 'infrastructure_fail', 'timedout', 'terminated-unknown', 'unauthorized'];
export const STARTED_JOB = ['running', 'queued'];

export function pipelineIsActive(pipeline, workflows) {
  if (pipeline.state === 'errored') return false;
  if (pipeline.state !== 'created') return ACTIVE_PIPELINE.includes(pipeline.state);
  return workflows.length === 0 || workflows.some((w) => ACTIVE_WORKFLOW.includes(w.status));
}

/** One status for a pipeline: the worst of its workflows, or running while any runs. */
export function workflowsSummary(workflows) {
  const order = ['failing', 'running', 'on_hold', 'error', 'failed', 'canceled', 'unauthorized', 'not_run', 'success'];
  let best = 'success';
  for (const w of workflows) if (order.indexOf(w.status) !== -1 && order.indexOf(w.status) < order.indexOf(best)) best = w.status;
  return best;
}

/** The status a pipeline shows: its state until its workflows exist, then theirs. */
export function pipelineStatus(pipeline, workflows) {
  return pipeline.state === 'created' && workflows.length ? workflowsSummary(workflows) : pipeline.state;
}

export function refText(vcs) {
  if (!vcs) return '';
  if (vcs.tag) return 'tag ' + vcs.tag;
  return vcs.branch || '';
}

export function pipelineErrors(pipeline) {
  const errors = pipeline.errors || [];
  if (!errors.length) return null;
  return h(
    'ul',
    { className: 'pipeline-errors' },
    errors.map((e) => h('li', null, h('span', { className: 'error-type' }, e.type || 'error'), h('pre', { className: 'error-message' }, e.message || ''))),
  );
}
