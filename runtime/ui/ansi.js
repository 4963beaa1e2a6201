/**
 * ANSI escape sequences in build output → segments of plain text with CSS classes.
 *
 * Build output is untrusted. A segment's `text` is raw text: the browser puts it in the page with
 * `textContent`, never as markup. Only SGR colour and weight codes become classes; every other
 * escape sequence and control character is dropped.
 *
 * Output arrives in chunks that may split an escape sequence, so parsing carries a state from one
 * chunk to the next: `parseAnsi(text, state)` returns the segments and the state for the next chunk.
 *
 * Plain JS, loaded by the browser as a script (it sets `window.GyreAnsi`) and by Node with require.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === 'object' && module.exports) module.exports = api;
  else root.GyreAnsi = api;
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  const COLOURS = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];
  // An escape sequence longer than this without its final byte is garbage, not a split sequence.
  const MAX_PENDING = 256;

  /** The state before the first chunk: default colours, nothing pending. */
  function initialState() {
    return { fg: null, bg: null, bold: false, italic: false, underline: false, pending: '' };
  }

  function classesOf(state) {
    const classes = [];
    if (state.fg) classes.push('ansi-' + state.fg);
    if (state.bg) classes.push('ansi-bg-' + state.bg);
    if (state.bold) classes.push('ansi-bold');
    if (state.italic) classes.push('ansi-italic');
    if (state.underline) classes.push('ansi-underline');
    return classes;
  }

  /** Applies the parameters of one SGR sequence (`ESC [ … m`) to a copy of the state. */
  function applySgr(state, params) {
    const next = Object.assign({}, state);
    const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      if (code === 0) Object.assign(next, { fg: null, bg: null, bold: false, italic: false, underline: false });
      else if (code === 1) next.bold = true;
      else if (code === 3) next.italic = true;
      else if (code === 4) next.underline = true;
      else if (code === 22) next.bold = false;
      else if (code === 23) next.italic = false;
      else if (code === 24) next.underline = false;
      else if (code >= 30 && code <= 37) next.fg = COLOURS[code - 30];
      else if (code === 39) next.fg = null;
      else if (code >= 40 && code <= 47) next.bg = COLOURS[code - 40];
      else if (code === 49) next.bg = null;
      else if (code >= 90 && code <= 97) next.fg = 'bright-' + COLOURS[code - 90];
      else if (code >= 100 && code <= 107) next.bg = 'bright-' + COLOURS[code - 100];
      else if (code === 38 || code === 48) {
        // 256-colour and true-colour forms are not rendered; skip their arguments so they are not
        // misread as codes of their own.
        if (codes[i + 1] === 5) i += 2;
        else if (codes[i + 1] === 2) i += 4;
      }
    }
    return next;
  }

  /**
   * Length of the escape sequence at `text[start]` (an ESC), or -1 when the text ends before the
   * sequence does.
   */
  function escapeLength(text, start) {
    if (start + 1 >= text.length) return -1;
    const kind = text[start + 1];
    if (kind === '[') {
      // CSI: parameter bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, one final byte 0x40–0x7E.
      let i = start + 2;
      while (i < text.length) {
        const c = text.charCodeAt(i);
        if (c >= 0x40 && c <= 0x7e) return i - start + 1;
        if (c < 0x20 || c > 0x3f) return i - start; // malformed: drop what was read, keep the rest
        i++;
      }
      return -1;
    }
    if (kind === ']' || kind === 'P' || kind === '_' || kind === '^' || kind === 'X') {
      // OSC, DCS and friends: a string ended by BEL or ESC \.
      for (let i = start + 2; i < text.length; i++) {
        if (text[i] === '\x07') return i - start + 1;
        if (text[i] === '\x1b') {
          if (i + 1 >= text.length) return -1;
          if (text[i + 1] === '\\') return i - start + 2;
        }
      }
      return -1;
    }
    // Two-byte escapes (ESC 7, ESC =, …) and charset selection (ESC ( B).
    if (kind === '(' || kind === ')' || kind === '#') return start + 2 < text.length ? 3 : -1;
    return 2;
  }

  /**
   * Parses one chunk of output.
   * @param {string} text the chunk, as decoded UTF-8
   * @param {object} [state] the state returned for the previous chunk of the same stream
   * @returns {{segments: {text: string, classes: string[]}[], state: object}}
   */
  function parseAnsi(text, state) {
    let current = Object.assign({}, state || initialState());
    const input = current.pending + text;
    current.pending = '';
    const segments = [];
    let buffer = '';

    const flush = () => {
      if (buffer === '') return;
      const classes = classesOf(current);
      const last = segments[segments.length - 1];
      if (last && last.classes.join(' ') === classes.join(' ')) last.text += buffer;
      else segments.push({ text: buffer, classes });
      buffer = '';
    };

    let i = 0;
    while (i < input.length) {
      const ch = input[i];
      if (ch === '\x1b') {
        const length = escapeLength(input, i);
        if (length < 0) {
          if (input.length - i <= MAX_PENDING) current.pending = input.slice(i);
          break;
        }
        const sequence = input.slice(i, i + length);
        if (/^\x1b\[[0-9;:]*m$/.test(sequence)) {
          flush();
          current = applySgr(current, sequence.slice(2, -1));
        }
        i += length;
        continue;
      }
      const code = input.charCodeAt(i);
      // Keep newlines and tabs; drop other control characters (a lone CR included: the log is not
      // a terminal, and a CR would otherwise render as an extra line break).
      if (code === 0x0a || code === 0x09 || (code >= 0x20 && code !== 0x7f)) buffer += ch;
      i++;
    }
    flush();
    return { segments, state: current };
  }

  /** Escapes text for use in HTML markup (for callers that must build markup, such as tests). */
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  }

  /** Segments as HTML markup: every text escaped, classes on spans. */
  function segmentsToHtml(segments) {
    return segments
      .map((s) => (s.classes.length ? '<span class="' + s.classes.join(' ') + '">' + escapeHtml(s.text) + '</span>' : escapeHtml(s.text)))
      .join('');
  }

  return { initialState, parseAnsi, escapeHtml, segmentsToHtml };
});
