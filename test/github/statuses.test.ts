import { createLogger } from '../../runtime/logger';
import { createGitHubApp } from '../../runtime/github/app';
import { readGitHubAppSettings } from '../../runtime/github/settings';
import { createGitHubStatuses, GITHUB_STATUS, type CommitStatusPayload } from '../../runtime/github/statuses';
import { enqueue, type OutboxHandler } from '../../runtime/outbox/outbox';
import { createOutboxSender, type OutboxSender } from '../../runtime/outbox/sender';
import { openStore } from '../../runtime/store/open-store';
import type { Store } from '../../runtime/store/store';
import { openTestStore } from '../support/database';
import { githubSchemaCheck } from '../support/github-openapi';
import { startGitHubAppStandIn, type GitHubAppStandIn, type Sender, type StandInRepository } from '../support/github-stand-in';
import { startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Commit statuses on GitHub: each workflow's, pending when it starts and its result when it ends,
 * written to the outbox with the workflow's change and posted by the conductor role's sender to
 * the GitHub stand-in (its statuses route checked against GitHub's OpenAPI description).
 */

const CONFIG = `version: 2.1
jobs:
  ok:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo fine
  broken:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: exit 3
workflows:
  pass:
    jobs: [ok]
  fail:
    jobs: [broken]
`;

const DEV: Sender = { login: 'octo-dev', id: 583_231 };

async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('commit statuses on GitHub, per workflow, through the outbox', () => {
  let gh: GitHubAppStandIn;
  let g: TestGyre;
  let repo: StandInRepository;
  let installationId: number;

  beforeAll(async () => {
    gh = await startGitHubAppStandIn();
    repo = gh.createRepository('acme/app', { private: true, files: { '.circleci/config.yml': CONFIG } });
    installationId = gh.install({ login: 'acme', id: 9001 }, [repo]);
    g = await startTestGyre({ store: 'pglite', env: gh.env });
    await g.api('POST', '/api/v2/projects', { org: 'acme', name: 'app' });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await gh?.stop();
  });

  /** A signed push of a new commit on main; answers the commit and the pipeline it started. */
  const push = async (message: string) => {
    const before = repo.rev('main');
    const sha = repo.commit('main', { 'marker.txt': `${message}\n` }, message);
    const answer = await gh.deliver(g.url, 'push', gh.payloads.push(repo, { ref: 'refs/heads/main', after: sha, before, message, sender: DEV, installationId }));
    expect(answer.status).toBe(200);
    expect(answer.body.pipeline).toBeDefined();
    return { sha, pipelineId: answer.body.pipeline.id as string };
  };
  /** The states posted on a commit, by context, in the order GitHub took them. */
  const statesOn = (sha: string) => {
    const by: Record<string, string[]> = {};
    for (const s of gh.statuses.filter((x) => x.sha === sha)) (by[s.context] ??= []).push(s.state);
    return by;
  };
  const outboxOf = (pipelineId: string) =>
    g.gyre.store.query<{ state: string; attempts: number; last_error: string | null; payload: CommitStatusPayload }>(
      `SELECT state, attempts, last_error, payload FROM outbox WHERE kind = $1 AND payload->>'pipeline_id' = $2 ORDER BY seq`,
      [GITHUB_STATUS, pipelineId],
    );
  const settled = (pipelineId: string) => until('the outbox to be sent', async () => (await outboxOf(pipelineId)).every((r) => r.state !== 'pending') && (await outboxOf(pipelineId)));
  const statusRequests = (status: number) => gh.requests.filter((r) => r.operation === 'repos/create-commit-status' && r.status === status).length;

  test('a workflow posts pending when it starts, then success or failure, linking to its page in Gyre', async () => {
    const { sha, pipelineId } = await push('First');
    const { workflows } = await g.waitForPipeline(pipelineId, 30_000);
    expect(Object.fromEntries(workflows.map((w) => [w.name, w.status]))).toEqual({ pass: 'success', fail: 'failed' });
    await settled(pipelineId);
    expect(statesOn(sha)).toEqual({ 'ci/gyre: pass': ['pending', 'success'], 'ci/gyre: fail': ['pending', 'failure'] });
    for (const w of workflows) {
      const posted = gh.statuses.filter((s) => s.sha === sha && s.context === `ci/gyre: ${w.name}`);
      for (const s of posted) {
        expect(s.repository).toBe('acme/app');
        expect(s.target_url).toBe(`${g.url}/#/pipeline/${pipelineId}/workflows/${w.id}`);
        expect(s.description).toBeTruthy();
      }
    }
    // The link is the UI's: its page serves (the route itself is the UI's fragment).
    expect((await fetch(gh.statuses.find((s) => s.sha === sha)!.target_url!.replace(/#.*$/, ''))).status).toBe(200);
    // What Gyre sent and what the stand-in answered are GitHub's shapes.
    for (const { operation, body } of gh.received.filter((r) => r.operation === 'repos/create-commit-status')) {
      expect({ operation, errors: githubSchemaCheck(operation, 'request')!(body) }).toEqual({ operation, errors: [] });
    }
    for (const { operation, status, body } of gh.sent.filter((r) => r.operation === 'repos/create-commit-status')) {
      expect({ status, errors: githubSchemaCheck(operation, status)!(body).slice(0, 5) }).toEqual({ status: 201, errors: [] });
    }
    expect((await g.api('GET', `/api/v2/pipeline/${pipelineId}`)).errors).toEqual([]);
  });

  test('a 502 from GitHub is retried with backoff and each status is delivered once, in order', async () => {
    const failedBefore = statusRequests(502);
    gh.failStatuses(502, 2);
    const { sha, pipelineId } = await push('Second');
    await g.waitForPipeline(pipelineId, 30_000);
    const rows = await settled(pipelineId);
    expect(statusRequests(502) - failedBefore).toBe(2);
    expect(statesOn(sha)).toEqual({ 'ci/gyre: pass': ['pending', 'success'], 'ci/gyre: fail': ['pending', 'failure'] });
    expect(rows.map((r) => r.state)).toEqual(['delivered', 'delivered', 'delivered', 'delivered']);
    // Four deliveries, two of them tried twice or one of them three times.
    expect(rows.reduce((n, r) => n + r.attempts, 0)).toBe(6);
    expect((await g.api('GET', `/api/v2/pipeline/${pipelineId}`)).errors).toEqual([]);
  });

  test("GitHub's refusal (422) is final and shows in the pipeline's errors, and the other statuses still go out", async () => {
    const refusedBefore = statusRequests(422);
    gh.failStatuses(422, 1);
    const { sha, pipelineId } = await push('Third');
    const { pipeline } = await g.waitForPipeline(pipelineId, 30_000);
    expect(pipeline.state).toBe('created');
    const rows = await settled(pipelineId);
    expect(statusRequests(422) - refusedBefore).toBe(1);
    const failed = rows.filter((r) => r.state === 'failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ attempts: 1, last_error: expect.stringMatching(/HTTP 422/) });
    expect(failed[0].payload.state).toBe('pending');
    expect(rows.filter((r) => r.state === 'delivered')).toHaveLength(3);

    const answer = await until('the error on the pipeline', async () => {
      const p = await g.api('GET', `/api/v2/pipeline/${pipelineId}`);
      return p.errors.length > 0 && p;
    });
    expect(answer.errors).toEqual([{ type: 'other', message: expect.stringMatching(new RegExp(`^GitHub refused the commit status "${failed[0].payload.context}" \\(pending\\) on acme/app@${sha.slice(0, 12)}: HTTP 422`)) }]);
    // The refused context still got its end; the other context both of its states.
    const states = statesOn(sha);
    expect(states[failed[0].payload.context]).toHaveLength(1);
    expect(Object.values(states).flat()).toHaveLength(3);
  });

  test('with set_github_status off, no status is written or posted', async () => {
    await g.api('PATCH', '/api/v2/project/gh/acme/app/settings', { advanced: { set_github_status: false } });
    const posted = gh.statuses.length;
    const { sha, pipelineId } = await push('Fourth');
    const { workflows } = await g.waitForPipeline(pipelineId, 30_000);
    expect(workflows).toHaveLength(2);
    // Statuses are written in the transactions that start and end workflows: none by now is none at all.
    expect(await outboxOf(pipelineId)).toEqual([]);
    expect(gh.statuses.filter((s) => s.sha === sha)).toEqual([]);
    expect(gh.statuses.length).toBe(posted);
    await g.api('PATCH', '/api/v2/project/gh/acme/app/settings', { advanced: { set_github_status: true } });
  });
});

const onPostgres = process.env.DATABASE_URL ? describe : describe.skip;

onPostgres('two senders on PostgreSQL', () => {
  let gh: GitHubAppStandIn;
  let repo: StandInRepository;
  let first: { store: Store; drop?: () => Promise<void>; url?: string };
  let second: Store;
  const senders: OutboxSender[] = [];

  beforeAll(async () => {
    gh = await startGitHubAppStandIn();
    repo = gh.createRepository('acme/app', { private: true });
    gh.install({ login: 'acme', id: 9001 }, [repo]);
    first = await openTestStore('postgres');
    second = await openStore({ databaseUrl: first.url! });
  }, 60_000);
  afterAll(async () => {
    for (const s of senders) await s.stop();
    await second?.close();
    await first?.store.close();
    await first?.drop?.();
    await gh?.stop();
  });

  test('deliver each status exactly once, in order per context, through 502s', async () => {
    const settings = readGitHubAppSettings(gh.env)!;
    const log = createLogger({ level: 'silent' });
    const sent = [0, 0];
    for (const [i, store] of [first.store, second].entries()) {
      const { handler } = createGitHubStatuses({ app: createGitHubApp(settings, { store, log }), webUrl: () => 'https://gyre.example' });
      // A slower send, so that the two senders' claims overlap in time.
      const slow: OutboxHandler<CommitStatusPayload> = {
        ...handler,
        async deliver(delivery) {
          await new Promise((r) => setTimeout(r, 15));
          const outcome = await handler.deliver(delivery);
          sent[i]++;
          return outcome;
        },
      };
      const sender = createOutboxSender({ store, log, handlers: { [GITHUB_STATUS]: slow }, batch: 3, retry: { baseDelayMs: 50, maxDelayMs: 200, maxAttempts: 10 } });
      senders.push(sender);
      await sender.start();
    }
    gh.failStatuses(502, 3);
    const sha = repo.rev('main');
    const contexts = Array.from({ length: 15 }, (_, i) => `ci/gyre: w${i}`);
    await first.store.transaction(async (tx) => {
      for (const context of contexts) {
        for (const state of ['pending', 'success'] as const) {
          const payload: CommitStatusPayload = { owner: 'acme', repo: 'app', sha, state, context, description: state, target_url: 'https://gyre.example/#/', pipeline_id: '00000000-0000-4000-8000-000000000000', workflow_id: '00000000-0000-4000-8000-000000000001' };
          await enqueue(tx, GITHUB_STATUS, payload, { orderingKey: context });
        }
      }
    });
    await until('every status to be delivered', async () => {
      const [{ n }] = await first.store.query<{ n: number }>(`SELECT count(*)::int AS n FROM outbox WHERE state = 'delivered'`);
      return n === contexts.length * 2;
    }, 30_000);
    const posted = gh.statuses.filter((s) => s.sha === sha);
    expect(posted).toHaveLength(contexts.length * 2);
    for (const context of contexts) expect(posted.filter((s) => s.context === context).map((s) => s.state)).toEqual(['pending', 'success']);
    expect(sent[0] + sent[1]).toBe(contexts.length * 2);
    // Both processes took part (each claims at most three at a time).
    expect(sent[0]).toBeGreaterThan(0);
    expect(sent[1]).toBeGreaterThan(0);
  });
});
