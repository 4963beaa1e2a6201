/** API tokens: a user's personal tokens (their own page) and a project's tokens (its members page). */
import { api, paths } from '../api.js';
import { act, fill, formatTime, h, main, select, setCrumbs, timeAgo } from '../dom.js';
import { links } from '../links.js';

/** A token just made: shown this once, with a button that copies it. */
function newTokenBox(made) {
  const value = h('code', { className: 'token-value' }, made.token);
  return h(
    'div',
    { className: 'panel new-token', attrs: { role: 'status' } },
    h('strong', null, 'Copy this token now: it is not shown again.'),
    ' ',
    value,
    ' ',
    h('button', { type: 'button', className: 'link', onclick: () => navigator.clipboard && navigator.clipboard.writeText(made.token) }, 'Copy'),
  );
}

/**
 * Tokens with their label, first characters, dates, and a revoke button; a form makes one, and
 * its value is shown once above the list.
 */
export function tokensSection(view, options) {
  const section = h('section', { className: 'panel tokens', dataset: { scope: options.scope } });
  const shown = h('div', { className: 'shown-once' });
  async function draw() {
    const tokens = (await api.get(options.path)).items || [];
    if (!view.alive) return;
    const rows = tokens.map((t) =>
      h(
        'tr',
        { className: 'token-row' + (t.expired ? ' expired' : ''), dataset: { id: t.id, label: t.label } },
        h('td', null, t.label),
        options.scope === 'project' ? h('td', null, t.scope || '') : h('td', { className: 'muted' }, t.kind === 'bootstrap' ? 'admin (GYRE_ADMIN_TOKEN)' : t.kind),
        h('td', { className: 'mono' }, t.hint + '…'),
        h('td', null, timeAgo(t.created_at), t.created_by ? h('span', { className: 'muted' }, ' by ' + t.created_by) : null),
        h('td', null, t.expires_at ? (t.expired ? h('span', { className: 'badge status-failed' }, 'expired') : formatTime(t.expires_at)) : h('span', { className: 'muted' }, 'never')),
        h('td', null, t.last_used_at ? timeAgo(t.last_used_at) : h('span', { className: 'muted' }, 'never')),
        h(
          'td',
          null,
          h(
            'button',
            {
              type: 'button',
              className: 'danger revoke-token',
              onclick: async () => {
                if (await act(null, 'Could not revoke ' + t.label, () => api.del(options.tokenPath(t.id)))) {
                  fill(shown);
                  await draw();
                }
              },
            },
            'Revoke',
          ),
        ),
      ),
    );
    const label = h('input', { type: 'text', name: 'label', className: 'token-label', placeholder: 'label', maxLength: 200, attrs: { 'aria-label': 'Label' } });
    const days = h('input', { type: 'number', name: 'expires', className: 'token-expires', min: 1, max: 3650, placeholder: 'expires in days', attrs: { 'aria-label': 'Expires in days' } });
    const scope = options.scope === 'project' ? select(['read', 'trigger'], 'read', { name: 'scope', className: 'token-scope', attrs: { 'aria-label': 'Scope' } }) : null;
    const form = h(
      'form',
      {
        className: 'create-token inline-form',
        onsubmit: async (e) => {
          e.preventDefault();
          const body = { label: label.value.trim() || undefined };
          if (days.value) body.expires_in_days = Number(days.value);
          if (scope) body.scope = scope.value;
          let made = null;
          if (await act(null, 'Could not create the token', async () => (made = await api.post(options.path, body)))) {
            await draw();
            fill(shown, newTokenBox(made));
          }
        },
      },
      label,
      scope,
      days,
      h('button', { type: 'submit', className: 'primary' }, 'Create token'),
    );
    fill(
      section,
      h('h2', null, options.title),
      h('p', { className: 'muted' }, options.help),
      shown,
      tokens.length
        ? h(
            'table',
            { className: 'grid tokens-table' },
            h('thead', null, h('tr', null, ['Label', options.scope === 'project' ? 'Scope' : 'Kind', 'Starts with', 'Created', 'Expires', 'Last used', ''].map((t) => h('th', null, t)))),
            h('tbody', null, rows),
          )
        : h('p', { className: 'muted no-tokens' }, 'No tokens.'),
      form,
    );
  }
  return { section, draw };
}

export async function tokensPage(view) {
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'Your tokens' });
  const tokens = tokensSection(view, {
    scope: 'personal',
    title: 'Personal API tokens',
    help: 'A personal token acts as you, with your roles. Use it as GYRE_TOKEN for the CLI or in the Circle-Token header.',
    path: paths.myTokens(),
    tokenPath: (id) => paths.myToken(id),
  });
  fill(main(), h('h1', null, 'Your tokens'), tokens.section);
  await tokens.draw();
}
