/**
 * Gyre's web UI: a single page that reads the REST API (CircleCI API v2 shapes) with the browser
 * session's cookie (HttpOnly: this script never sees it; every write carries the session's CSRF
 * token in X-Gyre-CSRF) and routes on the URL fragment:
 *
 *   #/                          projects
 *   #/project/<vcs>/<org>/<repo>          a project's pipelines
 *   #/pipeline/<id>                       a pipeline's workflows, each drawn as a graph of jobs
 *   #/pipeline/<id>/workflows/<id>        the same, scrolled to one workflow (commit statuses link here)
 *   #/job/<vcs>/<org>/<repo>/<number>     a job's steps and their logs, followed live, and its tests
 *   #/org/<vcs>/<org>                     an organisation: its projects and members with their roles
 *   #/members/<vcs>/<org>/<repo>          a project's members with their roles, and its project tokens
 *   #/envvars/<vcs>/<org>/<repo>          a project's environment variables        (settings.js)
 *   #/contexts/<vcs>/<org>                an organisation's contexts               (settings.js)
 *   #/contexts/<vcs>/<org>/<id>           a context's variables and restrictions   (settings.js)
 *   #/tokens                              your personal API tokens
 *   #/audit                               the audit log (instance admins)
 *
 * Everything that came from the API or from a build is put in the page as text nodes
 * (textContent), never as markup. The page has no inline script or style (the server's CSP
 * forbids both); positions are set through the CSSOM, which the policy allows.
 */
(function () {
  'use strict';

  const Ansi = window.GyreAnsi;
  const POLL_MS = 2000;
  const IDLE_POLL_MS = 10000;
  const CSRF_HEADER = 'X-Gyre-CSRF';
  const ACTIVE_WORKFLOW = ['running', 'failing', 'on_hold'];
  const ACTIVE_PIPELINE = ['created', 'setup-pending', 'setup', 'pending'];
  const FINISHED_JOB = ['success', 'failed', 'not_run', 'canceled', 'infrastructure_fail', 'timedout', 'terminated-unknown', 'unauthorized'];
  const STARTED_JOB = ['running', 'queued'];

  // ---------------------------------------------------------------------------------------------
  // DOM building

  /**
   * Creates an element. `props` sets properties (className, href, type, title, …), `on*` functions
   * become listeners, `dataset` and `attrs` objects are copied; children are nodes or strings
   * (strings become text nodes), and null/false children are skipped.
   */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'attrs') for (const [name, v] of Object.entries(value)) el.setAttribute(name, String(v));
      else el[key] = value;
    }
    append(el, children);
    return el;
  }

  /** Replaces an element's children (arrays flattened, null skipped, strings as text). */
  function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    return el;
  }

  function statusBadge(status, extraClass) {
    const text = String(status || 'unknown');
    return h('span', { className: 'badge status-' + cssToken(text) + (extraClass ? ' ' + extraClass : '') }, text.replace(/[_-]/g, ' '));
  }

  /** Statuses come from the API; make sure one can only ever name a class we expect. */
  function cssToken(text) {
    return String(text).toLowerCase().replace(/[^a-z0-9_-]/g, '');
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  function parseTime(value) {
    const t = value ? Date.parse(value) : NaN;
    return Number.isNaN(t) ? null : t;
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms) || ms < 0) return '';
    if (ms < 1000) return ms + 'ms';
    const s = Math.round(ms / 1000);
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    return Math.floor(m / 60) + 'h ' + (m % 60) + 'm';
  }

  /** Duration between two timestamps; a running thing counts up to now. */
  function spanDuration(startedAt, stoppedAt) {
    const start = parseTime(startedAt);
    if (start === null) return '';
    const stop = parseTime(stoppedAt);
    return formatDuration((stop === null ? Date.now() : stop) - start);
  }

  function timeAgo(value) {
    const t = parseTime(value);
    if (t === null) return h('span', { className: 'muted' }, '—');
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    let text;
    if (s < 45) text = 'just now';
    else if (s < 3600) text = Math.round(s / 60) + 'm ago';
    else if (s < 86400) text = Math.round(s / 3600) + 'h ago';
    else text = Math.round(s / 86400) + 'd ago';
    return h('time', { dateTime: new Date(t).toISOString(), title: new Date(t).toLocaleString() }, text);
  }

  function shortSha(sha) {
    return sha ? String(sha).slice(0, 7) : '';
  }

  // ---------------------------------------------------------------------------------------------
  // Routes and links

  function encodeSlug(slug) {
    return String(slug).split('/').map(encodeURIComponent).join('/');
  }

  const links = {
    projects: () => '#/',
    project: (slug) => '#/project/' + encodeSlug(slug),
    pipeline: (id) => '#/pipeline/' + encodeURIComponent(id),
    job: (slug, number) => '#/job/' + encodeSlug(slug) + '/' + encodeURIComponent(number),
    org: (name) => '#/org/gh/' + encodeURIComponent(name),
    members: (slug) => '#/members/' + encodeSlug(slug),
    envvars: (slug) => '#/envvars/' + encodeSlug(slug),
    contexts: (name) => '#/contexts/gh/' + encodeURIComponent(name),
    context: (name, id) => links.contexts(name) + '/' + encodeURIComponent(id),
    tokens: () => '#/tokens',
    audit: () => '#/audit',
  };

  function parseRoute(hash) {
    const parts = hash
      .replace(/^#\/?/, '')
      .split('/')
      .filter((p) => p !== '')
      .map((p) => {
        try {
          return decodeURIComponent(p);
        } catch {
          return p;
        }
      });
    if (parts.length === 0) return { page: 'projects' };
    const [kind, ...rest] = parts;
    if (kind === 'project' && rest.length >= 3) return { page: 'project', slug: rest.join('/') };
    if (kind === 'pipeline' && rest.length === 1) return { page: 'pipeline', id: rest[0] };
    if (kind === 'pipeline' && rest.length === 3 && rest[1] === 'workflows') return { page: 'pipeline', id: rest[0], workflowId: rest[2] };
    if (kind === 'job' && rest.length >= 4) return { page: 'job', slug: rest.slice(0, -1).join('/'), number: rest[rest.length - 1] };
    if (kind === 'org' && rest.length === 2) return { page: 'org', name: rest[1] };
    if (kind === 'members' && rest.length >= 3) return { page: 'members', slug: rest.join('/') };
    if (kind === 'envvars' && rest.length >= 3) return { page: 'envvars', slug: rest.join('/') };
    if (kind === 'contexts' && rest.length === 2) return { page: 'contexts', org: rest[1] };
    if (kind === 'contexts' && rest.length === 3) return { page: 'context', org: rest[1], id: rest[2] };
    if (kind === 'tokens' && rest.length === 0) return { page: 'tokens' };
    if (kind === 'audit' && rest.length === 0) return { page: 'audit' };
    return { page: 'not-found' };
  }

  // ---------------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Raised on 401: the whole page turns into the sign-in form. */
  class SignInRequired extends Error {}

  /** The session's CSRF token, from GET /auth/session or a sign-in's answer; sent on every write. */
  let csrfToken = null;

  async function request(method, path, options) {
    const init = { method, credentials: 'same-origin', headers: { Accept: (options && options.accept) || 'application/json' } };
    if (method !== 'GET' && method !== 'HEAD' && csrfToken) init.headers[CSRF_HEADER] = csrfToken;
    if (options && options.body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(options.body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, 'Cannot reach the Gyre server (' + (err && err.message ? err.message : err) + ')');
    }
    if (res.status === 401) {
      let message = 'Sign in required.';
      try {
        const body = await res.json();
        if (body && typeof body.message === 'string') message = body.message;
      } catch {
        // not JSON: keep the generic message
      }
      throw new SignInRequired(message);
    }
    if (!res.ok) {
      let message = res.status + ' ' + res.statusText;
      try {
        const body = await res.json();
        if (body && typeof body.message === 'string') message = body.message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(res.status, message);
    }
    return res;
  }

  const api = {
    async get(path) {
      return (await request('GET', path)).json();
    },
    async text(path) {
      return (await request('GET', path, { accept: 'text/plain' })).text();
    },
    async post(path, body) {
      const res = await request('POST', path, { body: body === undefined ? {} : body });
      return res.status === 204 ? {} : res.json();
    },
    async put(path, body) {
      return (await request('PUT', path, { body })).json();
    },
    async del(path) {
      return (await request('DELETE', path)).json();
    },
  };

  const paths = {
    me: () => '/api/v2/me',
    projects: () => '/api/v2/projects',
    pipelines: (slug, pageToken) => '/api/v2/project/' + encodeSlug(slug) + '/pipeline' + (pageToken ? '?page-token=' + encodeURIComponent(pageToken) : ''),
    pipeline: (id) => '/api/v2/pipeline/' + encodeURIComponent(id),
    workflows: (pipelineId) => '/api/v2/pipeline/' + encodeURIComponent(pipelineId) + '/workflow',
    jobs: (workflowId) => '/api/v2/workflow/' + encodeURIComponent(workflowId) + '/job',
    cancel: (workflowId) => '/api/v2/workflow/' + encodeURIComponent(workflowId) + '/cancel',
    approve: (workflowId, requestId) => '/api/v2/workflow/' + encodeURIComponent(workflowId) + '/approve/' + encodeURIComponent(requestId),
    job: (slug, number) => '/api/v2/project/' + encodeSlug(slug) + '/job/' + encodeURIComponent(number),
    steps: (slug, number) => paths.job(slug, number) + '/steps',
    output: (slug, number, node, step) => paths.job(slug, number) + '/output?node_index=' + encodeURIComponent(node) + '&step=' + encodeURIComponent(step),
    stream: (slug, number, node) => paths.job(slug, number) + '/output/stream?node_index=' + encodeURIComponent(node),
    tests: (slug, number) => '/api/v2/project/' + encodeSlug(slug) + '/' + encodeURIComponent(number) + '/tests',
    orgs: () => '/api/v2/organizations',
    org: (name) => '/api/v2/organization/gh/' + encodeURIComponent(name),
    orgMembers: (name) => paths.org(name) + '/members',
    orgMember: (name, login) => paths.orgMembers(name) + '/' + encodeURIComponent(login),
    projectMembers: (slug) => '/api/v2/project/' + encodeSlug(slug) + '/members',
    projectMember: (slug, login) => paths.projectMembers(slug) + '/' + encodeURIComponent(login),
    projectTokens: (slug) => '/api/v2/project/' + encodeSlug(slug) + '/tokens',
    projectToken: (slug, id) => paths.projectTokens(slug) + '/' + encodeURIComponent(id),
    myTokens: () => '/api/v2/me/tokens',
    myToken: (id) => paths.myTokens() + '/' + encodeURIComponent(id),
    audit: (since, pageToken) =>
      '/api/v2/audit?limit=100' + (since ? '&since=' + encodeURIComponent(since) : '') + (pageToken ? '&page-token=' + encodeURIComponent(pageToken) : ''),
  };

  /** Every page of a paged list. */
  async function getAll(path) {
    const items = [];
    let token = null;
    for (let page = 0; page < 50; page++) {
      const body = await api.get(path + (token ? (path.includes('?') ? '&' : '?') + 'page-token=' + encodeURIComponent(token) : ''));
      items.push(...(body.items || []));
      token = body.next_page_token;
      if (!token) break;
    }
    return items;
  }

  // ---------------------------------------------------------------------------------------------
  // Session

  /** Signs in with an API token: the server answers with the session cookie (HttpOnly) and its CSRF token. */
  async function signInWithToken(token) {
    const body = await api.post('/auth/token', { token });
    csrfToken = body.csrf_token;
    me = null;
  }

  /** `/login#token=…` (the link `npm start` prints): sign in with it, then forget the link. */
  async function takeTokenFromFragment() {
    if (!/^#token=/.test(location.hash)) return false;
    const token = new URLSearchParams(location.hash.slice(1)).get('token');
    history.replaceState(null, '', '/#/');
    if (!token) return false;
    try {
      await signInWithToken(token);
    } catch (err) {
      pendingSignInError = 'The sign-in link was not accepted: ' + err.message;
    }
    return true;
  }

  /** `/login#error=…`: a redirect sign-in (GitHub, single sign-on) that did not work, and why. */
  let pendingSignInError = null;
  function takeErrorFromFragment() {
    if (!/^#error=/.test(location.hash)) return;
    pendingSignInError = new URLSearchParams(location.hash.slice(1)).get('error') || 'The sign-in did not work.';
    history.replaceState(null, '', '/login');
  }

  // ---------------------------------------------------------------------------------------------
  // Views: each page gets a view that owns its timers and streams; leaving the page disposes it.

  let currentView = null;

  function createView() {
    const view = {
      alive: true,
      timers: new Set(),
      sources: new Set(),
      /** Runs `fn` now and again after `delay(result)` ms (null stops) until the page is left. */
      poll(fn, delay) {
        const tick = async () => {
          if (!view.alive) return;
          let next = null;
          try {
            next = delay(await fn());
          } catch (err) {
            if (!view.alive) return;
            if (err instanceof SignInRequired) return showSignIn();
            flash(err.message);
            next = POLL_MS * 2;
          }
          if (view.alive && next !== null) view.later(tick, next);
        };
        return tick();
      },
      later(fn, ms) {
        const timer = setTimeout(() => {
          view.timers.delete(timer);
          if (view.alive) fn();
        }, ms);
        view.timers.add(timer);
      },
      stream(url, handlers) {
        const source = new EventSource(url);
        view.sources.add(source);
        for (const [event, handler] of Object.entries(handlers)) source.addEventListener(event, (e) => view.alive && handler(e, source));
        return source;
      },
      close(source) {
        source.close();
        view.sources.delete(source);
      },
      dispose() {
        view.alive = false;
        for (const timer of view.timers) clearTimeout(timer);
        for (const source of view.sources) source.close();
        view.timers.clear();
        view.sources.clear();
      },
    };
    return view;
  }

  const main = () => document.getElementById('main');

  function setCrumbs(...given) {
    const items = given.filter(Boolean);
    const crumbs = document.getElementById('crumbs');
    fill(crumbs);
    items.forEach((item, i) => {
      if (i > 0) crumbs.append(h('span', { className: 'sep', attrs: { 'aria-hidden': 'true' } }, '/'));
      crumbs.append(item.href ? h('a', { href: item.href }, item.text) : h('span', { className: 'here' }, item.text));
    });
    document.title = [...items].reverse().map((i) => i.text).concat('Gyre').join(' · ');
  }

  function flash(message) {
    let box = document.getElementById('flash');
    if (!box) {
      box = h('div', { id: 'flash', className: 'flash', attrs: { role: 'alert' } });
      document.body.append(box);
    }
    fill(box, h('span', null, message), h('button', { type: 'button', className: 'link', onclick: () => box.remove() }, 'Dismiss'));
  }

  function errorPanel(err) {
    return h('div', { className: 'panel error-panel', attrs: { role: 'alert' } }, h('strong', null, err.status === 404 ? 'Not found' : 'Error'), ' ', err.message);
  }

  // ---------------------------------------------------------------------------------------------
  // Sign-in

  let me = null;

  async function loadMe() {
    if (me) return me;
    const session = await api.get('/auth/session');
    csrfToken = session.csrf_token;
    me = await api.get(paths.me());
    const who = document.getElementById('who');
    fill(
      who,
      h('a', { href: links.tokens(), className: 'nav-tokens' }, 'Tokens'),
      me.admin ? h('a', { href: links.audit(), className: 'nav-audit' }, 'Audit') : null,
      h('span', { className: 'login', title: me.name || '' }, me.login || me.name || ''),
      h('button', { type: 'button', className: 'link', onclick: signOut }, 'Sign out'),
    );
    return me;
  }

  async function signOut() {
    try {
      await api.post('/auth/sign-out');
    } catch (err) {
      // The session is gone either way for this page; the server ends it when it can be reached.
    }
    csrfToken = null;
    me = null;
    showSignIn();
  }

  function showSignIn(message) {
    if (currentView) currentView.dispose();
    const view = (currentView = createView());
    me = null;
    csrfToken = null;
    document.getElementById('who').replaceChildren();
    setCrumbs({ text: 'Sign in' });
    const shown = message || pendingSignInError || '';
    pendingSignInError = null;
    const status = h('p', { className: 'form-error', attrs: { role: 'alert' } }, shown);
    const providersBox = h('div', { className: 'signin-providers' });
    const input = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off', required: true, spellcheck: false });
    const tokenForm = h(
      'form',
      { className: 'signin-token', onsubmit: (e) => submitToken(e) },
      h('p', { className: 'muted' }, 'Or paste an API token. When the server starts it prints a sign-in link that does this for you.'),
      h('label', { htmlFor: 'token' }, 'API token'),
      input,
      h('button', { type: 'submit', className: 'primary' }, 'Sign in with token'),
    );
    const panel = h('div', { className: 'panel signin' }, h('h1', null, 'Sign in to Gyre'), providersBox, tokenForm, status);
    const returnTo = /^#\//.test(location.hash) ? location.hash : '';

    async function finish() {
      if (location.pathname !== '/') history.replaceState(null, '', '/' + (location.hash || '#/'));
      route();
    }
    async function submitToken(e) {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      try {
        await signInWithToken(token);
      } catch (err) {
        status.textContent = err.message;
        return;
      }
      finish();
    }
    function passwordForm(p) {
      const user = h('input', { type: 'text', name: 'username', id: 'username-' + p.name, autocomplete: 'username', required: true, spellcheck: false });
      const pass = h('input', { type: 'password', name: 'password', id: 'password-' + p.name, autocomplete: 'current-password', required: true });
      return h(
        'form',
        {
          className: 'signin-password',
          onsubmit: async (e) => {
            e.preventDefault();
            try {
              const body = await api.post('/auth/' + encodeURIComponent(p.name), { username: user.value.trim(), password: pass.value });
              csrfToken = body.csrf_token;
            } catch (err) {
              pass.value = '';
              status.textContent = err.message;
              return;
            }
            finish();
          },
        },
        h('label', { htmlFor: 'username-' + p.name }, p.label + ': user name'),
        user,
        h('label', { htmlFor: 'password-' + p.name }, 'Password'),
        pass,
        h('button', { type: 'submit', className: 'primary' }, 'Sign in with ' + p.label),
      );
    }
    api.get('/auth/providers').then(
      (body) => {
        if (!view.alive) return;
        fill(
          providersBox,
          ...body.providers.map((p) =>
            p.kind === 'redirect'
              ? h('a', { className: 'button primary signin-' + p.name, href: p.start_url + (returnTo ? '?return_to=' + encodeURIComponent(returnTo) : '') }, 'Sign in with ' + p.label)
              : passwordForm(p),
          ),
        );
      },
      () => undefined,
    );
    fill(main(), panel);
    input.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Projects

  async function projectsPage(view) {
    setCrumbs({ text: 'Projects' });
    const projects = await getAll(paths.projects());
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

  // ---------------------------------------------------------------------------------------------
  // A project's pipelines

  function pipelineIsActive(pipeline, workflows) {
    if (pipeline.state === 'errored') return false;
    if (pipeline.state !== 'created') return ACTIVE_PIPELINE.includes(pipeline.state);
    return workflows.length === 0 || workflows.some((w) => ACTIVE_WORKFLOW.includes(w.status));
  }

  function refText(vcs) {
    if (!vcs) return '';
    if (vcs.tag) return 'tag ' + vcs.tag;
    return vcs.branch || '';
  }

  function pipelineErrors(pipeline) {
    const errors = pipeline.errors || [];
    if (!errors.length) return null;
    return h(
      'ul',
      { className: 'pipeline-errors' },
      errors.map((e) => h('li', null, h('span', { className: 'error-type' }, e.type || 'error'), h('pre', { className: 'error-message' }, e.message || ''))),
    );
  }

  async function projectPage(view, { slug }) {
    setCrumbs({ text: 'Projects', href: links.projects() }, { text: slug });
    const table = h('tbody');
    const more = h('div', { className: 'more' });
    fill(main(),
      h(
        'h1',
        null,
        slug,
        h('span', { className: 'spacer' }),
        h('a', { href: links.envvars(slug), className: 'envvars-link' }, 'Environment variables'),
        h('a', { href: links.members(slug), className: 'members-link' }, 'Members and tokens'),
      ),
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
      const status = p.state === 'created' && workflows.length ? workflowsSummary(workflows) : p.state;
      const rows = [
        h(
          'tr',
          { className: 'pipeline-row', dataset: { number: p.number, id: p.id } },
          h('td', null, h('a', { href: links.pipeline(p.id), className: 'pipeline-link' }, '#' + p.number)),
          h('td', null, statusBadge(status)),
          h(
            'td',
            { className: 'workflow-chips' },
            workflows.map((w) => h('a', { href: links.pipeline(p.id), className: 'chip status-' + cssToken(w.status), title: w.status }, w.name)),
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

    function draw(firstPage) {
      const all = firstPage.concat(extraPages);
      if (!all.length) {
        fill(table, h('tr', null, h('td', { colSpan: 7, className: 'muted' }, 'No pipelines yet.')));
      } else {
        fill(table, ...all.flatMap(row));
      }
      const token = extraPages.length ? nextToken : firstNextToken;
      fill(more, token ? h('button', { type: 'button', onclick: loadMore }, 'Load more') : '');
    }

    let firstPage = [];
    async function loadMore() {
      const token = extraPages.length ? nextToken : firstNextToken;
      const body = await api.get(paths.pipelines(slug, token));
      extraPages = extraPages.concat(await withWorkflows(body.items || []));
      nextToken = body.next_page_token || null;
      if (view.alive) draw(firstPage);
    }

    await view.poll(
      async () => {
        const body = await api.get(paths.pipelines(slug));
        const rows = await withWorkflows(body.items || []);
        if (!view.alive) return false;
        firstPage = rows;
        firstNextToken = body.next_page_token || null;
        draw(rows);
        return rows.some((r) => pipelineIsActive(r.pipeline, r.workflows));
      },
      (active) => (active ? POLL_MS : IDLE_POLL_MS),
    );
  }

  /** One status for a pipeline's row: the worst of its workflows, or running while any runs. */
  function workflowsSummary(workflows) {
    const order = ['failing', 'running', 'on_hold', 'error', 'failed', 'canceled', 'unauthorized', 'not_run', 'success'];
    let best = 'success';
    for (const w of workflows) if (order.indexOf(w.status) !== -1 && order.indexOf(w.status) < order.indexOf(best)) best = w.status;
    return best;
  }

  // ---------------------------------------------------------------------------------------------
  // A pipeline: workflows and their job graphs

  async function pipelinePage(view, { id, workflowId }) {
    const pipeline = await api.get(paths.pipeline(id));
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
      const status = p.state === 'created' && workflows.length ? workflowsSummary(workflows) : p.state;
      fill(
        header,
        h('h1', null, 'Pipeline #' + p.number, ' ', statusBadge(status, 'pipeline-status')),
        h(
          'dl',
          { className: 'facts' },
          fact('Project', h('a', { href: links.project(slug) }, slug)),
          fact(vcs.tag ? 'Tag' : 'Branch', h('span', { className: 'mono' }, vcs.tag || vcs.branch || '—')),
          fact('Revision', h('span', { className: 'mono', title: vcs.revision || '' }, shortSha(vcs.revision) || '—'), vcs.commit && vcs.commit.subject ? ' ' + vcs.commit.subject : ''),
          fact('Trigger', ((p.trigger && p.trigger.actor && p.trigger.actor.login) || '') + (p.trigger && p.trigger.type ? ' (' + p.trigger.type + ')' : '')),
          fact('Created', timeAgo(p.created_at)),
        ),
        pipelineErrors(p),
      );
    }

    async function refresh() {
      const [p, workflows] = await Promise.all([api.get(paths.pipeline(id)), getAll(paths.workflows(id))]);
      const jobLists = await Promise.all(workflows.map((w) => getAll(paths.jobs(w.id))));
      if (!view.alive) return false;
      drawHeader(p, workflows);
      if (!workflows.length) {
        fill(workflowsBox, p.state === 'errored' ? '' : h('p', { className: 'muted' }, 'No workflows yet.'));
        drawn.clear();
      } else {
        const sections = workflows.map((w, i) => {
          // Redraw a workflow only when something in it changed (or a running clock must move).
          const signature = JSON.stringify([w, jobLists[i]]);
          const previous = drawn.get(w.id);
          const running = ACTIVE_WORKFLOW.includes(w.status);
          if (previous && previous.signature === signature && !running) return previous.section;
          const section = workflowSection(view, w, jobLists[i], slug, refresh);
          drawn.set(w.id, { section, signature });
          return section;
        });
        fill(workflowsBox, ...sections);
        // A link to one workflow (a commit status on GitHub) shows that one, once it is drawn.
        const linked = workflowId && drawn.get(workflowId);
        if (linked) {
          linked.section.classList.add('linked');
          if (!scrolled) linked.section.scrollIntoView({ block: 'start' });
          scrolled = true;
        }
      }
      return pipelineIsActive(p, workflows);
    }

    await view.poll(refresh, (active) => (active ? POLL_MS : null));
  }

  function fact(label, ...value) {
    return h('div', { className: 'fact' }, h('dt', null, label), h('dd', null, ...value));
  }

  function workflowSection(view, workflow, jobs, slug, refresh) {
    const canCancel = ACTIVE_WORKFLOW.includes(workflow.status);
    const cancel = canCancel
      ? h(
          'button',
          {
            type: 'button',
            className: 'danger cancel-workflow',
            onclick: async (e) => {
              e.target.disabled = true;
              try {
                await api.post(paths.cancel(workflow.id));
              } catch (err) {
                if (err instanceof SignInRequired) return showSignIn();
                flash('Could not cancel workflow ' + workflow.name + ': ' + err.message);
              }
              if (view.alive) await refresh().catch(() => {});
            },
          },
          'Cancel workflow',
        )
      : null;
    return h(
      'section',
      { className: 'panel workflow', dataset: { workflowId: workflow.id, name: workflow.name } },
      h(
        'header',
        { className: 'workflow-head' },
        h('h2', null, workflow.name),
        statusBadge(workflow.status),
        h('span', { className: 'muted duration' }, spanDuration(workflow.created_at, workflow.stopped_at)),
        h('span', { className: 'spacer' }),
        cancel,
      ),
      jobGraph(view, workflow, jobs, slug, refresh),
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
  function layoutJobs(jobs) {
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

  function jobGraph(view, workflow, jobs, slug, refresh) {
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
            h(
              'button',
              {
                type: 'button',
                className: 'primary approve',
                onclick: async (e) => {
                  e.target.disabled = true;
                  try {
                    await api.post(paths.approve(workflow.id, job.approval_request_id || job.id));
                  } catch (err) {
                    if (err instanceof SignInRequired) return showSignIn();
                    flash('Could not approve ' + job.name + ': ' + err.message);
                  }
                  if (view.alive) await refresh().catch(() => {});
                },
              },
              'Approve',
            ),
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

  // ---------------------------------------------------------------------------------------------
  // A job: steps and logs, and its test results in a second tab

  async function jobPage(view, { slug, number }) {
    let job = await api.get(paths.job(slug, number));
    const pipelineId = job.pipeline && job.pipeline.id;
    // Only for the pipeline's number in the breadcrumbs: not worth failing the page over.
    const pipeline = pipelineId ? await api.get(paths.pipeline(pipelineId)).catch(() => null) : null;
    if (!view.alive) return;
    const pipelineName = pipeline ? 'Pipeline #' + pipeline.number : 'Pipeline';
    setCrumbs(
      { text: 'Projects', href: links.projects() },
      { text: slug, href: links.project(slug) },
      pipelineId ? { text: pipelineName, href: links.pipeline(pipelineId) } : null,
      { text: job.name + ' #' + job.number },
    );

    const header = h('section', { className: 'panel job-header' });
    const nodesBar = h('nav', { className: 'nodes', attrs: { 'aria-label': 'Parallel runs' } });
    const stepsBox = h('div', { className: 'steps', attrs: { 'aria-live': 'off' } });
    const stepsPanel = h('div', { className: 'tab-panel', id: 'tab-steps', attrs: { role: 'tabpanel' } }, nodesBar, stepsBox);
    const testsPanel = h('div', { className: 'tab-panel', id: 'tab-tests', hidden: true, attrs: { role: 'tabpanel' } });
    const stepsTab = h('button', { type: 'button', className: 'tab', dataset: { tab: 'steps' }, attrs: { role: 'tab', 'aria-controls': 'tab-steps' }, onclick: () => showTab('steps') }, 'Steps');
    const testsTab = h('button', { type: 'button', className: 'tab', dataset: { tab: 'tests' }, attrs: { role: 'tab', 'aria-controls': 'tab-tests' }, onclick: () => showTab('tests') });
    const tabs = h('nav', { className: 'tabs', attrs: { role: 'tablist', 'aria-label': 'Job' } }, stepsTab, testsTab);
    fill(main(), header, tabs, stepsPanel, testsPanel);
    const testResults = createTestResults(view, testsTab, testsPanel, slug, number);

    function showTab(name) {
      for (const [tab, panel] of [[stepsTab, stepsPanel], [testsTab, testsPanel]]) {
        const selected = tab.dataset.tab === name;
        tab.classList.toggle('selected', selected);
        tab.setAttribute('aria-selected', String(selected));
        panel.hidden = !selected;
      }
    }
    showTab('steps');

    let node = 0;
    let logs = null; // the step list of the node on screen

    function drawHeader() {
      fill(
        header,
        h('h1', null, job.name, ' ', h('span', { className: 'muted' }, '#' + job.number), ' ', statusBadge(job.status, 'job-status')),
        h(
          'dl',
          { className: 'facts' },
          fact('Project', h('a', { href: links.project(slug) }, slug)),
          pipelineId ? fact('Pipeline', h('a', { href: links.pipeline(pipelineId) }, pipeline ? '#' + pipeline.number : 'open')) : null,
          job.latest_workflow ? fact('Workflow', job.latest_workflow.name || '') : null,
          fact('Executor', (job.executor && job.executor.type) || '—'),
          fact('Duration', job.duration !== undefined && job.duration !== null ? formatDuration(job.duration) : spanDuration(job.started_at, job.stopped_at) || '—'),
          fact('Started', timeAgo(job.started_at)),
        ),
      );
      const runs = job.parallel_runs || [];
      if ((job.parallelism || 1) > 1 && runs.length) {
        fill(
          nodesBar,
          h('span', { className: 'muted' }, 'Parallel runs:'),
          runs.map((r) =>
            h(
              'button',
              {
                type: 'button',
                className: 'node-tab status-' + cssToken(r.status) + (r.index === node ? ' selected' : ''),
                attrs: { 'aria-pressed': r.index === node },
                onclick: () => {
                  if (r.index === node) return;
                  node = r.index;
                  drawHeader();
                  showNode();
                },
              },
              String(r.index),
            ),
          ),
        );
      } else {
        fill(nodesBar);
      }
    }

    function showNode() {
      if (logs) logs.dispose();
      logs = createStepList(view, stepsBox, slug, number, node);
      if (STARTED_JOB.includes(job.status)) logs.follow(onEnd);
      else logs.loadFinished();
    }

    async function onEnd() {
      job = await api.get(paths.job(slug, number));
      if (!view.alive) return;
      drawHeader();
      testResults.load();
    }

    drawHeader();
    showNode();
    // Results are stored by a step of the job, so a running job may have some already.
    testResults.load();

    // Keep the header (status, duration) current while the job runs; the log follows its stream.
    view.later(
      () =>
        view.poll(
          async () => {
            job = await api.get(paths.job(slug, number));
            if (!view.alive) return false;
            drawHeader();
            const done = FINISHED_JOB.includes(job.status);
            if (done) testResults.load();
            if (logs && !logs.following && STARTED_JOB.includes(job.status)) logs.follow(onEnd);
            return !done;
          },
          (running) => (running ? POLL_MS : null),
        ),
      POLL_MS,
    );
  }

  const TEST_RESULTS = [
    // result from the API, its place in the list, the word in the tab, the status colour
    { result: 'failure', order: 0, word: 'failed', status: 'failed' },
    { result: 'skipped', order: 1, word: 'skipped', status: 'skipped' },
    { result: 'success', order: 2, word: 'passed', status: 'success' },
  ];
  const testResultInfo = (result) => TEST_RESULTS.find((r) => r.result === result) || { result, order: 1, word: String(result), status: 'unknown' };

  /**
   * The Tests tab: every stored test result of the job, failures first, each failure's message in
   * a collapsible block. Names and messages come from the build's own files: text nodes only.
   */
  function createTestResults(view, tab, panel, slug, number) {
    let loading = false;
    let again = false; // a load asked for while one was running: the job may have stored more since
    drawLabel(null);
    fill(panel, h('p', { className: 'muted' }, 'Loading test results…'));

    function drawLabel(tests) {
      const counts = TEST_RESULTS.map((r) => ({ r, n: tests ? tests.filter((t) => t.result === r.result).length : 0 })).filter((c) => c.n > 0);
      fill(
        tab,
        'Tests',
        counts.map((c) => [' ', h('span', { className: 'tab-count status-' + c.r.status, dataset: { result: c.r.result } }, c.n + ' ' + c.r.word)]),
      );
    }

    function drawTests(tests) {
      if (!tests.length) {
        fill(panel, h('p', { className: 'muted' }, 'This job stored no test results (a store_test_results step reads JUnit XML).'));
        return;
      }
      const sorted = [...tests].sort(
        (a, b) =>
          testResultInfo(a.result).order - testResultInfo(b.result).order ||
          String(a.classname).localeCompare(String(b.classname)) ||
          String(a.name).localeCompare(String(b.name)),
      );
      let openFailures = 0;
      const items = sorted.map((t) => {
        const info = testResultInfo(t.result);
        const seconds = Number(t.run_time);
        let message = null;
        if (t.message) {
          // The first few failures open by themselves; a long list stays readable.
          const open = t.result === 'failure' && openFailures++ < 5;
          message = h('details', { className: 'test-message', open }, h('summary', null, t.result === 'failure' ? 'Failure message' : 'Message'), h('pre', { className: 'message' }, String(t.message)));
        }
        return h(
          'li',
          { className: 'test status-' + info.status, dataset: { result: cssToken(t.result) } },
          h(
            'div',
            { className: 'test-head' },
            h('span', { className: 'badge test-result status-' + info.status }, String(t.result)),
            h('span', { className: 'test-classname muted' }, String(t.classname || '')),
            h('span', { className: 'test-name' }, String(t.name || '')),
            h('span', { className: 'spacer' }),
            t.file ? h('span', { className: 'test-file mono muted' }, String(t.file)) : null,
            h('span', { className: 'test-time muted' }, Number.isFinite(seconds) ? formatDuration(Math.round(seconds * 1000)) : ''),
          ),
          message,
        );
      });
      fill(panel, h('ol', { className: 'test-list' }, items));
    }

    return {
      async load() {
        if (loading) {
          again = true;
          return;
        }
        loading = true;
        again = false;
        try {
          const tests = await getAll(paths.tests(slug, number));
          if (!view.alive) return;
          drawLabel(tests);
          drawTests(tests);
        } catch (err) {
          if (err instanceof SignInRequired) return showSignIn();
          if (view.alive) fill(panel, h('p', { className: 'log-error' }, 'Could not load the test results: ' + err.message));
        } finally {
          loading = false;
        }
        if (again && view.alive) await this.load();
      },
    };
  }

  /**
   * The steps of one parallel node. `follow` reads the node's event stream, which replays the job
   * from its first step and then goes on live; `loadFinished` reads the stored steps and fetches a
   * step's output when it is opened.
   */
  function createStepList(view, box, slug, number, node) {
    const steps = new Map(); // step index → entry
    let source = null;
    let retry = null;
    const list = {
      following: false,
      dispose() {
        if (source) view.close(source);
        source = null;
        list.following = false;
        fill(box);
      },
      follow(onEnd) {
        if (list.following) return;
        list.following = true;
        const restart = () => {
          steps.clear();
          fill(box, h('p', { className: 'muted waiting' }, 'Waiting for the job to start…'));
        };
        restart();
        let opened = false;
        source = view.stream(paths.stream(slug, number, node), {
          // The stream replays the job from its beginning on every connection, and again when a
          // new attempt starts after an infrastructure failure: start the log over each time.
          open: () => {
            if (opened) restart();
            opened = true;
          },
          attempt: (e) => {
            const info = JSON.parse(e.data);
            restart();
            flash('The job is being retried (attempt ' + info.attempt + '): its log starts over.');
          },
          step: (e) => {
            const step = JSON.parse(e.data);
            if (step.node_index !== undefined && step.node_index !== node) return;
            upsert(step, true);
          },
          output: (e) => {
            const chunk = JSON.parse(e.data);
            if (chunk.node_index !== undefined && chunk.node_index !== node) return;
            appendOutput(chunk.step, chunk.text);
          },
          end: async () => {
            if (source) view.close(source);
            source = null;
            list.following = false;
            // The final step list carries durations and exit codes the stream events may lack.
            try {
              const body = await api.get(paths.steps(slug, number));
              for (const s of body.items || []) if (s.node_index === node) upsert(s, false);
            } catch {
              // the log is already complete; a missing summary is not worth an error
            }
            if (!steps.size) fill(box, h('p', { className: 'muted' }, 'This job ran no steps.'));
            onEnd();
          },
          error: (_e, src) => {
            // EventSource reconnects by itself while the stream is merely interrupted; once it
            // gives up (an error status), try again later.
            if (src.readyState === EventSource.CLOSED && view.alive && list.following) {
              view.close(src);
              source = null;
              list.following = false;
              clearTimeout(retry);
              retry = setTimeout(() => view.alive && !list.following && list.follow(onEnd), POLL_MS);
            }
          },
        });
      },
      async loadFinished() {
        fill(box, h('p', { className: 'muted' }, 'Loading steps…'));
        const body = await api.get(paths.steps(slug, number));
        if (!view.alive) return;
        const mine = (body.items || []).filter((s) => s.node_index === undefined || s.node_index === node);
        fill(box);
        if (!mine.length) box.append(h('p', { className: 'muted' }, 'This job ran no steps.'));
        const many = mine.length > 8;
        for (const s of mine) {
          const entry = upsert(s, false);
          if (!many || s.status !== 'success') entry.details.open = true;
        }
      },
    };

    function stepMeta(step) {
      const parts = [];
      // A running step's clock is not kept ticking; its duration shows once it stops.
      const duration = step.status === 'running' ? '' : step.duration_ms !== undefined && step.duration_ms !== null ? formatDuration(step.duration_ms) : spanDuration(step.started_at, step.stopped_at);
      if (duration) parts.push(duration);
      if (step.exit_code !== undefined && step.exit_code !== null) parts.push('exit ' + step.exit_code);
      return parts.join(' · ');
    }

    function upsert(step, live) {
      let entry = steps.get(step.index);
      if (!entry) {
        const waiting = box.querySelector('.waiting');
        if (waiting) waiting.remove();
        const icon = h('span', { className: 'step-icon', attrs: { 'aria-hidden': 'true' } });
        const name = h('span', { className: 'step-name' });
        const status = h('span', { className: 'step-status' });
        const meta = h('span', { className: 'step-meta muted' });
        const log = h('pre', { className: 'log', attrs: { tabindex: '0' } });
        const details = h('details', { className: 'step', dataset: { index: step.index } }, h('summary', null, icon, name, status, h('span', { className: 'spacer' }), meta), log);
        entry = { details, name, status, meta, log, ansi: Ansi.initialState(), loaded: live, info: {} };
        if (live) details.open = true;
        else details.addEventListener('toggle', () => details.open && load(entry));
        steps.set(step.index, entry);
        // Keep the steps in order even if events arrive out of it.
        const after = [...steps.keys()].filter((i) => i > step.index).sort((a, b) => a - b)[0];
        if (after !== undefined) box.insertBefore(details, steps.get(after).details);
        else box.append(details);
      }
      entry.info = Object.assign({}, entry.info, step);
      const info = entry.info;
      entry.details.className = 'step status-' + cssToken(info.status);
      entry.name.textContent = info.name || (info.type ? info.type : 'Step ' + step.index);
      entry.status.textContent = info.status ? String(info.status) : '';
      entry.meta.textContent = stepMeta(info);
      return entry;
    }

    function appendOutput(index, text) {
      let entry = steps.get(index);
      if (!entry) entry = upsert({ index, status: 'running' }, true);
      writeLog(entry, text);
    }

    function writeLog(entry, text) {
      const atBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 32;
      const parsed = Ansi.parseAnsi(text, entry.ansi);
      entry.ansi = parsed.state;
      const fragment = document.createDocumentFragment();
      for (const segment of parsed.segments) {
        if (segment.classes.length) fragment.append(h('span', { className: segment.classes.join(' ') }, segment.text));
        else fragment.append(document.createTextNode(segment.text));
      }
      entry.log.append(fragment);
      if (atBottom && list.following) window.scrollTo(0, document.documentElement.scrollHeight);
    }

    async function load(entry) {
      if (entry.loaded) return;
      entry.loaded = true;
      fill(entry.log, h('span', { className: 'muted' }, 'Loading output…'));
      try {
        const text = await api.text(paths.output(slug, number, node, entry.info.index));
        if (!view.alive) return;
        fill(entry.log);
        if (text === '') entry.log.append(h('span', { className: 'muted' }, '(no output)'));
        else writeLog(entry, text);
      } catch (err) {
        entry.loaded = false;
        if (err instanceof SignInRequired) return showSignIn();
        fill(entry.log, h('span', { className: 'log-error' }, 'Could not load the output: ' + err.message));
      }
    }

    return list;
  }

  // ---------------------------------------------------------------------------------------------
  // Organisations, members, tokens and the audit log

  const ORG_ROLES = ['admin', 'member', 'viewer'];
  const PROJECT_ROLES = ['admin', 'write', 'read'];

  function orgOfSlug(slug) {
    return String(slug).split('/')[1] || '';
  }

  function formatTime(value) {
    const t = parseTime(value);
    return t === null ? '—' : new Date(t).toLocaleString();
  }

  /** Runs an action of a button or form, reporting a failure in the flash box; answers whether it worked. */
  async function attempt(what, fn) {
    try {
      await fn();
      return true;
    } catch (err) {
      if (err instanceof SignInRequired) {
        showSignIn();
        return false;
      }
      flash(what + ': ' + err.message);
      return false;
    }
  }

  function roleSelect(roles, value, props) {
    return h('select', props, roles.map((r) => h('option', { value: r, selected: r === value }, r)));
  }

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
              ? roleSelect(options.roles, m.role, {
                  className: 'member-role',
                  attrs: { 'aria-label': 'Role of ' + m.login },
                  onchange: async (e) => {
                    if (await attempt('Could not change the role of ' + m.login, () => api.put(options.memberPath(m.login), { role: e.target.value }))) await draw();
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
                      if (await attempt('Could not remove ' + m.login, () => api.del(options.memberPath(m.login)))) await draw();
                    },
                  },
                  'Remove',
                )
              : null,
          ),
        ),
      );
      const login = h('input', { type: 'text', name: 'login', className: 'add-login', placeholder: 'login', required: true, spellcheck: false, attrs: { 'aria-label': 'Login' } });
      const role = roleSelect(options.roles, options.roles[options.roles.length - 1], { name: 'role', className: 'add-role', attrs: { 'aria-label': 'Role' } });
      const add = options.canManage
        ? h(
            'form',
            {
              className: 'add-member inline-form',
              onsubmit: async (e) => {
                e.preventDefault();
                const who = login.value.trim();
                if (who && (await attempt('Could not add ' + who, () => api.put(options.memberPath(who), { role: role.value })))) await draw();
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
  function tokensSection(view, options) {
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
                  if (await attempt('Could not revoke ' + t.label, () => api.del(options.tokenPath(t.id)))) {
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
      const scope = options.scope === 'project' ? roleSelect(['read', 'trigger'], 'read', { name: 'scope', className: 'token-scope', attrs: { 'aria-label': 'Scope' } }) : null;
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
            if (await attempt('Could not create the token', async () => (made = await api.post(options.path, body)))) {
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

  async function orgPage(view, { name }) {
    setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'gh/' + name });
    const org = await api.get(paths.org(name));
    const projects = (await getAll(paths.projects())).filter((p) => p.organization_name === name);
    if (!view.alive) return;
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

  async function projectMembersPage(view, { slug }) {
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

  async function tokensPage(view) {
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

  const AUDIT_SPANS = [
    ['1h', 'last hour'],
    ['24h', 'last day'],
    ['7d', 'last week'],
    ['30d', 'last 30 days'],
    ['', 'everything kept'],
  ];

  async function auditPage(view) {
    setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'Audit log' });
    const body = h('tbody');
    const more = h('div', { className: 'more' });
    let since = '7d';
    const span = h(
      'select',
      {
        className: 'audit-since',
        attrs: { 'aria-label': 'Since' },
        onchange: (e) => {
          since = e.target.value;
          load(null, true);
        },
      },
      AUDIT_SPANS.map(([value, text]) => h('option', { value, selected: value === since }, text)),
    );
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

  // ---------------------------------------------------------------------------------------------
  // The router

  // The secrets pages live in settings.js and get this page's helpers from here.
  const settings = window.GyreSettings.create({ h, fill, main, api, getAll, setCrumbs, links, encodeSlug, orgOfSlug, timeAgo, SignInRequired, showSignIn });

  const pages = {
    projects: projectsPage,
    project: projectPage,
    pipeline: pipelinePage,
    job: jobPage,
    org: orgPage,
    members: projectMembersPage,
    envvars: settings.projectVariablesPage,
    contexts: settings.contextsPage,
    context: settings.contextPage,
    tokens: tokensPage,
    audit: auditPage,
  };

  async function route() {
    if (currentView) currentView.dispose();
    const view = (currentView = createView());
    const target = parseRoute(location.hash);
    const page = pages[target.page];
    try {
      await loadMe();
      if (!view.alive) return;
      if (!page) {
        setCrumbs({ text: 'Projects', href: links.projects() }, { text: 'Not found' });
        fill(main(), h('div', { className: 'panel' }, 'There is no page at this address. ', h('a', { href: links.projects() }, 'Go to projects')));
        return;
      }
      await page(view, target);
    } catch (err) {
      if (!view.alive) return;
      if (err instanceof SignInRequired) return showSignIn();
      fill(main(), errorPanel(err));
    }
  }

  async function start() {
    takeErrorFromFragment();
    await takeTokenFromFragment();
    if (location.pathname === '/login' && !pendingSignInError) history.replaceState(null, '', '/' + (location.hash || '#/'));
    window.addEventListener('hashchange', async () => {
      if (await takeTokenFromFragment()) me = null;
      route();
    });
    route();
  }

  start();
})();
