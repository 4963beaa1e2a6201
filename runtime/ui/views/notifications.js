/**
 * A project's notices to the outside world (runtime/notifications/api-routes.ts,
 * docs/notifications.md): its outbound webhooks (CircleCI's `/webhook`) with each one's delivery
 * log, and its email and Slack notifications on failed and on fixed workflows with theirs.
 *
 * Both need `project:admin`: a webhook URL may carry a token and the logs show what receivers
 * answered. A caller who may not is shown the API's refusal in its own words and nothing else.
 * Secrets are write-only: the signing secret and the Slack URL go in through password fields that
 * are emptied once saved, and come back only as the API masks them. A URL the server refuses (its
 * SSRF rule: https only, no metadata or link-local addresses, …) is refused with its reason
 * under the form.
 */
import {
  createWebhook,
  deleteWebhook,
  getNotificationSettings,
  getProject,
  listNotificationDeliveries,
  listWebhookDeliveries,
  listWebhooks,
  putNotificationSettings,
  updateWebhook,
} from '../api.js';
import { act, deleteButton, fact, fill, formatTime, h, main, problemBox, setCrumbs, statusBadge, timeAgo } from '../dom.js';
import { links, orgOfSlug } from '../links.js';
import { IDLE_POLL_MS, POLL_MS } from '../view.js';

const EVENTS = [
  ['workflow-completed', 'Workflow completed'],
  ['job-completed', 'Job completed'],
];

function crumbs(slug, here) {
  const org = orgOfSlug(slug);
  setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + org, href: links.org(org) }, { text: slug, href: links.project(slug) }, { text: here });
}

/** A labelled checkbox; `checked` is also its default, which a form's reset() goes back to. */
function checkbox(className, checked, label, value) {
  const input = h('input', { type: 'checkbox', className, checked, defaultChecked: checked, value });
  return { input, label: h('label', { className: 'check' }, input, ' ', label) };
}

// -------------------------------------------------------------------------------------------
// Delivery logs, as the API answers them

/** What one attempt got: `HTTP 500` (`SMTP 250` for email), and the error or the first of the answer. */
function answerOf(channel, a) {
  return h(
    'span',
    { className: 'delivery-answer' },
    a.status_code === null ? null : h('span', { className: 'delivery-code' }, (channel === 'email' ? 'SMTP ' : 'HTTP ') + a.status_code),
    a.error ? h('span', { className: 'delivery-error' }, ' ', a.error) : null,
    !a.error && a.response ? h('span', { className: 'delivery-response muted' }, ' ', a.response) : null,
  );
}

/** The last answer (or why there was none) and, folded, every attempt with when and how long. */
function lastAnswerCell(d, opened) {
  const last = d.answers[d.answers.length - 1];
  const shown = last ? answerOf(d.channel, last) : d.last_error ? h('span', { className: 'delivery-answer' }, h('span', { className: 'delivery-error' }, d.last_error)) : h('span', { className: 'muted' }, '—');
  const next = d.state === 'pending' && d.next_attempt_at ? h('div', { className: 'muted delivery-next' }, 'next attempt ', formatTime(d.next_attempt_at)) : null;
  if (d.answers.length < 2 && !(last && last.error && last.response)) return h('td', { className: 'delivery-last' }, shown, next);
  const details = h(
    'details',
    { className: 'delivery-attempts', open: opened.has(d.id), ontoggle: () => (details.open ? opened.add(d.id) : opened.delete(d.id)) },
    h('summary', null, shown),
    h(
      'ol',
      null,
      d.answers.map((a) =>
        h(
          'li',
          { className: 'delivery-attempt', dataset: { attempt: a.attempt } },
          formatTime(a.at),
          ' · ',
          a.duration_ms + ' ms',
          ' · ',
          answerOf(d.channel, a),
          a.error && a.response ? h('pre', { className: 'delivery-body' }, a.response) : null,
        ),
      ),
    ),
  );
  return h('td', { className: 'delivery-last' }, details, next);
}

/**
 * A delivery log as a table: event, when, state, attempts, the last answer. `opened` keeps which
 * attempt lists the user unfolded across redraws.
 */
function deliveriesTable(deliveries, { channels, empty, opened }) {
  if (!deliveries.length) return h('p', { className: 'muted no-deliveries' }, empty);
  const head = ['Event'].concat(channels ? ['Channel'] : [], ['When', 'State', 'Attempts', 'Answer']);
  return h(
    'table',
    { className: 'grid deliveries' },
    h('thead', null, h('tr', null, head.map((t) => h('th', null, t)))),
    h(
      'tbody',
      null,
      deliveries.map((d) =>
        h(
          'tr',
          { className: 'delivery-row', dataset: { id: d.id, event: d.event, state: d.state, channel: d.channel } },
          h('td', { className: 'mono delivery-event', title: 'about ' + d.subject_id }, d.event),
          channels ? h('td', { className: 'delivery-channel' }, d.channel) : null,
          h('td', { className: 'delivery-time' }, timeAgo(d.created_at)),
          h('td', { className: 'delivery-state' }, statusBadge(d.state)),
          h('td', { className: 'num delivery-attempt-count' }, String(d.attempts)),
          lastAnswerCell(d, opened),
        ),
      ),
    ),
  );
}

const anyPending = (deliveries) => deliveries.some((d) => d.state === 'pending');

// -------------------------------------------------------------------------------------------
// Outbound webhooks

/**
 * The form that adds a webhook, or, given `hook`, changes that one in place: filled with what the
 * API answered, its signing secret left empty (write-only: empty keeps it), with Save and Cancel.
 * A refusal is shown in `problem` and the form keeps what was typed.
 */
function webhookForm({ projectId, hook, problem, onSaved, onCancel }) {
  const name = h('input', { type: 'text', name: 'name', className: 'webhook-name', placeholder: 'name', required: true, maxLength: 256, autocomplete: 'off', value: hook ? hook.name : '', attrs: { 'aria-label': 'Name' } });
  const url = h('input', { type: 'text', name: 'url', className: 'webhook-url', placeholder: 'https://example.com/hooks/ci', required: true, maxLength: 2048, spellcheck: false, autocomplete: 'off', inputMode: 'url', value: hook ? hook.url : '', attrs: { 'aria-label': 'URL' } });
  const secret = h('input', {
    type: 'password',
    name: 'signing-secret',
    className: 'webhook-secret',
    placeholder: hook ? 'new signing secret (empty keeps ' + hook['signing-secret'] + ')' : 'signing secret',
    required: !hook,
    maxLength: 1024,
    autocomplete: 'new-password',
    spellcheck: false,
    attrs: { 'aria-label': hook ? 'New signing secret' : 'Signing secret' },
  });
  const events = EVENTS.map(([value, label]) => checkbox('webhook-event', hook ? hook.events.includes(value) : true, label, value));
  const verify = checkbox('webhook-verify-tls', hook ? hook['verify-tls'] : true, 'Verify TLS certificates');
  const form = h(
    'form',
    {
      className: hook ? 'edit-webhook' : 'create-webhook',
      onsubmit: async (e) => {
        e.preventDefault();
        const input = {
          name: name.value.trim(),
          url: url.value.trim(),
          events: events.filter((c) => c.input.checked).map((c) => c.input.value),
          'verify-tls': verify.input.checked,
        };
        if (hook) {
          const change = secret.value ? { ...input, 'signing-secret': secret.value } : input;
          if (await act(problem, 'Could not save the webhook ' + hook.name, () => updateWebhook(hook.id, change))) await onSaved();
        } else if (await act(problem, 'Could not add the webhook ' + input.name, () => createWebhook({ ...input, 'signing-secret': secret.value, scope: { id: projectId, type: 'project' } }))) {
          form.reset();
          await onSaved();
        }
      },
    },
    h('div', { className: 'inline-form' }, name, url, secret),
    h(
      'div',
      { className: 'inline-form' },
      h('span', { className: 'muted' }, 'Send'),
      events.map((c) => c.label),
      verify.label,
      h('span', { className: 'spacer' }),
      hook ? h('button', { type: 'button', className: 'cancel-edit', onclick: onCancel }, 'Cancel') : null,
      h('button', { type: 'submit', className: 'primary' }, hook ? 'Save' : 'Add webhook'),
    ),
  );
  return form;
}

export async function projectWebhooksPage(view, { slug }) {
  crumbs(slug, 'Webhooks');
  const project = await getProject(slug);
  if (!view.alive) return;
  const problem = problemBox('webhooks-problem');
  const list = h('div', { className: 'webhook-list' });
  const opened = new Set();
  /** The webhooks being changed, by id, with their open forms: kept across redraws, so a poll keeps what is typed. */
  const editing = new Map();

  /** Reads the webhooks and their logs and draws them; answers whether a delivery is still pending. */
  async function draw() {
    const hooks = await listWebhooks(project.id);
    const logs = await Promise.all(hooks.map((w) => listWebhookDeliveries(w.id)));
    if (!view.alive) return false;
    for (const id of editing.keys()) if (!hooks.some((w) => w.id === id)) editing.delete(id);
    const done = (id) => async () => {
      editing.delete(id);
      await draw();
    };
    const editForm = (w) => {
      if (!editing.has(w.id)) editing.set(w.id, webhookForm({ hook: w, problem, onSaved: done(w.id), onCancel: done(w.id) }));
      return editing.get(w.id);
    };
    fill(
      list,
      hooks.length
        ? hooks.map((w, i) =>
            h(
              'section',
              { className: 'panel webhook', dataset: { id: w.id, name: w.name } },
              h(
                'h2',
                null,
                h('span', { className: 'webhook-title' }, w.name),
                h('span', { className: 'spacer' }),
                editing.has(w.id)
                  ? null
                  : h('button', { type: 'button', className: 'edit-webhook-button', onclick: () => { editForm(w); void act(problem, 'Could not read the webhooks', draw); } }, 'Edit'),
                deleteButton('delete-webhook', 'Delete', 'Delete the webhook ' + w.name + ' with its delivery log? Deliveries still waiting are not sent.', async () => {
                  if (await act(problem, 'Could not delete the webhook ' + w.name, () => deleteWebhook(w.id))) await draw();
                }),
              ),
              editing.has(w.id)
                ? editForm(w)
                : h(
                'dl',
                { className: 'facts' },
                fact('URL', h('span', { className: 'mono webhook-shown-url' }, w.url)),
                fact('Events', h('span', { className: 'webhook-events' }, w.events.join(', '))),
                fact('Verify TLS', h('span', { className: 'webhook-tls' }, w['verify-tls'] ? 'yes' : 'no')),
                fact('Signing secret', h('span', { className: 'mono webhook-shown-secret' }, w['signing-secret'])),
                fact('Created', timeAgo(w['created-at'])),
              ),
              h('h3', null, 'Deliveries'),
              deliveriesTable(logs[i].items || [], { channels: false, empty: 'No deliveries yet: one is made when a workflow or job of this project ends.', opened }),
            ),
          )
        : h('p', { className: 'muted no-webhooks' }, 'No webhooks.'),
    );
    return logs.some((l) => anyPending(l.items || []));
  }

  // The first read decides what the page shows: the webhooks, or the API's refusal (app.js).
  const pending = await draw();
  if (!view.alive) return;
  fill(
    main(),
    h('h1', null, slug, h('span', { className: 'spacer' }), h('a', { href: links.notifications(slug), className: 'notifications-link' }, 'Notifications')),
    h(
      'section',
      { className: 'panel webhooks' },
      h(
        'h2',
        null,
        'Outbound webhooks',
        h('span', { className: 'spacer' }),
        h('button', { type: 'button', className: 'refresh-deliveries', onclick: () => act(problem, 'Could not read the webhooks', draw) }, 'Refresh'),
      ),
      h(
        'p',
        { className: 'muted' },
        'Each webhook receives a signed POST (CircleCI’s ',
        h('code', null, 'workflow-completed'),
        ' and ',
        h('code', null, 'job-completed'),
        ' events, ',
        h('code', null, 'circleci-signature: v1=<HMAC-SHA256>'),
        ') when a workflow or job ends. A project has at most 5. The signing secret is write-only. Deliveries that fail are tried again with backoff; each attempt’s answer is in the log.',
      ),
      webhookForm({ projectId: project.id, problem, onSaved: draw }),
      problem,
    ),
    list,
  );
  view.later(() => view.poll(draw, (busy) => (busy ? POLL_MS : IDLE_POLL_MS)), pending ? POLL_MS : IDLE_POLL_MS);
}

// -------------------------------------------------------------------------------------------
// Email and Slack notifications

/** The addresses typed in the box: one a line (commas, semicolons and spaces separate too). */
export function emailsOf(text) {
  return String(text)
    .split(/[\s,;]+/)
    .filter((e) => e !== '');
}

export async function projectNotificationsPage(view, { slug }) {
  crumbs(slug, 'Notifications');
  let settings = await getNotificationSettings(slug);
  if (!view.alive) return;
  const problem = problemBox('notifications-problem');
  const saved = h('p', { className: 'muted saved-note', attrs: { role: 'status' } });
  const onFailed = checkbox('notify-on-failed', settings.on_failed, 'When a workflow fails (ends failed or error)');
  const onFixed = checkbox('notify-on-fixed', settings.on_fixed, 'When a workflow is fixed (succeeds after a failed run of the same workflow on the same branch)');
  const emails = h('textarea', { name: 'emails', className: 'notification-emails', rows: 3, spellcheck: false, placeholder: 'team@example.com', attrs: { 'aria-label': 'Email recipients' } });
  const slack = h('input', { type: 'password', name: 'slack_webhook_url', className: 'slack-url', placeholder: 'https://hooks.slack.com/services/…', maxLength: 4096, autocomplete: 'new-password', spellcheck: false, attrs: { 'aria-label': 'Slack webhook URL' } });
  const slackNow = h('span', { className: 'slack-current' });
  const removeSlack = deleteButton('remove-slack', 'Remove', 'Stop sending Slack messages for ' + slug + '?', () => save({ slack_webhook_url: null }, 'Could not remove the Slack webhook'));

  function show() {
    onFailed.input.checked = settings.on_failed;
    onFixed.input.checked = settings.on_fixed;
    emails.value = settings.emails.join('\n');
    fill(slackNow, settings.slack_webhook_url ? h('span', { className: 'mono' }, settings.slack_webhook_url) : h('span', { className: 'muted' }, 'not set'));
    removeSlack.hidden = !settings.slack_webhook_url;
  }

  async function save(input, what) {
    fill(saved);
    if (await act(problem, what, async () => (settings = await putNotificationSettings(slug, input)))) {
      slack.value = '';
      show();
      fill(saved, 'Saved.');
      await log.draw();
    }
  }

  const form = h(
    'form',
    {
      className: 'notification-form',
      onsubmit: (e) => {
        e.preventDefault();
        const input = { emails: emailsOf(emails.value), on_failed: onFailed.input.checked, on_fixed: onFixed.input.checked };
        if (slack.value.trim()) input.slack_webhook_url = slack.value.trim();
        return save(input, 'Could not save the notifications');
      },
    },
    h('div', { className: 'notify-when' }, onFailed.label, onFixed.label),
    h('label', { className: 'field' }, h('span', null, 'Email recipients, one a line'), emails),
    h('div', { className: 'field' }, h('span', null, 'Slack-compatible incoming webhook: '), slackNow, ' ', removeSlack),
    h('div', { className: 'inline-form' }, slack, h('span', { className: 'muted' }, 'A new URL replaces the current one; left empty, the current one stays.')),
    h('div', { className: 'inline-form' }, h('button', { type: 'submit', className: 'primary' }, 'Save notifications'), saved),
  );

  const log = (() => {
    const body = h('div');
    const opened = new Set();
    return {
      body,
      async draw() {
        const page = await listNotificationDeliveries(slug);
        if (!view.alive) return false;
        const items = page.items || [];
        fill(body, deliveriesTable(items, { channels: true, empty: 'No emails or Slack messages sent yet.', opened }));
        return anyPending(items);
      },
    };
  })();

  show();
  const pending = await log.draw();
  if (!view.alive) return;
  fill(
    main(),
    h('h1', null, slug, h('span', { className: 'spacer' }), h('a', { href: links.webhooks(slug), className: 'webhooks-link' }, 'Webhooks')),
    h(
      'section',
      { className: 'panel notification-settings' },
      h('h2', null, 'Notifications'),
      h('p', { className: 'muted' }, 'An email to each recipient and a message to the Slack-compatible webhook (Slack, Mattermost, Rocket.Chat), when a workflow of this project fails or is fixed. The Slack URL holds a token: it is write-only and shown by its host only.'),
      form,
      problem,
    ),
    h('section', { className: 'panel notification-deliveries' }, h('h2', null, 'Deliveries'), log.body),
  );
  view.later(() => view.poll(log.draw, (busy) => (busy ? POLL_MS : IDLE_POLL_MS)), pending ? POLL_MS : IDLE_POLL_MS);
}
