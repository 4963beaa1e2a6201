/**
 * What every view builds its page with: elements from data (always as text, never as markup),
 * formatting of times and durations, the breadcrumbs, the flash box, and the form helpers that run
 * an action and say in the API's words what went wrong.
 */
import { SignInRequired } from './api.js';

/**
 * Creates an element. `props` sets properties (className, href, type, title, …), `on*` functions
 * become listeners, `dataset` and `attrs` objects are copied; children are nodes or strings
 * (strings become text nodes), and null/false children are skipped.
 */
export function h(tag, props, ...children) {
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
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  return el;
}

/** Statuses come from the API; make sure one can only ever name a class we expect. */
export function cssToken(text) {
  return String(text).toLowerCase().replace(/[^a-z0-9_-]/g, '');
}

export function statusBadge(status, extraClass) {
  const text = String(status || 'unknown');
  return h('span', { className: 'badge status-' + cssToken(text) + (extraClass ? ' ' + extraClass : '') }, text.replace(/[_-]/g, ' '));
}

export const main = () => document.getElementById('main');

// ---------------------------------------------------------------------------------------------
// Formatting

export function parseTime(value) {
  const t = value ? Date.parse(value) : NaN;
  return Number.isNaN(t) ? null : t;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms) || ms < 0) return '';
  if (ms < 1000) return ms + 'ms';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + 's';
  const m = Math.floor(s / 60);
  if (m < 60) return m + 'm ' + (s % 60) + 's';
  return Math.floor(m / 60) + 'h ' + (m % 60) + 'm';
}

/** Duration between two timestamps; a running thing counts up to now. */
export function spanDuration(startedAt, stoppedAt) {
  const start = parseTime(startedAt);
  if (start === null) return '';
  const stop = parseTime(stoppedAt);
  return formatDuration((stop === null ? Date.now() : stop) - start);
}

export function timeAgo(value) {
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

export function formatTime(value) {
  const t = parseTime(value);
  return t === null ? '—' : new Date(t).toLocaleString();
}

export function shortSha(sha) {
  return sha ? String(sha).slice(0, 7) : '';
}

export function fact(label, ...value) {
  return h('div', { className: 'fact' }, h('dt', null, label), h('dd', null, ...value));
}

// ---------------------------------------------------------------------------------------------
// The frame around a page

export function setCrumbs(...given) {
  const items = given.filter(Boolean);
  const crumbs = document.getElementById('crumbs');
  fill(crumbs);
  items.forEach((item, i) => {
    if (i > 0) crumbs.append(h('span', { className: 'sep', attrs: { 'aria-hidden': 'true' } }, '/'));
    crumbs.append(item.href ? h('a', { href: item.href }, item.text) : h('span', { className: 'here' }, item.text));
  });
  document.title = [...items].reverse().map((i) => i.text).concat('Gyre').join(' · ');
}

export function flash(message) {
  let box = document.getElementById('flash');
  if (!box) {
    box = h('div', { id: 'flash', className: 'flash', attrs: { role: 'alert' } });
    document.body.append(box);
  }
  fill(box, h('span', null, message), h('button', { type: 'button', className: 'link', onclick: () => box.remove() }, 'Dismiss'));
}

export function errorPanel(err) {
  return h('div', { className: 'panel error-panel', attrs: { role: 'alert' } }, h('strong', null, err.status === 404 ? 'Not found' : 'Error'), ' ', err.message);
}

// ---------------------------------------------------------------------------------------------
// Signing in again: app.js says what that is (the sign-in form); views only ask for it.

let signInHandler = () => {};

export function onSignInRequired(handler) {
  signInHandler = handler;
}

export function requireSignIn() {
  signInHandler();
}

// ---------------------------------------------------------------------------------------------
// Forms and buttons

/** The line under a form where what went wrong is said, in the API's words. */
export function problemBox(className) {
  return h('p', { className: 'form-error' + (className ? ' ' + className : ''), attrs: { role: 'alert' } });
}

/**
 * Runs the action of a form or button. A failure is said in `box` (a problemBox) or, without one,
 * in the flash box, as "<what>: <the API's message>"; a lost session shows the sign-in form.
 * Answers whether it worked.
 */
export async function act(box, what, fn) {
  if (box) fill(box);
  try {
    await fn();
    return true;
  } catch (err) {
    if (err instanceof SignInRequired) {
      requireSignIn();
      return false;
    }
    if (box) fill(box, what + ': ' + err.message);
    else flash(what + ': ' + err.message);
    return false;
  }
}

/** A button that asks before it does something that cannot be undone. */
export function deleteButton(className, label, question, onConfirmed) {
  return h(
    'button',
    {
      type: 'button',
      className: 'danger ' + className,
      onclick: () => {
        if (window.confirm(question)) onConfirmed();
      },
    },
    label,
  );
}

/** A button whose action runs once per click: disabled until it ends. */
export function actionButton(props, label, action) {
  const button = h('button', Object.assign({ type: 'button' }, props, {
    onclick: async () => {
      button.disabled = true;
      try {
        await action();
      } finally {
        if (button.isConnected) button.disabled = false;
      }
    },
  }), label);
  return button;
}

export function select(options, value, props) {
  return h('select', props, options.map((o) => (Array.isArray(o) ? h('option', { value: o[0], selected: o[0] === value }, o[1]) : h('option', { value: o, selected: o === value }, o))));
}
