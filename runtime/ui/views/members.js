/**
 * Organisations and members: an organisation's page (its projects and members), a project's
 * members and project tokens. Who may change roles is the API's decision; the page offers the
 * controls to those it says manage the organisation or project.
 */
import { api, listProjects, paths, SignInRequired } from '../api.js';
import { act, fill, h, main, select, setCrumbs } from '../dom.js';
import { links, orgOfSlug } from '../links.js';
import { currentUser } from './signin.js';
import { tokensSection } from './tokens.js';

const ORG_ROLES = ['admin', 'member', 'viewer'];
const PROJECT_ROLES = ['admin', 'write', 'read'];

/**
 * Members with their roles: a table, and for those who may manage it a role picker per member,
 * a remove button and a form to add someone by login.
 */
function membersSection(view, options) {
  const section = h('section', { className: 'panel members', dataset: { scope: options.scope } });
  async function draw() {
    const members = (await api.get(options.path)).items || [];
    if (!view.alive) return;
    const rows = members.map((m) =>
      h(
        'tr',
        { className: 'member-row', dataset: { login: m.login, role: m.role } },
        h('td', { className: 'mono' }, m.login),
        h('td', null, m.name || ''),
        h(
          'td',
          null,
          options.canManage
            ? select(options.roles, m.role, {
                className: 'member-role',
                attrs: { 'aria-label': 'Role of ' + m.login },
                onchange: async (e) => {
                  if (await act(null, 'Could not change the role of ' + m.login, () => api.put(options.memberPath(m.login), { role: e.target.value }))) await draw();
                },
              })
            : h('span', { className: 'member-role' }, m.role),
        ),
        h('td', { className: 'muted' }, m.source === 'gyre' ? '' : 'from ' + m.source),
        h(
          'td',
          null,
          options.canManage
            ? h(
                'button',
                {
                  type: 'button',
                  className: 'danger remove-member',
                  onclick: async () => {
                    if (await act(null, 'Could not remove ' + m.login, () => api.del(options.memberPath(m.login)))) await draw();
                  },
                },
                'Remove',
              )
            : null,
        ),
      ),
    );
    const login = h('input', { type: 'text', name: 'login', className: 'add-login', placeholder: 'login', required: true, spellcheck: false, attrs: { 'aria-label': 'Login' } });
    const role = select(options.roles, options.roles[options.roles.length - 1], { name: 'role', className: 'add-role', attrs: { 'aria-label': 'Role' } });
    const add = options.canManage
      ? h(
          'form',
          {
            className: 'add-member inline-form',
            onsubmit: async (e) => {
              e.preventDefault();
              const who = login.value.trim();
              if (who && (await act(null, 'Could not add ' + who, () => api.put(options.memberPath(who), { role: role.value })))) await draw();
            },
          },
          login,
          role,
          h('button', { type: 'submit', className: 'primary' }, 'Add member'),
        )
      : null;
    fill(
      section,
      h('h2', null, options.title),
      h('p', { className: 'muted' }, options.help),
      members.length
        ? h('table', { className: 'grid members-table' }, h('thead', null, h('tr', null, ['Login', 'Name', 'Role', '', ''].map((t) => h('th', null, t)))), h('tbody', null, rows))
        : h('p', { className: 'muted no-members' }, 'No members yet.'),
      add,
    );
  }
  return { section, draw };
}

export async function orgPage(view, { name }) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + name });
  const org = await api.get(paths.org(name));
  const projects = (await listProjects()).filter((p) => p.organization_name === name);
  if (!view.alive) return;
  const me = currentUser();
  const canManage = Boolean(me && me.admin) || org.role === 'admin';
  const members = membersSection(view, {
    scope: 'org',
    title: 'Members',
    help: 'Admins manage the organization and every project in it; members read and trigger every project; viewers read them.',
    roles: ORG_ROLES,
    canManage,
    path: paths.orgMembers(name),
    memberPath: (login) => paths.orgMember(name, login),
  });
  fill(
    main(),
    h(
      'h1',
      null,
      org.slug,
      org.role ? h('span', { className: 'badge my-role' }, 'your role: ' + org.role) : null,
      h('span', { className: 'spacer' }),
      h('a', { href: links.contexts(name), className: 'contexts-link' }, 'Contexts'),
    ),
    h(
      'ul',
      { className: 'cards projects' },
      projects.map((p) => h('li', null, h('a', { className: 'card', href: links.project(p.slug), dataset: { slug: p.slug } }, h('span', { className: 'card-title' }, p.name), h('span', { className: 'card-sub mono' }, p.slug)))),
    ),
    members.section,
  );
  await members.draw();
}

export async function projectMembersPage(view, { slug }) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + orgOfSlug(slug), href: links.org(orgOfSlug(slug)) }, { text: slug, href: links.project(slug) }, { text: 'Members and tokens' });
  // Project tokens are for the project's admins: whether they can be listed says whether this caller manages the project.
  const canManage = await api.get(paths.projectTokens(slug)).then(
    () => true,
    (err) => {
      if (err instanceof SignInRequired) throw err;
      if (err.status === 403) return false;
      throw err;
    },
  );
  if (!view.alive) return;
  const members = membersSection(view, {
    scope: 'project',
    title: 'Members',
    help: 'Roles on this project, beside what organization roles give: admin (settings, members, tokens), write (trigger, cancel, approve), read.',
    roles: PROJECT_ROLES,
    canManage,
    path: paths.projectMembers(slug),
    memberPath: (login) => paths.projectMember(slug, login),
  });
  const tokens = canManage
    ? tokensSection(view, {
        scope: 'project',
        title: 'Project tokens',
        help: 'A project token acts on this project only: read its pipelines and output, or (trigger) also start, cancel and approve.',
        path: paths.projectTokens(slug),
        tokenPath: (id) => paths.projectToken(slug, id),
      })
    : null;
  fill(main(), h('h1', null, slug), members.section, tokens && tokens.section);
  await members.draw();
  if (tokens) await tokens.draw();
}
