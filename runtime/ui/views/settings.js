/**
 * The secrets pages: a project's environment variables, an organisation's contexts, and one
 * context's variables and restrictions (runtime/secrets/api-routes.ts, CircleCI API v2 shapes).
 *
 * Values are write-only: they go in through a password field that is emptied once the value is
 * saved, and only ever come back masked (`xxxx` and the last four characters), which is all the
 * API answers with. Who may change what is the API's decision: the forms are there for everyone,
 * and a refusal is shown beside the form in the API's own words.
 */
import { api, getAll, paths } from '../api.js';
import { act, deleteButton, fill, h, main, problemBox, setCrumbs, timeAgo } from '../dom.js';
import { links, orgOfSlug } from '../links.js';

const RESTRICTION_TYPES = [
  ['project', 'project'],
  ['expression', 'expression'],
  ['group', 'group'],
];

function nameInput(className) {
  return h('input', { type: 'text', name: 'name', className, placeholder: 'NAME', required: true, spellcheck: false, autocomplete: 'off', maxLength: 300, attrs: { 'aria-label': 'Name' } });
}

/** The value's field: a password field the browser neither shows nor offers to remember. */
function valueInput(className) {
  return h('input', { type: 'password', name: 'value', className, placeholder: 'value', required: true, autocomplete: 'new-password', spellcheck: false, attrs: { 'aria-label': 'Value' } });
}

const WRITE_ONLY = 'Values are write-only: once saved, a value is shown only as xxxx and its last four characters (xxxx alone when it is that short), here and in the API. Saving a name that exists replaces its value.';

/**
 * A table of variables (name, masked value, date, delete) and a form that adds one or replaces
 * its value. Project variables and a context's differ only in their paths and field names.
 */
function variablesSection(view, options) {
  const section = h('section', { className: 'panel variables', dataset: { scope: options.scope } });
  const problem = problemBox();
  const name = nameInput('variable-name');
  const value = valueInput('variable-value');
  const form = h(
    'form',
    {
      className: 'add-variable inline-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const named = name.value.trim();
        if (await act(problem, 'Could not save ' + named, () => options.put(named, value.value))) {
          form.reset();
          await draw();
        }
      },
    },
    name,
    value,
    h('button', { type: 'submit', className: 'primary' }, 'Save variable'),
  );
  const body = h('div');

  async function draw() {
    const variables = await getAll(options.path);
    if (!view.alive) return;
    const rows = variables.map((v) => {
      const named = options.nameOf(v);
      return h(
        'tr',
        { className: 'variable-row', dataset: { name: named } },
        h('td', { className: 'mono variable-name' }, named),
        h('td', { className: 'mono variable-value' }, v.value),
        h('td', { className: 'variable-date' }, timeAgo(options.dateOf(v))),
        h(
          'td',
          { className: 'actions' },
          h(
            'button',
            {
              type: 'button',
              className: 'link replace-variable',
              onclick: () => {
                name.value = named;
                value.focus();
              },
            },
            'Replace',
          ),
          deleteButton('delete-variable', 'Delete', 'Delete the environment variable ' + named + ' from ' + options.owner + '? Jobs will no longer get it.', async () => {
            if (await act(problem, 'Could not delete ' + named, () => api.del(options.variablePath(named)))) await draw();
          }),
        ),
      );
    });
    fill(
      body,
      variables.length
        ? h('table', { className: 'grid variables-table' }, h('thead', null, h('tr', null, ['Name', 'Value', options.dateLabel, ''].map((t) => h('th', null, t)))), h('tbody', null, rows))
        : h('p', { className: 'muted no-variables' }, 'No environment variables.'),
    );
  }

  fill(section, h('h2', null, 'Environment variables'), h('p', { className: 'muted' }, options.help, ' ', WRITE_ONLY), body, form, problem);
  return { section, draw };
}

// -------------------------------------------------------------------------------------------
// A project's environment variables

export async function projectVariablesPage(view, { slug }) {
  const org = orgOfSlug(slug);
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + org, href: links.org(org) }, { text: slug, href: links.project(slug) }, { text: 'Environment variables' });
  const variables = variablesSection(view, {
    scope: 'project',
    owner: slug,
    help: "Every job of this project gets these in its environment (a context's variable of the same name wins). Project admins change them.",
    path: paths.envvars(slug),
    variablePath: (name) => paths.envvar(slug, name),
    put: (name, value) => api.post(paths.envvars(slug), { name, value }),
    nameOf: (v) => v.name,
    dateOf: (v) => v['created-at'],
    dateLabel: 'Created',
  });
  fill(main(), h('h1', null, slug), variables.section);
  await variables.draw();
}

// -------------------------------------------------------------------------------------------
// An organisation's contexts

export async function contextsPage(view, { org }) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + org, href: links.org(org) }, { text: 'Contexts' });
  const section = h('section', { className: 'panel contexts' });
  const body = h('div');
  const problem = problemBox();
  const name = h('input', { type: 'text', name: 'name', className: 'context-name', placeholder: 'context name', required: true, spellcheck: false, maxLength: 1000, attrs: { 'aria-label': 'Context name' } });
  const form = h(
    'form',
    {
      className: 'create-context inline-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const named = name.value.trim();
        if (await act(problem, 'Could not create the context ' + named, () => api.post(paths.newContext(), { name: named, owner: { slug: 'gh/' + org, type: 'organization' } }))) {
          form.reset();
          await draw();
        }
      },
    },
    name,
    h('button', { type: 'submit', className: 'primary' }, 'Create context'),
  );

  async function draw() {
    const contexts = await getAll(paths.contexts(org));
    if (!view.alive) return;
    const rows = contexts.map((c) =>
      h(
        'tr',
        { className: 'context-row', dataset: { name: c.name, id: c.id } },
        h('td', null, h('a', { href: links.context(org, c.id), className: 'context-link' }, c.name)),
        h('td', null, timeAgo(c.created_at)),
        h(
          'td',
          { className: 'actions' },
          deleteButton('delete-context', 'Delete', 'Delete the context ' + c.name + ' with all its variables and restrictions? Jobs that name it will no longer run.', async () => {
            if (await act(problem, 'Could not delete the context ' + c.name, () => api.del(paths.context(c.id)))) await draw();
          }),
        ),
      ),
    );
    fill(
      body,
      contexts.length
        ? h('table', { className: 'grid contexts-table' }, h('thead', null, h('tr', null, ['Name', 'Created', ''].map((t) => h('th', null, t)))), h('tbody', null, rows))
        : h('p', { className: 'muted no-contexts' }, 'No contexts yet.'),
    );
  }

  fill(
    section,
    h('h2', null, 'Contexts'),
    h('p', { className: 'muted' }, 'A context is a named set of secret environment variables that jobs of this organization name in their workflow (', h('code', null, 'context: [name]'), '). Organization admins create and change them; every member sees their names.'),
    body,
    form,
    problem,
  );
  fill(main(), h('h1', null, 'gh/' + org), section);
  await draw();
}

// -------------------------------------------------------------------------------------------
// One context: its variables and restrictions

function restrictionsSection(view, { org, id }) {
  const section = h('section', { className: 'panel restrictions' });
  const body = h('div');
  const problem = problemBox();
  const type = h(
    'select',
    { name: 'restriction_type', className: 'restriction-type', attrs: { 'aria-label': 'Restriction type' }, onchange: () => showValueField() },
    RESTRICTION_TYPES.map(([v, text]) => h('option', { value: v }, text)),
  );
  const project = h('select', { name: 'project', className: 'restriction-project', attrs: { 'aria-label': 'Project' } });
  const text = h('input', { type: 'text', name: 'restriction_value', className: 'restriction-value', spellcheck: false, maxLength: 8192, attrs: { 'aria-label': 'Restriction value' } });
  function showValueField() {
    project.hidden = type.value !== 'project';
    text.hidden = type.value === 'project';
    text.placeholder = type.value === 'expression' ? 'pipeline.git.branch == "main"' : 'group name';
  }
  showValueField();
  const form = h(
    'form',
    {
      className: 'add-restriction inline-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const input = { restriction_type: type.value, restriction_value: type.value === 'project' ? project.value : text.value.trim() };
        if (await act(problem, 'Could not add the restriction', () => api.post(paths.restrictions(id), input))) {
          text.value = '';
          await draw();
        }
      },
    },
    type,
    project,
    text,
    h('button', { type: 'submit', className: 'primary' }, 'Add restriction'),
  );

  async function draw() {
    const [restrictions, projects] = await Promise.all([
      getAll(paths.restrictions(id)),
      getAll(paths.projects()).then((all) => all.filter((p) => p.organization_name === org)),
    ]);
    if (!view.alive) return;
    const chosen = project.value;
    fill(project, projects.map((p) => h('option', { value: p.id, selected: p.id === chosen }, p.slug)));
    const rows = restrictions.map((r) =>
      h(
        'tr',
        { className: 'restriction-row', dataset: { id: r.id, type: r.restriction_type } },
        h('td', { className: 'restriction-kind' }, r.restriction_type),
        h('td', { className: 'mono restriction-shown' }, r.restriction_type === 'project' ? r.name || r.restriction_value : r.restriction_value),
        h(
          'td',
          { className: 'actions' },
          deleteButton('delete-restriction', 'Delete', 'Delete this ' + r.restriction_type + ' restriction?', async () => {
            if (await act(problem, 'Could not delete the restriction', () => api.del(paths.restriction(id, r.id)))) await draw();
          }),
        ),
      ),
    );
    fill(
      body,
      restrictions.length
        ? h('table', { className: 'grid restrictions-table' }, h('thead', null, h('tr', null, ['Type', 'Restricted to', ''].map((t) => h('th', null, t)))), h('tbody', null, rows))
        : h('p', { className: 'muted no-restrictions' }, 'No restrictions: every project of gh/' + org + ' may use this context.'),
    );
  }

  fill(
    section,
    h('h2', null, 'Restrictions'),
    h(
      'p',
      { className: 'muted' },
      'A job gets this context only if its project is one of the project restrictions (when there are any), whoever started it is in one of the groups (when there are any), and every expression is true for its pipeline (',
      h('code', null, 'pipeline.git.branch == "main"'),
      '); otherwise it ends unauthorized.',
    ),
    body,
    form,
    problem,
  );
  return { section, draw };
}

export async function contextPage(view, { org, id }) {
  const context = await api.get(paths.context(id));
  if (!view.alive) return;
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + org, href: links.org(org) }, { text: 'Contexts', href: links.contexts(org) }, { text: context.name });
  const problem = problemBox();
  problem.classList.add('context-problem');
  const variables = variablesSection(view, {
    scope: 'context',
    owner: 'the context ' + context.name,
    help: 'Jobs that name this context get these in their environment, over their project\'s variables of the same name.',
    path: paths.contextVariables(id),
    variablePath: (name) => paths.contextVariable(id, name),
    put: (name, value) => api.put(paths.contextVariable(id, name), { value }),
    nameOf: (v) => v.variable,
    dateOf: (v) => v.updated_at,
    dateLabel: 'Updated',
  });
  const restrictions = restrictionsSection(view, { org, id });
  fill(
    main(),
    h(
      'h1',
      null,
      h('span', { className: 'context-title' }, context.name),
      h('span', { className: 'spacer' }),
      deleteButton('delete-context', 'Delete context', 'Delete the context ' + context.name + ' with all its variables and restrictions? Jobs that name it will no longer run.', async () => {
        if (await act(problem, 'Could not delete the context ' + context.name, () => api.del(paths.context(id)))) location.hash = links.contexts(org);
      }),
    ),
    problem,
    variables.section,
    restrictions.section,
  );
  await Promise.all([variables.draw(), restrictions.draw()]);
}
