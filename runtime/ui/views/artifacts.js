/**
 * A job's Artifacts tab: the files its store_artifacts steps kept, each a link that downloads it.
 * Paths come from the build: text only. A download URL carries its own permission (signed by the
 * server, on its public address) and is linked only if it is http(s).
 */
import { listArtifacts, SignInRequired } from '../api.js';
import { fill, h, requireSignIn } from '../dom.js';

/** The URL to link, or null when it is not http(s). */
export function safeDownloadUrl(url) {
  let parsed;
  try {
    parsed = new URL(String(url), location.href);
  } catch {
    return null;
  }
  return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
}

export function createArtifacts(view, tab, panel, slug, number) {
  let loading = false;
  let again = false;
  fill(tab, 'Artifacts');
  fill(panel, h('p', { className: 'muted' }, 'Loading artifacts…'));

  function draw(artifacts) {
    fill(tab, 'Artifacts', artifacts.length ? [' ', h('span', { className: 'tab-count artifact-count' }, String(artifacts.length))] : null);
    if (!artifacts.length) {
      fill(panel, h('p', { className: 'muted no-artifacts' }, 'This job stored no artifacts (a store_artifacts step keeps files).'));
      return;
    }
    const many = artifacts.some((a) => a.node_index > 0);
    const sorted = [...artifacts].sort((a, b) => a.node_index - b.node_index || String(a.path).localeCompare(String(b.path)));
    fill(
      panel,
      h(
        'ul',
        { className: 'artifact-list' },
        sorted.map((a) => {
          const url = safeDownloadUrl(a.url);
          const name = String(a.path).split('/').pop() || 'artifact';
          return h(
            'li',
            { className: 'artifact', dataset: { path: String(a.path) } },
            url ? h('a', { className: 'artifact-link mono', href: url, download: name, rel: 'noopener noreferrer' }, String(a.path)) : h('span', { className: 'mono' }, String(a.path)),
            many ? h('span', { className: 'muted' }, ' node ' + a.node_index) : null,
          );
        }),
      ),
    );
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
        const artifacts = await listArtifacts(slug, number);
        if (view.alive) draw(artifacts);
      } catch (err) {
        if (err instanceof SignInRequired) return requireSignIn();
        if (view.alive) fill(panel, h('p', { className: 'log-error' }, 'Could not load the artifacts: ' + err.message));
      } finally {
        loading = false;
      }
      if (again && view.alive) await this.load();
    },
  };
}
