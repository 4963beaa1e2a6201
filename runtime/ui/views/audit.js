/** The audit log (instance admins): every change made through the API, and every refused attempt. */
import { api, paths } from '../api.js';
import { cssToken, fill, formatTime, h, main, select, setCrumbs } from '../dom.js';
import { links } from '../links.js';

const AUDIT_SPANS = [
  ['1h', 'last hour'],
  ['24h', 'last day'],
  ['7d', 'last week'],
  ['30d', 'last 30 days'],
  ['', 'everything kept'],
];

export async function auditPage(view) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'Audit log' });
  const body = h('tbody');
  const more = h('div', { className: 'more' });
  let since = '7d';
  const span = select(AUDIT_SPANS, since, {
    className: 'audit-since',
    attrs: { 'aria-label': 'Since' },
    onchange: (e) => {
      since = e.target.value;
      load(null, true);
    },
  });
  function row(e) {
    const where = e.project || (e.organization ? 'gh/' + e.organization : '');
    return h(
      'tr',
      { className: 'audit-row result-' + cssToken(e.result), dataset: { action: e.action, result: e.result } },
      h('td', null, h('time', { dateTime: e.time }, formatTime(e.time))),
      h('td', { className: 'audit-actor' }, e.actor.login, e.actor.token_kind === 'project' ? h('span', { className: 'muted' }, ' (project token)') : null),
      h('td', { className: 'mono audit-action' }, e.action),
      h('td', { className: 'audit-target' }, e.target ? e.target.type + ' ' + e.target.id : ''),
      h('td', null, where),
      h('td', { className: 'mono muted' }, e.address || ''),
      h(
        'td',
        null,
        h('span', { className: 'badge status-' + (e.result === 'success' ? 'success' : e.result === 'denied' ? 'failed' : 'canceled') }, e.result + (e.status && e.result !== 'success' ? ' ' + e.status : '')),
        e.detail && e.detail.message ? h('div', { className: 'muted audit-message' }, String(e.detail.message)) : null,
      ),
    );
  }
  async function load(pageToken, fresh) {
    const page = await api.get(paths.audit(since, pageToken));
    if (!view.alive) return;
    if (fresh) fill(body);
    const items = page.items || [];
    if (fresh && !items.length) body.append(h('tr', null, h('td', { colSpan: 7, className: 'muted' }, 'Nothing recorded in this time.')));
    for (const e of items) body.append(row(e));
    fill(more, page.next_page_token ? h('button', { type: 'button', onclick: () => load(page.next_page_token, false) }, 'Load more') : '');
  }
  fill(
    main(),
    h('h1', null, 'Audit log', h('span', { className: 'spacer' }), span),
    h('p', { className: 'muted' }, 'Every change made through the API, and every refused or failed attempt at one: who, what, which target, when, from where. ', h('code', null, 'gyre audit --since 24h --format jsonl'), ' exports it.'),
    h('table', { className: 'grid audit' }, h('thead', null, h('tr', null, ['Time', 'Actor', 'Action', 'Target', 'Where', 'Address', 'Result'].map((t) => h('th', null, t)))), body),
    more,
  );
  await load(null, true);
}
