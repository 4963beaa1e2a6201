// @ts-check
/**
 * The UI's addresses: routing happens on the URL fragment, so the server only serves the page.
 *
 *   #/                                    projects
 *   #/project/<vcs>/<org>/<repo>          a project's pipelines, and the form that triggers one
 *   #/pipeline/<id>                       a pipeline's workflows, each drawn as a graph of jobs
 *   #/pipeline/<id>/workflows/<id>        the same, scrolled to one workflow (commit statuses link here)
 *   #/job/<vcs>/<org>/<repo>/<number>     a job: its steps and logs (followed live), tests, artifacts
 *   #/insights/<vcs>/<org>/<repo>         a project's workflow metrics and duration charts
 *   #/org/<vcs>/<org>                     an organisation: its projects and members with their roles
 *   #/members/<vcs>/<org>/<repo>          a project's members with their roles, and its project tokens
 *   #/envvars/<vcs>/<org>/<repo>          a project's environment variables
 *   #/webhooks/<vcs>/<org>/<repo>         a project's outbound webhooks and their delivery logs
 *   #/notifications/<vcs>/<org>/<repo>    a project's email and Slack notifications and their log
 *   #/contexts/<vcs>/<org>                an organisation's contexts
 *   #/contexts/<vcs>/<org>/<id>           a context's variables and restrictions
 *   #/tokens                              your personal API tokens
 *   #/audit                               the audit log (instance admins)
 */
import { encodeSlug } from './api.js';

export const links = {
  projects: () => '#/',
  /** @param {string} slug */
  project: (slug) => '#/project/' + encodeSlug(slug),
  /** @param {string} id */
  pipeline: (id) => '#/pipeline/' + encodeURIComponent(id),
  /** @param {string} pipelineId @param {string} workflowId */
  workflow: (pipelineId, workflowId) => links.pipeline(pipelineId) + '/workflows/' + encodeURIComponent(workflowId),
  /** @param {string} slug @param {number | string} number */
  job: (slug, number) => '#/job/' + encodeSlug(slug) + '/' + encodeURIComponent(number),
  /** @param {string} slug */
  insights: (slug) => '#/insights/' + encodeSlug(slug),
  /** @param {string} name */
  org: (name) => '#/org/gh/' + encodeURIComponent(name),
  /** @param {string} slug */
  members: (slug) => '#/members/' + encodeSlug(slug),
  /** @param {string} slug */
  envvars: (slug) => '#/envvars/' + encodeSlug(slug),
  /** @param {string} slug */
  webhooks: (slug) => '#/webhooks/' + encodeSlug(slug),
  /** @param {string} slug */
  notifications: (slug) => '#/notifications/' + encodeSlug(slug),
  /** @param {string} name */
  contexts: (name) => '#/contexts/gh/' + encodeURIComponent(name),
  /** @param {string} name @param {string} id */
  context: (name, id) => links.contexts(name) + '/' + encodeURIComponent(id),
  tokens: () => '#/tokens',
  audit: () => '#/audit',
};

/** @param {string} slug */
export function orgOfSlug(slug) {
  return String(slug).split('/')[1] || '';
}

/**
 * The page a fragment names, with its parameters; `{ page: 'not-found' }` for anything else.
 * @param {string} hash
 * @returns {{ page: string, slug?: string, id?: string, workflowId?: string, number?: string, name?: string, org?: string }}
 */
export function parseRoute(hash) {
  const parts = hash
    .replace(/^#\/?/, '')
    .split('/')
    .filter((/** @type {string} */ p) => p !== '')
    .map((/** @type {string} */ p) => {
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
  if (kind === 'insights' && rest.length >= 3) return { page: 'insights', slug: rest.join('/') };
  if (kind === 'org' && rest.length === 2) return { page: 'org', name: rest[1] };
  if (kind === 'members' && rest.length >= 3) return { page: 'members', slug: rest.join('/') };
  if (kind === 'envvars' && rest.length >= 3) return { page: 'envvars', slug: rest.join('/') };
  if (kind === 'webhooks' && rest.length >= 3) return { page: 'webhooks', slug: rest.join('/') };
  if (kind === 'notifications' && rest.length >= 3) return { page: 'notifications', slug: rest.join('/') };
  if (kind === 'contexts' && rest.length === 2) return { page: 'contexts', org: rest[1] };
  if (kind === 'contexts' && rest.length === 3) return { page: 'context', org: rest[1], id: rest[2] };
  if (kind === 'tokens' && rest.length === 0) return { page: 'tokens' };
  if (kind === 'audit' && rest.length === 0) return { page: 'audit' };
  return { page: 'not-found' };
}
