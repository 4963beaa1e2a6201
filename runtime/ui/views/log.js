/**
 * The steps of one parallel run of a job, with their logs. `follow` reads the run's event stream,
 * which replays the job from its first step and then goes on live; `loadFinished` reads the stored
 * steps and fetches a step's output when it is opened.
 *
 * A log is kept as lines (each a span holding its text and its newline), so a search can mark
 * what matches in each line and hide the lines that do not. Build output is text: ANSI colours
 * become classes (ansi.js), everything else is a text node.
 */
import '../ansi.js';
import { listSteps, paths, SignInRequired, stepOutput } from '../api.js';
import { cssToken, fill, flash, formatDuration, h, requireSignIn, spanDuration } from '../dom.js';
import { POLL_MS } from '../view.js';

const Ansi = self.GyreAnsi;

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** What to look for in the logs: a case-insensitive text, and whether other lines are hidden. */
function matcher(query) {
  return query ? new RegExp(escapeRegExp(query), 'gi') : null;
}

/** [start, end) ranges of the matches of `pattern` in `text`. */
function rangesOf(pattern, text) {
  const ranges = [];
  pattern.lastIndex = 0;
  for (let m = pattern.exec(text); m; m = pattern.exec(text)) {
    ranges.push([m.index, m.index + m[0].length]);
    if (m[0].length === 0) pattern.lastIndex++;
  }
  return ranges;
}

export function createStepList(view, box, options) {
  const { slug, number, node, jobName } = options;
  const steps = new Map(); // step index → entry
  let source = null;
  let retry = null;
  let search = { pattern: null, onlyMatching: false };

  const list = {
    following: false,
    dispose() {
      if (source) view.close(source);
      source = null;
      list.following = false;
      clearTimeout(retry);
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
            for (const s of await listSteps(slug, number)) if (s.node_index === node) upsert(s, false);
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
      const all = await listSteps(slug, number);
      if (!view.alive) return;
      const mine = all.filter((s) => s.node_index === undefined || s.node_index === node);
      fill(box);
      if (!mine.length) box.append(h('p', { className: 'muted' }, 'This job ran no steps.'));
      const many = mine.length > 8;
      for (const s of mine) {
        const entry = upsert(s, false);
        if (!many || s.status !== 'success') entry.details.open = true;
      }
    },
    /** The number of lines the current search matches. */
    matchCount() {
      let count = 0;
      for (const entry of steps.values()) for (const line of entry.lines) if (line.matches) count++;
      return count;
    },
    /**
     * Marks the lines that hold `query` (any case) in every step, loading the output of steps not
     * opened yet, and opens the steps that have a match; `onlyMatching` hides every other line.
     * Answers the number of matching lines.
     */
    async search(query, onlyMatching) {
      search = { pattern: matcher(query), onlyMatching: Boolean(onlyMatching) };
      if (search.pattern) await Promise.all([...steps.values()].map((entry) => load(entry)));
      if (!view.alive) return 0;
      let count = 0;
      for (const entry of steps.values()) {
        let inStep = 0;
        for (const line of entry.lines) if (renderLine(line)) inStep++;
        entry.details.classList.toggle('has-matches', inStep > 0);
        if (inStep > 0) entry.details.open = true;
        count += inStep;
      }
      return count;
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
      // The raw output as the build wrote it (colour codes and all), as a file.
      const raw = h('a', {
        className: 'raw-log',
        href: paths.output(slug, number, node, step.index),
        download: cssToken(jobName || 'job') + '-' + number + '-step-' + step.index + (node ? '-node-' + node : '') + '.log',
      }, 'Download raw');
      const details = h('details', { className: 'step', dataset: { index: step.index } },
        h('summary', null, icon, name, status, h('span', { className: 'spacer' }), meta),
        h('div', { className: 'step-tools' }, raw),
        log);
      entry = { details, name, status, meta, log, ansi: Ansi.initialState(), loaded: live, loading: null, info: {}, lines: [], open: null };
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
    entry.details.className = 'step status-' + cssToken(info.status) + (entry.details.classList.contains('has-matches') ? ' has-matches' : '');
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

  /** Draws a line's segments, marking the matches of the search; answers whether it is shown. */
  function renderLine(line) {
    const pattern = search.pattern;
    const ranges = pattern ? rangesOf(pattern, line.text) : [];
    const nodes = [];
    let offset = 0;
    for (const segment of line.segments) {
      const start = offset;
      const end = offset + segment.text.length;
      offset = end;
      const pieces = [];
      let at = start;
      for (const [from, to] of ranges) {
        if (to <= at || from >= end) continue;
        if (from > at) pieces.push(segment.text.slice(at - start, from - start));
        const until = Math.min(to, end);
        pieces.push(h('mark', { className: 'log-match' }, segment.text.slice(Math.max(from, at) - start, until - start)));
        at = until;
      }
      if (at < end) pieces.push(segment.text.slice(at - start));
      nodes.push(segment.classes.length ? h('span', { className: segment.classes.join(' ') }, pieces) : pieces);
    }
    fill(line.el, nodes, line.closed ? '\n' : '');
    const matches = ranges.length > 0;
    line.matches = matches;
    line.el.classList.toggle('match', matches);
    line.el.hidden = Boolean(pattern) && search.onlyMatching && !matches;
    return matches;
  }

  function newLine(entry) {
    const line = { el: h('span', { className: 'log-line' }), segments: [], text: '', closed: false };
    entry.lines.push(line);
    entry.log.append(line.el);
    return line;
  }

  function writeLog(entry, text) {
    const atBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 32;
    const parsed = Ansi.parseAnsi(text, entry.ansi);
    entry.ansi = parsed.state;
    const touched = new Set();
    for (const segment of parsed.segments) {
      const pieces = segment.text.split('\n');
      pieces.forEach((piece, i) => {
        if (piece) {
          if (!entry.open) entry.open = newLine(entry);
          entry.open.segments.push({ text: piece, classes: segment.classes });
          entry.open.text += piece;
          touched.add(entry.open);
        }
        if (i < pieces.length - 1) {
          if (!entry.open) entry.open = newLine(entry);
          entry.open.closed = true;
          touched.add(entry.open);
          entry.open = null;
        }
      });
    }
    let changed = false;
    for (const line of touched) {
      renderLine(line);
      changed = true;
    }
    if (changed && search.pattern && options.onLinesChanged) options.onLinesChanged();
    if (atBottom && list.following) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  /** Fetches a finished step's output once (a search and a click may ask for it together). */
  function load(entry) {
    if (entry.loaded) return entry.loading || Promise.resolve();
    entry.loaded = true;
    entry.loading = (async () => {
      fill(entry.log, h('span', { className: 'muted' }, 'Loading output…'));
      try {
        const text = await stepOutput(slug, number, node, entry.info.index);
        if (!view.alive) return;
        fill(entry.log);
        entry.lines = [];
        entry.open = null;
        entry.ansi = Ansi.initialState();
        if (text === '') entry.log.append(h('span', { className: 'muted' }, '(no output)'));
        else writeLog(entry, text);
      } catch (err) {
        entry.loaded = false;
        if (err instanceof SignInRequired) return requireSignIn();
        fill(entry.log, h('span', { className: 'log-error' }, 'Could not load the output: ' + err.message));
      } finally {
        entry.loading = null;
      }
    })();
    return entry.loading;
  }

  return list;
}
