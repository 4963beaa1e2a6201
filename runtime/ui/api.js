// @ts-check
/**
 * The web UI's one client of Gyre's REST API (CircleCI API v2 shapes). Every view reads and
 * writes through it: paths are built here (every segment encoded), answers are typed here, and
 * failures become an ApiError (with the HTTP status and the API's own message) or, on 401,
 * SignInRequired.
 *
 * The session cookie is HttpOnly: this module never sees it. Every write carries the session's
 * CSRF token in X-Gyre-CSRF, which the server hands out with the session (GET /auth/session, or
 * the answer to a sign-in).
 *
 * Types are JSDoc, checked by TypeScript (test/ui/typecheck.test.ts); the browser loads the file
 * as it is, a native ES module.
 */

const CSRF_HEADER = 'X-Gyre-CSRF';

/**
 * @template T
 * @typedef {{ items: T[], next_page_token: string | null }} Page
 */

/**
 * @typedef {object} User
 * @property {string} id
 * @property {string} login
 * @property {string} [name]
 * @property {boolean} [admin]
 */

/**
 * @typedef {object} Project
 * @property {string} id
 * @property {string} slug
 * @property {string} name
 * @property {string} [organization_name]
 * @property {string} [organization_id]
 * @property {{ vcs_url?: string, default_branch?: string, provider?: string }} [vcs_info]
 */

/**
 * @typedef {object} PipelineVcs
 * @property {string} [revision]
 * @property {string} [branch]
 * @property {string} [tag]
 * @property {{ subject?: string, body?: string }} [commit]
 */

/**
 * @typedef {object} Pipeline
 * @property {string} id
 * @property {number} number
 * @property {string} state created, errored, setup-pending, setup or pending
 * @property {string} project_slug
 * @property {string} created_at
 * @property {{ type: string, message: string }[]} [errors]
 * @property {{ type?: string, received_at?: string, actor?: { login?: string } }} [trigger]
 * @property {Record<string, string | number | boolean>} [trigger_parameters]
 * @property {PipelineVcs} [vcs]
 */

/**
 * @typedef {object} Workflow
 * @property {string} id
 * @property {string} name
 * @property {string} status
 * @property {string} pipeline_id
 * @property {number} pipeline_number
 * @property {string} project_slug
 * @property {string} created_at
 * @property {string | null} [stopped_at]
 * @property {string} [started_by] the user who started it, or the system actor (00000000-0000-0000-0000-000000000000)
 * @property {string} [tag]
 * @property {string} [rerun_of] Gyre's: the workflow this one reran
 */

/**
 * @typedef {object} WorkflowJob
 * @property {string} id
 * @property {string} name
 * @property {string} status
 * @property {'build' | 'approval'} type
 * @property {number} [job_number]
 * @property {string[]} dependencies
 * @property {string | null} [started_at]
 * @property {string | null} [stopped_at]
 * @property {string} [project_slug]
 * @property {string} [approval_request_id]
 */

/**
 * @typedef {object} JobDetails
 * @property {string} name
 * @property {number} number
 * @property {string} status
 * @property {string | null} [started_at]
 * @property {string | null} [stopped_at]
 * @property {number | null} [duration]
 * @property {number} [parallelism]
 * @property {{ index: number, status: string }[]} [parallel_runs]
 * @property {{ id: string }} [pipeline]
 * @property {{ id?: string, name?: string }} [latest_workflow]
 * @property {{ type?: string }} [executor]
 */

/**
 * @typedef {object} Step
 * @property {number} index
 * @property {number} [node_index]
 * @property {string} [name]
 * @property {string} [type]
 * @property {string} [status]
 * @property {string | null} [started_at]
 * @property {string | null} [stopped_at]
 * @property {number | null} [duration_ms]
 * @property {number | null} [exit_code]
 */

/**
 * @typedef {object} TestResult
 * @property {string} result success, failure or skipped
 * @property {string} name
 * @property {string} classname
 * @property {string} [file]
 * @property {string} [message]
 * @property {number} run_time seconds
 */

/**
 * @typedef {object} Artifact
 * @property {string} path
 * @property {number} node_index
 * @property {string} url a download URL that carries its own permission
 */

/**
 * CircleCI's workflow summary metrics (GET /insights/{project-slug}/workflows): durations in seconds.
 * @typedef {object} WorkflowMetrics
 * @property {string} name
 * @property {string} window_start
 * @property {string} window_end
 * @property {{
 *   total_runs: number, successful_runs: number, failed_runs: number, success_rate: number,
 *   throughput: number, mttr: number | null, total_recoveries: number | null, total_credits_used: number | null,
 *   duration_metrics: { min: number | null, mean: number | null, median: number | null, p95: number | null, max: number | null, standard_deviation: number | null }
 * }} metrics
 */

/**
 * One run in CircleCI's recent workflow runs (GET /insights/{project-slug}/workflows/{name}).
 * @typedef {object} WorkflowRun
 * @property {string} id
 * @property {string} branch
 * @property {number | null} duration seconds
 * @property {string} created_at
 * @property {string | null} stopped_at
 * @property {string | null} status
 */

/** @typedef {'workflow-completed' | 'job-completed'} WebhookEvent */

/**
 * CircleCI's outbound webhook (GET /webhook?scope-id=…&scope-type=project). `signing-secret` is
 * masked: `xxxx`, and the last four characters of a secret of 16 or more.
 * @typedef {{
 *   id: string, scope: { id: string, type: 'project' }, name: string, events: WebhookEvent[], url: string,
 *   'verify-tls': boolean, 'signing-secret': string, 'created-at': string, 'updated-at': string
 * }} Webhook
 */

/**
 * What creates a webhook (POST /webhook).
 * @typedef {{
 *   name: string, events: WebhookEvent[], url: string, 'verify-tls': boolean, 'signing-secret': string,
 *   scope: { id: string, type: 'project' }
 * }} WebhookInput
 */

/**
 * One attempt of a delivery and the receiver's answer.
 * @typedef {object} DeliveryAnswer
 * @property {number} attempt
 * @property {string} at
 * @property {number} duration_ms
 * @property {number | null} status_code HTTP status (for email, the SMTP reply code)
 * @property {string | null} response the first characters of the receiver's answer
 * @property {string | null} error
 */

/**
 * One delivery in a delivery log (Gyre's own: GET /webhook/{id}/deliveries, GET /project/{slug}/notifications/deliveries).
 * @typedef {object} Delivery
 * @property {string} id
 * @property {'webhook' | 'email' | 'slack'} channel
 * @property {string} event
 * @property {string} subject_id the workflow or job the event is about
 * @property {'pending' | 'delivered' | 'skipped' | 'failed'} state
 * @property {number} attempts
 * @property {string | null} next_attempt_at
 * @property {string | null} last_error
 * @property {string} created_at
 * @property {string | null} finished_at
 * @property {DeliveryAnswer[]} answers
 */

/**
 * A project's email and Slack notifications (Gyre's own: GET|PUT /project/{slug}/notifications).
 * @typedef {object} NotificationSettings
 * @property {string[]} emails
 * @property {boolean} on_failed
 * @property {boolean} on_fixed
 * @property {string | null} slack_webhook_url masked to its host (`xxxx@hooks.slack.com`), or null
 */

/**
 * A change to them: a field left out keeps its value; `slack_webhook_url: null` removes the URL.
 * @typedef {object} NotificationSettingsInput
 * @property {string[]} [emails]
 * @property {boolean} [on_failed]
 * @property {boolean} [on_fixed]
 * @property {string | null} [slack_webhook_url]
 */

/** @typedef {'last-24-hours' | 'last-7-days' | 'last-30-days' | 'last-60-days' | 'last-90-days'} ReportingWindow */

/** @typedef {string | number | boolean} ParameterValue */

export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status (0: the server could not be reached)
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Raised on 401: the page turns into the sign-in form. */
export class SignInRequired extends Error {}

/** @type {string | null} */
let csrfToken = null;

/** @param {string | null} token the session's CSRF token, or null once signed out */
export function setCsrfToken(token) {
  csrfToken = token;
}

/** @param {unknown} slug */
export function encodeSlug(slug) {
  return String(slug).split('/').map(encodeURIComponent).join('/');
}

/**
 * @param {Record<string, string | number | boolean | null | undefined>} params
 * @returns {string} `?a=1&b=2` of the params that are set, or ''
 */
function query(params) {
  const parts = [];
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    parts.push(encodeURIComponent(name) + '=' + encodeURIComponent(String(value)));
  }
  return parts.length ? '?' + parts.join('&') : '';
}

/** @param {Response} res @param {string} fallback */
async function messageOf(res, fallback) {
  try {
    const body = await res.json();
    if (body && typeof body.message === 'string') return body.message;
  } catch {
    // not JSON: keep the fallback
  }
  return fallback;
}

/**
 * @param {string} method
 * @param {string} path
 * @param {{ body?: unknown, accept?: string }} [options]
 */
async function request(method, path, options = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: options.accept || 'application/json' };
  /** @type {RequestInit} */
  const init = { method, credentials: 'same-origin', headers };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers[CSRF_HEADER] = csrfToken;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(options.body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'Cannot reach the Gyre server (' + (err instanceof Error ? err.message : String(err)) + ')');
  }
  if (res.status === 401) throw new SignInRequired(await messageOf(res, 'Sign in required.'));
  if (!res.ok) throw new ApiError(res.status, await messageOf(res, res.status + ' ' + res.statusText));
  return res;
}

/** The API's verbs; answers are parsed JSON (`any`: the typed functions below say what they are). */
export const api = {
  /** @param {string} path @returns {Promise<any>} */
  async get(path) {
    return (await request('GET', path)).json();
  },
  /** @param {string} path @returns {Promise<string>} */
  async text(path) {
    return (await request('GET', path, { accept: 'text/plain' })).text();
  },
  /** @param {string} path @param {unknown} [body] @returns {Promise<any>} */
  async post(path, body) {
    const res = await request('POST', path, { body: body === undefined ? {} : body });
    return res.status === 204 ? {} : res.json();
  },
  /** @param {string} path @param {unknown} body @returns {Promise<any>} */
  async put(path, body) {
    return (await request('PUT', path, { body })).json();
  },
  /** @param {string} path @returns {Promise<any>} */
  async del(path) {
    return (await request('DELETE', path)).json();
  },
};

const V2 = '/api/v2';
/** @param {string} slug */
const project = (slug) => V2 + '/project/' + encodeSlug(slug);
/** @param {string} slug @param {number | string} number */
const job = (slug, number) => project(slug) + '/job/' + encodeURIComponent(number);

/** Every path the UI calls, each segment encoded. */
export const paths = {
  session: () => '/auth/session',
  providers: () => '/auth/providers',
  signInWithToken: () => '/auth/token',
  /** @param {string} provider */
  signInWithPassword: (provider) => '/auth/' + encodeURIComponent(provider),
  signOut: () => '/auth/sign-out',
  me: () => V2 + '/me',
  projects: () => V2 + '/projects',
  project,
  /** @param {string} slug @param {string | null} [pageToken] */
  pipelines: (slug, pageToken) => project(slug) + '/pipeline' + query({ 'page-token': pageToken }),
  /** @param {string} id */
  pipeline: (id) => V2 + '/pipeline/' + encodeURIComponent(id),
  /** @param {string} pipelineId */
  workflows: (pipelineId) => V2 + '/pipeline/' + encodeURIComponent(pipelineId) + '/workflow',
  /** @param {string} id */
  workflow: (id) => V2 + '/workflow/' + encodeURIComponent(id),
  /** @param {string} workflowId */
  jobs: (workflowId) => paths.workflow(workflowId) + '/job',
  /** @param {string} workflowId */
  cancelWorkflow: (workflowId) => paths.workflow(workflowId) + '/cancel',
  /** @param {string} workflowId */
  rerunWorkflow: (workflowId) => paths.workflow(workflowId) + '/rerun',
  /** @param {string} workflowId @param {string} requestId */
  approve: (workflowId, requestId) => paths.workflow(workflowId) + '/approve/' + encodeURIComponent(requestId),
  job,
  /** @param {string} slug @param {number | string} number */
  cancelJob: (slug, number) => job(slug, number) + '/cancel',
  /** @param {string} slug @param {number | string} number */
  steps: (slug, number) => job(slug, number) + '/steps',
  /** The raw text of one step's output: the log as the build wrote it. @param {string} slug @param {number | string} number @param {number} node @param {number} step */
  output: (slug, number, node, step) => job(slug, number) + '/output' + query({ node_index: node, step }),
  /** @param {string} slug @param {number | string} number @param {number} node */
  stream: (slug, number, node) => job(slug, number) + '/output/stream' + query({ node_index: node }),
  /** @param {string} slug @param {number | string} number */
  tests: (slug, number) => project(slug) + '/' + encodeURIComponent(number) + '/tests',
  /** @param {string} slug @param {number | string} number */
  artifacts: (slug, number) => project(slug) + '/' + encodeURIComponent(number) + '/artifacts',
  /** @param {string} slug @param {{ window?: ReportingWindow, branch?: string, allBranches?: boolean }} [options] */
  insightsWorkflows: (slug, options = {}) =>
    V2 + '/insights/' + encodeSlug(slug) + '/workflows' + query({ 'reporting-window': options.window, branch: options.allBranches ? undefined : options.branch, 'all-branches': options.allBranches ? true : undefined }),
  /** @param {string} slug @param {string} name @param {{ branch?: string, allBranches?: boolean, startDate?: string }} [options] */
  insightsWorkflowRuns: (slug, name, options = {}) =>
    V2 + '/insights/' + encodeSlug(slug) + '/workflows/' + encodeURIComponent(name) + query({ branch: options.allBranches ? undefined : options.branch, 'all-branches': options.allBranches ? true : undefined, 'start-date': options.startDate }),
  orgs: () => V2 + '/organizations',
  /** @param {string} name */
  org: (name) => V2 + '/organization/gh/' + encodeURIComponent(name),
  /** @param {string} name */
  orgMembers: (name) => paths.org(name) + '/members',
  /** @param {string} name @param {string} login */
  orgMember: (name, login) => paths.orgMembers(name) + '/' + encodeURIComponent(login),
  /** @param {string} slug */
  projectMembers: (slug) => project(slug) + '/members',
  /** @param {string} slug @param {string} login */
  projectMember: (slug, login) => paths.projectMembers(slug) + '/' + encodeURIComponent(login),
  /** @param {string} slug */
  projectTokens: (slug) => project(slug) + '/tokens',
  /** @param {string} slug @param {string} id */
  projectToken: (slug, id) => paths.projectTokens(slug) + '/' + encodeURIComponent(id),
  myTokens: () => V2 + '/me/tokens',
  /** @param {string} id */
  myToken: (id) => paths.myTokens() + '/' + encodeURIComponent(id),
  /** @param {string} [since] @param {string | null} [pageToken] */
  audit: (since, pageToken) => V2 + '/audit' + query({ limit: 100, since, 'page-token': pageToken }),
  /** @param {string} slug */
  envvars: (slug) => project(slug) + '/envvar',
  /** @param {string} slug @param {string} name */
  envvar: (slug, name) => paths.envvars(slug) + '/' + encodeURIComponent(name),
  /** @param {string} org */
  contexts: (org) => V2 + '/context' + query({ 'owner-slug': 'gh/' + org }),
  newContext: () => V2 + '/context',
  /** @param {string} id */
  context: (id) => V2 + '/context/' + encodeURIComponent(id),
  /** @param {string} id */
  contextVariables: (id) => paths.context(id) + '/environment-variable',
  /** @param {string} id @param {string} name */
  contextVariable: (id, name) => paths.contextVariables(id) + '/' + encodeURIComponent(name),
  /** @param {string} id */
  restrictions: (id) => paths.context(id) + '/restrictions',
  /** @param {string} id @param {string} restrictionId */
  restriction: (id, restrictionId) => paths.restrictions(id) + '/' + encodeURIComponent(restrictionId),
  /** @param {string} projectId */
  webhooks: (projectId) => V2 + '/webhook' + query({ 'scope-id': projectId, 'scope-type': 'project' }),
  newWebhook: () => V2 + '/webhook',
  /** @param {string} id */
  webhook: (id) => V2 + '/webhook/' + encodeURIComponent(id),
  /** @param {string} id */
  webhookDeliveries: (id) => paths.webhook(id) + '/deliveries',
  /** @param {string} slug */
  notifications: (slug) => project(slug) + '/notifications',
  /** @param {string} slug */
  notificationDeliveries: (slug) => paths.notifications(slug) + '/deliveries',
};

/**
 * Every page of a paged list (at most 50 pages).
 * @param {string} path
 * @returns {Promise<any[]>}
 */
export async function getAll(path) {
  const items = [];
  /** @type {string | null} */
  let token = null;
  for (let page = 0; page < 50; page++) {
    /** @type {Page<unknown>} */
    const body = await api.get(path + (token ? (path.includes('?') ? '&' : '?') + 'page-token=' + encodeURIComponent(token) : ''));
    items.push(...(body.items || []));
    token = body.next_page_token;
    if (!token) break;
  }
  return items;
}

// ---------------------------------------------------------------------------------------------
// Typed calls

/** @returns {Promise<User>} */
export const getMe = () => api.get(paths.me());
/** @returns {Promise<Project[]>} */
export const listProjects = () => getAll(paths.projects());
/** @param {string} slug @returns {Promise<Project>} */
export const getProject = (slug) => api.get(paths.project(slug));
/** @param {string} slug @param {string | null} [pageToken] @returns {Promise<Page<Pipeline>>} */
export const listPipelines = (slug, pageToken) => api.get(paths.pipelines(slug, pageToken));
/** @param {string} id @returns {Promise<Pipeline>} */
export const getPipeline = (id) => api.get(paths.pipeline(id));
/** @param {string} pipelineId @returns {Promise<Workflow[]>} */
export const listWorkflows = (pipelineId) => getAll(paths.workflows(pipelineId));
/** @param {string} workflowId @returns {Promise<WorkflowJob[]>} */
export const listWorkflowJobs = (workflowId) => getAll(paths.jobs(workflowId));
/** @param {string} slug @param {number | string} number @returns {Promise<JobDetails>} */
export const getJob = (slug, number) => api.get(paths.job(slug, number));
/** @param {string} slug @param {number | string} number @returns {Promise<Step[]>} */
export const listSteps = async (slug, number) => (await api.get(paths.steps(slug, number))).items || [];
/** @param {string} slug @param {number | string} number @param {number} node @param {number} step */
export const stepOutput = (slug, number, node, step) => api.text(paths.output(slug, number, node, step));
/** @param {string} slug @param {number | string} number @returns {Promise<TestResult[]>} */
export const listTests = (slug, number) => getAll(paths.tests(slug, number));
/** @param {string} slug @param {number | string} number @returns {Promise<Artifact[]>} */
export const listArtifacts = (slug, number) => getAll(paths.artifacts(slug, number));

/**
 * Starts a pipeline (POST /project/{slug}/pipeline): on a branch or a tag, with pipeline parameters.
 * @param {string} slug
 * @param {{ branch?: string, tag?: string, parameters?: Record<string, ParameterValue> }} input
 * @returns {Promise<{ id: string, number: number, state: string, created_at: string }>}
 */
export const triggerPipeline = (slug, input) => api.post(paths.pipelines(slug), input);

/**
 * Reruns a finished workflow, whole or from its failed jobs, as a new workflow of the same pipeline.
 * @param {string} workflowId
 * @param {{ from_failed?: boolean, jobs?: string[] }} [input]
 * @returns {Promise<{ workflow_id: string }>}
 */
export const rerunWorkflow = (workflowId, input = {}) => api.post(paths.rerunWorkflow(workflowId), input);
/** @param {string} workflowId @returns {Promise<{ message: string }>} */
export const cancelWorkflow = (workflowId) => api.post(paths.cancelWorkflow(workflowId));
/** @param {string} workflowId @param {string} requestId @returns {Promise<{ message: string }>} */
export const approveJob = (workflowId, requestId) => api.post(paths.approve(workflowId, requestId));
/** @param {string} slug @param {number | string} number @returns {Promise<{ message: string }>} */
export const cancelJob = (slug, number) => api.post(paths.cancelJob(slug, number));

/**
 * @param {string} slug
 * @param {{ window?: ReportingWindow, branch?: string, allBranches?: boolean }} [options]
 * @returns {Promise<WorkflowMetrics[]>}
 */
export const insightsWorkflows = (slug, options) => getAll(paths.insightsWorkflows(slug, options));

/**
 * The recent runs of one workflow (one page: the newest first).
 * @param {string} slug
 * @param {string} name
 * @param {{ branch?: string, allBranches?: boolean, startDate?: string }} [options]
 * @returns {Promise<WorkflowRun[]>}
 */
export const insightsWorkflowRuns = async (slug, name, options) => (await api.get(paths.insightsWorkflowRuns(slug, name, options))).items || [];

/** A project's outbound webhooks (at most 5). @param {string} projectId @returns {Promise<Webhook[]>} */
export const listWebhooks = (projectId) => getAll(paths.webhooks(projectId));
/** @param {WebhookInput} input @returns {Promise<Webhook>} */
export const createWebhook = (input) => api.post(paths.newWebhook(), input);
/**
 * Changes a webhook (PUT /webhook/{id}): a field left out keeps its value, so a signing secret
 * left out is kept.
 * @param {string} id
 * @param {Partial<Omit<WebhookInput, 'scope'>>} input
 * @returns {Promise<Webhook>}
 */
export const updateWebhook = (id, input) => api.put(paths.webhook(id), input);
/** @param {string} id @returns {Promise<{ message: string }>} */
export const deleteWebhook = (id) => api.del(paths.webhook(id));
/** A webhook's newest deliveries (one page of 50). @param {string} id @returns {Promise<Page<Delivery>>} */
export const listWebhookDeliveries = (id) => api.get(paths.webhookDeliveries(id));
/** @param {string} slug @returns {Promise<NotificationSettings>} */
export const getNotificationSettings = (slug) => api.get(paths.notifications(slug));
/** @param {string} slug @param {NotificationSettingsInput} input @returns {Promise<NotificationSettings>} */
export const putNotificationSettings = (slug, input) => api.put(paths.notifications(slug), input);
/** A project's newest email and Slack deliveries (one page of 50). @param {string} slug @returns {Promise<Page<Delivery>>} */
export const listNotificationDeliveries = (slug) => api.get(paths.notificationDeliveries(slug));
