/**
 * A project's page: its pipelines, newest first (kept current while any runs), and the form that
 * triggers a pipeline on a branch with pipeline parameters.
 */
import { getAll, getProject, listPipelines, paths, triggerPipeline } from '../api.js';
import { act, cssToken, fill, h, main, problemBox, select, setCrumbs, shortSha, statusBadge, timeAgo } from '../dom.js';
import { links } from '../links.js';
import { IDLE_POLL_MS, POLL_MS } from '../view.js';
import { pipelineErrors, pipelineIsActive, pipelineStatus, refText } from './status.js';

const PARAMETER_TYPES = ['string', 'boolean', 'integer'];

/**
 * The pipeline parameters a form's rows hold, typed as the config declares them (a string, a
 * boolean, an integer). Throws an Error that names the row's input and what is allowed.
 */
export function parametersOf(rows) {
  const parameters = {};
  rows.forEach((row, i) => {
    const name = row.name.trim();
    const where = 'parameter ' + (i + 1) + (name ? ' (' + name + ')' : '');
    if (!name) throw new Error(where + ': a name is required');
    if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(name)) throw new Error(where + ': the name may hold letters, digits, _ and - and starts with a letter');
    if (Object.prototype.hasOwnProperty.call(parameters, name)) throw new Error(where + ': ' + name + ' is given twice');
    if (row.type === 'boolean') {
      if (row.value !== 'true' && row.value !== 'false') throw new Error(where + ': a boolean is true or false, not ' + JSON.stringify(row.value));
      parameters[name] = row.value === 'true';
    } else if (row.type === 'integer') {
      if (!/^-?\d{1,15}$/.test(row.value.trim())) throw new Error(where + ': an integer is whole digits, not ' + JSON.stringify(row.value));
      parameters[name] = Number(row.value.trim());
    } else {
      parameters[name] = row.value;
    }
  });
  return parameters;
}

function triggerForm(slug, defaultBranch) {
  const problem = problemBox('trigger-problem');
  const branch = h('input', { type: 'text', name: 'branch', className: 'trigger-branch', value: defaultBranch || '', placeholder: defaultBranch || 'main', maxLength: 1024, spellcheck: false, attrs: { 'aria-label': 'Branch' } });
  const rowsBox = h('div', { className: 'parameter-rows' });
  const rows = [];

  function addRow() {
    const name = h('input', { type: 'text', className: 'parameter-name', placeholder: 'name', maxLength: 200, spellcheck: false, attrs: { 'aria-label': 'Parameter name' } });
    const type = select(PARAMETER_TYPES, 'string', { className: 'parameter-type', attrs: { 'aria-label': 'Parameter type' } });
    const text = h('input', { type: 'text', className: 'parameter-value', placeholder: 'value', spellcheck: false, attrs: { 'aria-label': 'Parameter value' } });
    const flag = select(['true', 'false'], 'true', { className: 'parameter-flag', hidden: true, attrs: { 'aria-label': 'Parameter value' } });
    type.addEventListener('change', () => {
      flag.hidden = type.value !== 'boolean';
      text.hidden = type.value === 'boolean';
    });
    const row = { name, type, value: () => (type.value === 'boolean' ? flag.value : text.value) };
    const el = h('div', { className: 'parameter-row inline-form' }, name, type, text, flag,
      h('button', { type: 'button', className: 'link remove-parameter', onclick: () => { rows.splice(rows.indexOf(row), 1); el.remove(); } }, 'Remove'));
    rows.push(row);
    rowsBox.append(el);
    name.focus();
  }

  const form = h(
    'form',
    {
      className: 'trigger-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const submit = form.querySelector('button[type=submit]');
        let parameters;
        try {
          parameters = parametersOf(rows.map((r) => ({ name: r.name.value, type: r.type.value, value: r.value() })));
        } catch (err) {
          fill(problem, 'Could not trigger a pipeline: ' + err.message);
          return;
        }
        const input = { parameters };
        if (branch.value.trim()) input.branch = branch.value.trim();
        submit.disabled = true;
        let created = null;
        const ok = await act(problem, 'Could not trigger a pipeline', async () => (created = await triggerPipeline(slug, input)));
        submit.disabled = false;
        if (ok) location.hash = links.pipeline(created.id);
      },
    },
    h('div', { className: 'inline-form' }, h('label', null, 'Branch ', branch)),
    h('p', { className: 'muted' }, 'Pipeline parameters, as the config declares them (', h('code', null, 'parameters:'), ' at its top level); a parameter left out takes its default.'),
    rowsBox,
    h('div', { className: 'inline-form' },
      h('button', { type: 'button', className: 'add-parameter', onclick: addRow }, 'Add parameter'),
      h('span', { className: 'spacer' }),
      h('button', { type: 'submit', className: 'primary' }, 'Run the pipeline')),
    problem,
  );
  return h('details', { className: 'panel trigger' }, h('summary', { className: 'trigger-open' }, 'Trigger a pipeline'), form);
}

export async function projectPage(view, { slug }) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: slug });
  const project = await getProject(slug).catch(() => null);
  if (!view.alive) return;
  const table = h('tbody');
  const more = h('div', { className: 'more' });
  fill(
    main(),
    h(
      'h1',
      null,
      slug,
      h('span', { className: 'spacer' }),
      h('a', { href: links.insights(slug), className: 'insights-link' }, 'Insights'),
      h('a', { href: links.envvars(slug), className: 'envvars-link' }, 'Environment variables'),
      h('a', { href: links.members(slug), className: 'members-link' }, 'Members and tokens'),
      h('a', { href: links.webhooks(slug), className: 'webhooks-link' }, 'Webhooks'),
      h('a', { href: links.notifications(slug), className: 'notifications-link' }, 'Notifications'),
    ),
    triggerForm(slug, project && project.vcs_info && project.vcs_info.default_branch),
    h(
      'table',
      { className: 'pipelines' },
      h('thead', null, h('tr', null, ['Pipeline', 'Status', 'Workflows', 'Branch / tag', 'Commit', 'Trigger', 'Started'].map((t) => h('th', null, t)))),
      table,
    ),
    more,
  );

  let extraPages = []; // pages after the first, loaded with "Load more"; not refreshed
  let nextToken = null;
  let firstNextToken = null;

  async function withWorkflows(pipelines) {
    return Promise.all(
      pipelines.map(async (p) => {
        const workflows = p.state === 'errored' ? [] : await getAll(paths.workflows(p.id)).catch(() => []);
        return { pipeline: p, workflows };
      }),
    );
  }

  function row({ pipeline: p, workflows }) {
    const rows = [
      h(
        'tr',
        { className: 'pipeline-row', dataset: { number: p.number, id: p.id } },
        h('td', null, h('a', { href: links.pipeline(p.id), className: 'pipeline-link' }, '#' + p.number)),
        h('td', null, statusBadge(pipelineStatus(p, workflows))),
        h(
          'td',
          { className: 'workflow-chips' },
          workflows.map((w) => h('a', { href: links.workflow(p.id, w.id), className: 'chip status-' + cssToken(w.status), title: w.status + (w.rerun_of ? ' (rerun)' : '') }, w.name)),
        ),
        h('td', { className: 'mono' }, refText(p.vcs)),
        h(
          'td',
          null,
          h('span', { className: 'mono sha', title: (p.vcs && p.vcs.revision) || '' }, shortSha(p.vcs && p.vcs.revision)),
          p.vcs && p.vcs.commit && p.vcs.commit.subject ? h('span', { className: 'subject' }, ' ', p.vcs.commit.subject) : null,
        ),
        h('td', null, (p.trigger && p.trigger.actor && p.trigger.actor.login) || '', p.trigger && p.trigger.type ? h('span', { className: 'muted' }, ' (' + p.trigger.type + ')') : null),
        h('td', null, timeAgo(p.created_at)),
      ),
    ];
    if (p.state === 'errored') rows.push(h('tr', { className: 'pipeline-error-row' }, h('td', { colSpan: 7 }, pipelineErrors(p) || 'The pipeline could not be created.')));
    return rows;
  }

  let firstPage = [];
  function draw() {
    const all = firstPage.concat(extraPages);
    if (!all.length) fill(table, h('tr', null, h('td', { colSpan: 7, className: 'muted' }, 'No pipelines yet.')));
    else fill(table, ...all.flatMap(row));
    const token = extraPages.length ? nextToken : firstNextToken;
    fill(more, token ? h('button', { type: 'button', onclick: loadMore }, 'Load more') : '');
  }

  async function loadMore() {
    const token = extraPages.length ? nextToken : firstNextToken;
    const body = await listPipelines(slug, token);
    extraPages = extraPages.concat(await withWorkflows(body.items || []));
    nextToken = body.next_page_token || null;
    if (view.alive) draw();
  }

  await view.poll(
    async () => {
      const body = await listPipelines(slug);
      const rows = await withWorkflows(body.items || []);
      if (!view.alive) return false;
      firstPage = rows;
      firstNextToken = body.next_page_token || null;
      draw();
      return rows.some((r) => pipelineIsActive(r.pipeline, r.workflows));
    },
    (active) => (active ? POLL_MS : IDLE_POLL_MS),
  );
}
