import { compileConfig } from '../../runtime/config/compiler';
import { parseContextExpression, type ExpressionValues } from '../../runtime/secrets/expressions';
import { eventOfTrigger, eventValues, expressionValuesOf, pullRequestEvent } from '../../runtime/triggers/pipeline-event';

/**
 * `pipeline.event.*` from what started a pipeline: the values the compiler substitutes and `when:`
 * chooses on, and those contexts' expression restrictions read. The end-to-end runs are in
 * test/github/pipeline-events.test.ts.
 */

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo "<< pipeline.event.name >>/<< pipeline.event.action >> pr=<< pipeline.event.github.pull_request.number >> other=[<< pipeline.event.github.label >>]"
workflows:
  always:
    jobs: [build]
  opened-prs:
    when:
      and:
        - equal: [pull_request, << pipeline.event.name >>]
        - equal: [opened, << pipeline.event.action >>]
    jobs: [build]
  not-drafts:
    when: << pipeline.event.github.pull_request.draft >>
    jobs: [build]
`;

const OPENED = { number: 7, title: 'Speed up', draft: true, html_url: 'https://github.example/acme/app/pull/7', base: { ref: 'main', sha: 'a'.repeat(40) }, head: { ref: 'topic', sha: 'b'.repeat(40) } };

const evaluateContextExpression = (source: string, values: ExpressionValues) => parseContextExpression(source).evaluate(values).allowed;

async function compiled(event: Record<string, string | number | boolean>) {
  const result = await compileConfig(CONFIG, { trigger: { branch: 'topic', pipeline: { event } } });
  if (!result.ok) throw new Error(result.problems.map((p) => p.message).join('; '));
  const command = (result.plan.workflows[0].jobs[0].spec!.steps[0] as { command: string }).command;
  return { workflows: result.plan.workflows.map((w) => w.name), command };
}

describe('pipeline events', () => {
  test('a trigger that names no event is known by its type', () => {
    expect(eventOfTrigger('webhook')).toEqual({ name: 'push', action: 'push' });
    expect(eventOfTrigger('api')).toEqual({ name: 'api', action: 'api' });
    expect(eventOfTrigger('explicit')).toEqual({ name: 'api', action: 'api' });
    expect(eventOfTrigger('scheduled_pipeline')).toEqual({ name: 'schedule', action: 'schedule' });
    expect(eventOfTrigger('schedule')).toEqual({ name: 'schedule', action: 'schedule' });
    // Pipelines made before events were stored, and a stored value that is not an event, read as their type says.
    expect(eventValues(null, 'webhook')).toMatchObject({ 'pipeline.event.name': 'push', 'pipeline.event.action': 'push' });
    expect(eventValues({ name: 7 }, 'scheduled_pipeline')).toMatchObject({ 'pipeline.event.name': 'schedule' });
  });

  test('a pull request event carries its values, each bounded, whatever GitHub sent', () => {
    const values = eventValues(pullRequestEvent('opened', OPENED), 'webhook');
    expect(values).toEqual({
      'pipeline.event.name': 'pull_request',
      'pipeline.event.action': 'opened',
      'pipeline.event.context.github.pr_url': 'https://github.example/acme/app/pull/7',
      'pipeline.event.github.pull_request.number': 7,
      'pipeline.event.github.pull_request.title': 'Speed up',
      'pipeline.event.github.pull_request.draft': true,
      'pipeline.event.github.pull_request.base.ref': 'main',
      'pipeline.event.github.pull_request.head.ref': 'topic',
      'pipeline.event.github.pull_request.base.sha': 'a'.repeat(40),
      'pipeline.event.github.pull_request.head.sha': 'b'.repeat(40),
    });
    // A hostile title (a megabyte, or not text at all) is cut to 1024 characters, or empty.
    const huge = eventValues(JSON.parse(JSON.stringify(pullRequestEvent('opened', { ...OPENED, title: 'x'.repeat(1 << 20) }))), 'webhook');
    expect(String(huge['pipeline.event.github.pull_request.title'])).toHaveLength(1024);
    expect(eventValues(pullRequestEvent('opened', { ...OPENED, title: { $gt: 1 }, draft: 'yes' }), 'webhook')).toMatchObject({ 'pipeline.event.github.pull_request.title': '', 'pipeline.event.github.pull_request.draft': false });
  });

  test('the compiler substitutes them and when: chooses on them; other pipeline.event values are empty', async () => {
    const opened = await compiled(eventValues(pullRequestEvent('opened', OPENED), 'webhook'));
    expect(opened.command).toBe('echo "pull_request/opened pr=7 other=[]"');
    expect(opened.workflows).toEqual(['always', 'opened-prs', 'not-drafts']);
    const synced = await compiled(eventValues(pullRequestEvent('synchronize', { ...OPENED, draft: false }), 'webhook'));
    expect(synced.workflows).toEqual(['always']);
    const pushed = await compiled(eventValues(null, 'webhook'));
    expect(pushed.command).toBe('echo "push/push pr= other=[]"');
    expect(pushed.workflows).toEqual(['always']);
    const none = await compileConfig(CONFIG, { trigger: { branch: 'main' } });
    expect(none.ok).toBe(true);
  });

  test("contexts' expression restrictions read the event and the trigger source", () => {
    const values = expressionValuesOf({ number: 4, trigger_type: 'webhook', event: pullRequestEvent('opened', OPENED) });
    expect(evaluateContextExpression('pipeline.event.name == "pull_request" and pipeline.event.action == "opened"', values)).toBe(true);
    expect(evaluateContextExpression('pipeline.event.name == "push"', values)).toBe(false);
    expect(evaluateContextExpression('pipeline.trigger_source == "webhook" and pipeline.number == 4', values)).toBe(true);
    expect(evaluateContextExpression('pipeline.event.name == "api"', expressionValuesOf({ number: 5, trigger_type: 'api', event: null }))).toBe(true);
  });
});
