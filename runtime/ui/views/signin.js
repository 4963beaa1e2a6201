/**
 * The session: who is signed in (shown in the top bar), the sign-in page (providers from
 * /auth/providers, or an API token), the sign-in link `npm start` prints (`/login#token=…`), and
 * signing out.
 */
import { api, getMe, paths, setCsrfToken } from '../api.js';
import { fill, h, main, setCrumbs } from '../dom.js';
import { links } from '../links.js';

let me = null;
let pendingSignInError = null;

/** The signed-in user, once loadMe has answered. */
export function currentUser() {
  return me;
}

export function forgetUser() {
  me = null;
}

/** Signs in with an API token: the server answers with the session cookie (HttpOnly) and its CSRF token. */
async function signInWithToken(token) {
  const body = await api.post(paths.signInWithToken(), { token });
  setCsrfToken(body.csrf_token);
  me = null;
}

/** `/login#token=…` (the link `npm start` prints): sign in with it, then forget the link. */
export async function takeTokenFromFragment() {
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
export function takeErrorFromFragment() {
  if (!/^#error=/.test(location.hash)) return;
  pendingSignInError = new URLSearchParams(location.hash.slice(1)).get('error') || 'The sign-in did not work.';
  history.replaceState(null, '', '/login');
}

export function hasPendingSignInError() {
  return pendingSignInError !== null;
}

/** Loads the session and the user (once), and shows who is signed in in the top bar. */
export async function loadMe(onSignedOut) {
  if (me) return me;
  const session = await api.get(paths.session());
  setCsrfToken(session.csrf_token);
  me = await getMe();
  fill(
    document.getElementById('who'),
    h('a', { href: links.tokens(), className: 'nav-tokens' }, 'Tokens'),
    me.admin ? h('a', { href: links.audit(), className: 'nav-audit' }, 'Audit') : null,
    h('span', { className: 'login', title: me.name || '' }, me.login || me.name || ''),
    h('button', { type: 'button', className: 'link', onclick: () => signOut(onSignedOut) }, 'Sign out'),
  );
  return me;
}

async function signOut(onSignedOut) {
  try {
    await api.post(paths.signOut());
  } catch {
    // The session is gone either way for this page; the server ends it when it can be reached.
  }
  setCsrfToken(null);
  me = null;
  onSignedOut();
}

/**
 * The sign-in page, drawn into `view`; `onSignedIn` goes on to the page that was asked for.
 */
export function signInPage(view, onSignedIn, message) {
  me = null;
  setCsrfToken(null);
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

  function finish() {
    if (location.pathname !== '/') history.replaceState(null, '', '/' + (location.hash || '#/'));
    onSignedIn();
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
            const body = await api.post(paths.signInWithPassword(p.name), { username: user.value.trim(), password: pass.value });
            setCsrfToken(body.csrf_token);
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
  api.get(paths.providers()).then(
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
