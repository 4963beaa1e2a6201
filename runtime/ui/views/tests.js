/**
 * A job's Tests tab: every stored test result, failures first, each failure's message in a
 * collapsible block. Names and messages come from the build's own files: text nodes only.
 */
import { listTests, SignInRequired } from '../api.js';
import { fill, formatDuration, h, requireSignIn } from '../dom.js';

const TEST_RESULTS = [
  // result from the API, its place in the list, the word in the tab, the status colour
  { result: 'failure', order: 0, word: 'failed', status: 'failed' },
  { result: 'skipped', order: 1, word: 'skipped', status: 'skipped' },
  { result: 'success', order: 2, word: 'passed', status: 'success' },
];
const testResultInfo = (result) => TEST_RESULTS.find((r) => r.result === result) || { result, order: 1, word: String(result), status: 'unknown' };

export function createTestResults(view, tab, panel, slug, number) {
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
        { className: 'test status-' + info.status, dataset: { result: String(t.result).toLowerCase().replace(/[^a-z0-9_-]/g, '') } },
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
        const tests = await listTests(slug, number);
        if (!view.alive) return;
        drawLabel(tests);
        drawTests(tests);
      } catch (err) {
        if (err instanceof SignInRequired) return requireSignIn();
        if (view.alive) fill(panel, h('p', { className: 'log-error' }, 'Could not load the test results: ' + err.message));
      } finally {
        loading = false;
      }
      if (again && view.alive) await this.load();
    },
  };
}
