import type { TriggerType } from '../domain/model';

/**
 * What happened that started a pipeline, as CircleCI's pipeline values for GitHub App pipelines
 * say it (its "Pipeline values" reference), stored with the pipeline (`pipelines.event`) and read
 * by the config compiler (`<< pipeline.event.name >>`, `when:`) and by contexts' expression
 * restrictions:
 *
 * - `pipeline.event.name`: `push` (a branch or tag pushed; a tag's `create` delivery too, since
 *   either may be the one that starts its pipeline), `pull_request`, `api` (the API, or the
 *   example pipeline Gyre starts itself), `schedule` (a v2 schedule or a legacy
 *   `triggers: schedule`; CircleCI documents no value for these, Gyre says `schedule`);
 * - `pipeline.event.action`: the GitHub event's `action` (`opened`, `synchronize`, `reopened`),
 *   else the same as the name;
 * - `pipeline.event.context.github.pr_url`: the pull request the pipeline builds, if any (a push
 *   to a branch with an open pull request has one too), as `CIRCLE_PULL_REQUEST`;
 * - `pipeline.event.github.pull_request.{number,title,draft,base.ref,head.ref,base.sha,head.sha}`
 *   for a `pull_request` event only.
 *
 * Every other `pipeline.event.*` value is the empty string. A rerun is a new workflow of the same
 * pipeline: its values are the pipeline's.
 */
export interface PipelineEvent {
  readonly name: string;
  readonly action: string;
  /** The web page of the pull request the pipeline is associated with, if any. */
  readonly prUrl?: string;
  /** The pull request of a `pull_request` event, as GitHub described it. */
  readonly pullRequest?: EventPullRequest;
}

export interface EventPullRequest {
  readonly number: number;
  readonly title: string;
  readonly draft: boolean;
  readonly baseRef: string;
  readonly headRef: string;
  readonly baseSha: string;
  readonly headSha: string;
}

/** A pipeline value as the compiler and expressions use it. */
export type EventValue = string | number | boolean;

/** Longest text kept from an event (a title or ref); GitHub's own limits are lower. */
const MAX_TEXT = 1024;
const clip = (value: unknown): string => (typeof value === 'string' ? value.slice(0, MAX_TEXT) : '');

/** The event of a trigger that names none: what its type says happened. */
export function eventOfTrigger(type: TriggerType | string): PipelineEvent {
  switch (type) {
    case 'webhook':
      return { name: 'push', action: 'push' };
    case 'schedule':
    case 'scheduled_pipeline':
      return { name: 'schedule', action: 'schedule' };
    default:
      return { name: 'api', action: 'api' };
  }
}

/** A `pull_request` event as it is stored: its fields bounded, so a hostile title costs nothing. */
export function pullRequestEvent(action: string, pr: { number: number; title?: unknown; draft?: unknown; html_url?: unknown; base: { ref: string; sha: string }; head: { ref: string; sha: string } }): PipelineEvent {
  return {
    name: 'pull_request',
    action: clip(action),
    ...(typeof pr.html_url === 'string' ? { prUrl: clip(pr.html_url) } : {}),
    pullRequest: {
      number: pr.number,
      title: clip(pr.title),
      draft: pr.draft === true,
      baseRef: clip(pr.base.ref),
      headRef: clip(pr.head.ref),
      baseSha: clip(pr.base.sha),
      headSha: clip(pr.head.sha),
    },
  };
}

/**
 * The `pipeline.event.*` values of a pipeline, by full name, from its stored event (null for
 * pipelines made before events were stored: read from the trigger type).
 */
export function eventValues(stored: unknown, triggerType: string): Record<string, EventValue> {
  const event = isEvent(stored) ? stored : eventOfTrigger(triggerType);
  const values: Record<string, EventValue> = {
    'pipeline.event.name': event.name,
    'pipeline.event.action': event.action,
    'pipeline.event.context.github.pr_url': clip(event.prUrl),
  };
  const pr = event.pullRequest;
  if (pr && typeof pr === 'object') {
    values['pipeline.event.github.pull_request.number'] = Number.isInteger(pr.number) ? pr.number : 0;
    values['pipeline.event.github.pull_request.title'] = clip(pr.title);
    values['pipeline.event.github.pull_request.draft'] = pr.draft === true;
    values['pipeline.event.github.pull_request.base.ref'] = clip(pr.baseRef);
    values['pipeline.event.github.pull_request.head.ref'] = clip(pr.headRef);
    values['pipeline.event.github.pull_request.base.sha'] = clip(pr.baseSha);
    values['pipeline.event.github.pull_request.head.sha'] = clip(pr.headSha);
  }
  return values;
}

/**
 * The pipeline values a context's expression restriction reads (runtime/secrets/expressions.ts),
 * from the pipeline's row: its number, `pipeline.trigger_source` and the `pipeline.event.*` values.
 * The ref's values (`pipeline.git.*`) are added where the restriction is decided.
 */
export function expressionValuesOf(row: { readonly number: number; readonly trigger_type: string; readonly event: unknown }): Record<string, EventValue> {
  return { 'pipeline.number': row.number, 'pipeline.trigger_source': row.trigger_type, ...eventValues(row.event, row.trigger_type) };
}

function isEvent(value: unknown): value is PipelineEvent {
  if (!value || typeof value !== 'object') return false;
  const e = value as Record<string, unknown>;
  return typeof e.name === 'string' && typeof e.action === 'string';
}
