/**
 * A pipeline's page: what started it (branch, revision, parameters), and its workflows, each drawn
 * as a graph of jobs with its actions (views/workflow.js). Kept current while anything runs.
 */
import { getPipeline, listWorkflowJobs, listWorkflows } from '../api.js';
import { fact, fill, h, main, setCrumbs, shortSha, statusBadge, timeAgo } from '../dom.js';
import { links } from '../links.js';
import { POLL_MS } from '../view.js';
import { ACTIVE_WORKFLOW, pipelineErrors, pipelineIsActive, pipelineStatus } from './status.js';
import { workflowSection } from './workflow.js';

function parametersText(parameters) {
  const entries = Object.entries(parameters || {});
  return entries.length ? entries.map(([name, value]) => h('span', { className: 'parameter mono', dataset: { name } }, name + '=' + String(value))) : null;
}

export async function pipelinePage(view, { id, workflowId }) {
  const pipeline = await getPipeline(id);
  if (!view.alive) return;
  const slug = pipeline.project_slug;
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: slug, href: links.project(slug) }, { text: 'Pipeline #' + pipeline.number });

  const header = h('section', { className: 'panel pipeline-header' });
  const workflowsBox = h('div', { className: 'workflows' });
  fill(main(), header, workflowsBox);
  const drawn = new Map(); // workflow id → { section, signature }
  let scrolled = false;

  function drawHeader(p, workflows) {
    const vcs = p.vcs || {};
    const parameters = parametersText(p.trigger_parameters);
    fill(
      header,
      h('h1', null, 'Pipeline #' + p.number, ' ', statusBadge(pipelineStatus(p, workflows), 'pipeline-status')),
      h(
        'dl',
        { className: 'facts' },
        fact('Project', h('a', { href: links.project(slug) }, slug)),
        fact(vcs.tag ? 'Tag' : 'Branch', h('span', { className: 'mono' }, vcs.tag || vcs.branch || '—')),
        fact('Revision', h('span', { className: 'mono', title: vcs.revision || '' }, shortSha(vcs.revision) || '—'), vcs.commit && vcs.commit.subject ? ' ' + vcs.commit.subject : ''),
        fact('Trigger', ((p.trigger && p.trigger.actor && p.trigger.actor.login) || '') + (p.trigger && p.trigger.type ? ' (' + p.trigger.type + ')' : '')),
        parameters ? fact('Parameters', h('span', { className: 'parameters' }, parameters)) : null,
        fact('Created', timeAgo(p.created_at)),
      ),
      pipelineErrors(p),
    );
  }

  async function refresh() {
    const [p, workflows] = await Promise.all([getPipeline(id), listWorkflows(id)]);
    const jobLists = await Promise.all(workflows.map((w) => listWorkflowJobs(w.id)));
    if (!view.alive) return false;
    drawHeader(p, workflows);
    if (!workflows.length) {
      fill(workflowsBox, p.state === 'errored' ? '' : h('p', { className: 'muted' }, 'No workflows yet.'));
      drawn.clear();
    } else {
      const names = new Map(workflows.map((w) => [w.id, w]));
      const sections = workflows.map((w, i) => {
        // Redraw a workflow only when something in it changed (or a running clock must move).
        const signature = JSON.stringify([w, jobLists[i]]);
        const previous = drawn.get(w.id);
        const running = ACTIVE_WORKFLOW.includes(w.status);
        if (previous && previous.signature === signature && !running) return previous.section;
        const section = workflowSection(view, { workflow: w, jobs: jobLists[i], slug, rerunOf: w.rerun_of ? names.get(w.rerun_of) : null, refresh: () => refresh().then(keepPolling) });
        drawn.set(w.id, { section, signature });
        return section;
      });
      fill(workflowsBox, ...sections);
      // A link to one workflow (a commit status on GitHub, a rerun just started) shows that one, once it is drawn.
      const linked = workflowId && drawn.get(workflowId);
      if (linked) {
        linked.section.classList.add('linked');
        if (!scrolled) linked.section.scrollIntoView({ block: 'start' });
        scrolled = true;
      }
    }
    return pipelineIsActive(p, workflows);
  }

  // An action (a rerun, an approval) can wake a pipeline that had stopped being polled.
  let polling = false;
  function keepPolling(active) {
    if (active && !polling && view.alive) start();
    return active;
  }
  function start() {
    polling = true;
    return view.poll(refresh, (active) => {
      if (!active) polling = false;
      return active ? POLL_MS : null;
    });
  }
  await start();
}
