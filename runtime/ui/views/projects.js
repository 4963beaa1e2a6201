/** The projects page: every project the user can read, and the organisations they belong to. */
import { api, listProjects, paths } from '../api.js';
import { fill, h, main, setCrumbs } from '../dom.js';
import { links } from '../links.js';

export async function projectsPage(view) {
  setCrumbs({ text: 'Projects' });
  const projects = await listProjects();
  if (!view.alive) return;
  const list = projects.length
    ? h(
        'ul',
        { className: 'cards projects' },
        projects.map((p) =>
          h(
            'li',
            null,
            h(
              'a',
              { className: 'card', href: links.project(p.slug), dataset: { slug: p.slug } },
              h('span', { className: 'card-title' }, (p.organization_name ? p.organization_name + '/' : '') + p.name),
              h('span', { className: 'card-sub mono' }, p.slug),
              p.vcs_info && h('span', { className: 'card-sub muted' }, p.vcs_info.vcs_url || '', p.vcs_info.default_branch ? ' · ' + p.vcs_info.default_branch : ''),
            ),
          ),
        ),
      )
    : h('p', { className: 'panel muted' }, 'No projects yet. Add one with ', h('code', null, 'gyre project add <org>/<repo> --repo <path>'), '.');
  const orgs = await api.get(paths.orgs()).then((b) => b.items || [], () => []);
  if (!view.alive) return;
  const orgNav = orgs.length
    ? h('nav', { className: 'orgs' }, h('span', { className: 'muted' }, 'Organizations:'), orgs.map((o) => h('a', { href: links.org(o.name), className: 'org-link', dataset: { org: o.name } }, o.slug)))
    : null;
  fill(main(), h('h1', null, 'Projects'), orgNav, list);
}
