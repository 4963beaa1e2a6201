import type { EmitterWebhookEvent } from '@octokit/webhooks';
import { AuthenticationError, ConflictError, InputError, NotFoundError } from '../domain/errors';
import type { PipelinePullRequest } from '../domain/model';
import type { Forge } from '../forge/forge';
import type { Logger } from '../logger';
import type { Project, Projects } from '../projects/projects';
import type { Queryable, Store } from '../store/store';
import { pullRequestEvent, type PipelineEvent } from '../triggers/pipeline-event';
import type { Triggers } from '../triggers/triggers';
import type { GitHubApp, RepositoryName } from './app';
import { claimDelivery, finishDelivery, forgetDelivery, sweepDeliveries } from './sql/deliveries';
import { deleteInstallation, removeRepositories, setInstallationSuspended, upsertInstallation, upsertRepositories } from './sql/installations';
import { openPullRequestsOfBranch, upsertPullRequest } from './sql/pull-requests';
import { claimTrigger, setPullRequestOfPipeline, triggeredBy } from './sql/triggered';

/**
 * GitHub's webhook deliveries to `POST /webhooks/github` (runtime/github/routes.ts), acted on:
 *
 * - the signature (`X-Hub-Signature-256`, HMAC-SHA256 with the webhook secret, checked by
 *   @octokit/webhooks) comes first: an unsigned or badly signed delivery is refused (401) and
 *   nothing is written;
 * - then the delivery is recorded by its id (`X-GitHub-Delivery`) before anything else: a delivery
 *   recorded before is answered "duplicate" and changes nothing. A delivery that fails is forgotten,
 *   so that GitHub's redelivery of it is acted on; one that starts a pipeline is marked done in the
 *   pipeline's transaction, so a crash between the two cannot start it twice;
 * - `push` (branches and tags; a deletion builds nothing), `pull_request` (opened, synchronize,
 *   reopened build; every action updates what Gyre knows of the pull request), `create` of a tag
 *   (GitHub sends no push for a tag pushed with more than three others), `installation` and
 *   `installation_repositories` (where the app is installed), `ping` (answered); any other event
 *   is recorded and ignored.
 *
 * A repository `<owner>/<repo>` builds as the project `gh/<owner>/<repo>`, when there is one built
 * from that repository. As CircleCI: a head commit whose message says `[ci skip]` or `[skip ci]`
 * builds nothing; a fork's pull request builds only when the project's `build_fork_prs` is on
 * (under the branch `pull/<n>`, from `refs/pull/<n>/head`, without secrets unless
 * `forks_receive_secret_env_vars`); with `build_prs_only` a push builds only the default branch and
 * branches with an open pull request. The pipeline's actor is the Gyre user linked to the GitHub
 * account that pushed or opened (the `sender`), else none.
 */
export interface GitHubWebhooks {
  receive(delivery: WebhookDelivery): Promise<WebhookAnswer>;
}

export interface WebhookDelivery {
  /** `X-GitHub-Delivery`. */
  readonly id?: string;
  /** `X-GitHub-Event`. */
  readonly event?: string;
  /** `X-Hub-Signature-256`: `sha256=<hex>`. */
  readonly signature?: string;
  /** The body exactly as it arrived: the signature is over these bytes. */
  readonly body: Buffer;
}

export interface WebhookAnswer {
  readonly status: number;
  readonly body: { readonly message: string; readonly duplicate?: boolean; readonly pipeline?: { readonly id: string; readonly number: number } };
}

export interface GitHubWebhooksDeps {
  readonly store: Store;
  readonly app: GitHubApp;
  readonly webhookSecret: string;
  readonly projects: Projects;
  readonly triggers: Triggers;
  /** Resolves a created tag (the create event names no commit). */
  readonly forge: Forge;
  readonly log: Logger;
  /** Deliveries older than this are deleted (GitHub redelivers only recent ones). @default 30 */
  readonly keepDeliveriesDays?: number;
}

type Payload<E extends EmitterWebhookEvent['name']> = EmitterWebhookEvent<E>['payload'];

/** What a delivery became: its answer's message, and the pipeline it started. */
interface Outcome {
  readonly message: string;
  readonly pipeline?: { readonly id: string; readonly number: number };
  /** The delivery was marked done in the transaction of its effects. */
  readonly finished?: true;
}

const DELIVERY_ID = /^[A-Za-z0-9-]{1,100}$/;
const EVENT_NAME = /^[a-z_]{1,64}$/;
const SKIP = /\[(ci skip|skip ci)\]/i;
const SWEEP_EVERY_MS = 60 * 60_000;
/** `pipeline.event.name` and `.action` of a push (and of a tag's create). */
const PUSH: PipelineEvent = { name: 'push', action: 'push' };

/** A delivery that loses the race to start a pipeline for the same commit and ref as another. */
class AlreadyTriggered extends ConflictError {
  constructor(readonly pipeline: { id: string; number: number }) {
    super(`pipeline ${pipeline.number} already builds this`);
  }
}

export function createGitHubWebhooks(deps: GitHubWebhooksDeps): GitHubWebhooks {
  const { store, app, projects, triggers, log } = deps;
  let verifier: Promise<{ verify(payload: string, signature: string): Promise<boolean> }> | undefined;
  const verify = async (body: Buffer, signature: string) => {
    verifier ??= import('@octokit/webhooks').then(({ Webhooks }) => new Webhooks({ secret: deps.webhookSecret }));
    const webhooks = await verifier;
    try {
      return await webhooks.verify(body.toString('utf8'), signature);
    } catch {
      return false; // a signature that is not `sha256=<64 hex>`
    }
  };
  let lastSweep = 0;

  return {
    async receive(delivery) {
      if (!delivery.signature) throw new AuthenticationError('The delivery is not signed: set the webhook secret on the GitHub App (X-Hub-Signature-256).');
      if (!(await verify(delivery.body, delivery.signature))) throw new AuthenticationError('The delivery\'s signature (X-Hub-Signature-256) does not match: check the webhook secret.');
      const id = delivery.id ?? '';
      const event = delivery.event ?? '';
      if (!DELIVERY_ID.test(id)) throw new InputError('X-GitHub-Delivery must name the delivery', 'X-GitHub-Delivery');
      if (!EVENT_NAME.test(event)) throw new InputError('X-GitHub-Event must name the event', 'X-GitHub-Event');
      let payload: Record<string, unknown>;
      try {
        payload = JSON.parse(delivery.body.toString('utf8')) as Record<string, unknown>;
        if (!payload || typeof payload !== 'object' || Array.isArray(payload)) throw new Error('not an object');
      } catch {
        throw new InputError('The delivery is not JSON (set the webhook\'s content type to application/json).', 'body');
      }
      const action = typeof payload.action === 'string' ? payload.action.slice(0, 64) : undefined;

      if (Date.now() - lastSweep > SWEEP_EVERY_MS) {
        lastSweep = Date.now();
        void sweepDeliveries(store, deps.keepDeliveriesDays ?? 30).catch((error) => log.warn('old webhook deliveries were not deleted', { error: (error as Error).message }));
      }

      if (!(await claimDelivery(store, { id, event, action }))) {
        return { status: 200, body: { message: `Delivery ${id} was received before; nothing more is done.`, duplicate: true } };
      }
      let outcome: Outcome;
      try {
        outcome = await act(id, event, payload);
      } catch (error) {
        if (error instanceof AlreadyTriggered) {
          outcome = { message: `Already built by pipeline ${error.pipeline.number}.`, pipeline: error.pipeline };
        } else {
          await forgetDelivery(store, id).catch(() => undefined);
          throw error;
        }
      }
      if (!outcome.finished) await finishDelivery(store, id, outcome.message, outcome.pipeline?.id);
      log.info('GitHub delivery', { delivery: id, event, ...(action ? { action } : {}), outcome: outcome.message, ...(outcome.pipeline ? { pipeline: outcome.pipeline.id } : {}) });
      return { status: 200, body: { message: outcome.message, ...(outcome.pipeline ? { pipeline: outcome.pipeline } : {}) } };
    },
  };

  async function act(id: string, event: string, payload: Record<string, unknown>): Promise<Outcome> {
    const repository = payload.repository as { full_name?: unknown; id?: unknown } | undefined;
    if ((event === 'push' || event === 'create' || event === 'pull_request') && (typeof repository?.full_name !== 'string' || typeof repository.id !== 'number')) {
      throw new InputError(`The ${event} delivery names no repository.`, 'repository');
    }
    switch (event) {
      case 'ping':
        return { message: `pong: GitHub App ${String((payload as { hook?: { app_id?: unknown } }).hook?.app_id ?? '')} reaches Gyre`.trim() };
      case 'push':
        return onPush(id, payload as unknown as Payload<'push'>);
      case 'create':
        return onCreate(id, payload as unknown as Payload<'create'>);
      case 'pull_request':
        return onPullRequest(id, payload as unknown as Payload<'pull_request'>);
      case 'installation':
        return onInstallation(id, payload as unknown as Payload<'installation'>);
      case 'installation_repositories':
        return onInstallationRepositories(id, payload as unknown as Payload<'installation_repositories'>);
      default:
        return { message: `The ${event} event is not one Gyre acts on; ignored.` };
    }
  }

  // --- pushes, tags and pull requests ---------------------------------------------------------

  async function onPush(id: string, p: Payload<'push'>): Promise<Outcome> {
    const repository = repositoryOfPayload(p.repository);
    if (p.deleted) return { message: `${p.ref} was deleted; nothing to build.` };
    const branch = p.ref.startsWith('refs/heads/') ? p.ref.slice('refs/heads/'.length) : undefined;
    const tag = p.ref.startsWith('refs/tags/') ? p.ref.slice('refs/tags/'.length) : undefined;
    if (!branch && !tag) return { message: `${p.ref} is neither a branch nor a tag; ignored.` };
    if (p.installation) await recordRepository(p.installation.id, p.repository.owner?.login ?? repository.owner, p.repository);
    const found = await projectOf(repository);
    if ('message' in found) return found;
    const project = found.project;
    // The head commit is the commit the ref points at (for an annotated tag, `after` is the tag object).
    const sha = p.head_commit?.id ?? (branch ? p.after : undefined);
    const message = p.head_commit?.message ?? (sha ? await commitMessage(repository, sha) : '');
    if (SKIP.test(message)) return { message: `The head commit says [ci skip] or [skip ci]; nothing is built.` };
    const revision = sha ? { sha, subject: firstLine(message) } : undefined;
    if (tag) return start(id, { project, tag, revision, key: revision ? `tag:${tag}:${revision.sha}` : undefined, sender: p.sender, event: PUSH });

    const defaultBranch = p.repository.default_branch || project.defaultBranch;
    const [pr] = await openPullRequestsOfBranch(store, p.repository.id, p.repository.full_name, branch!);
    if (project.buildPrsOnly && branch !== defaultBranch && !pr) {
      return { message: `${project.slug} builds only pull requests and its default branch (build_prs_only); ${branch} has no open pull request.` };
    }
    return start(id, {
      project,
      branch,
      revision,
      key: `branch:${branch}:${sha}`,
      sender: p.sender,
      event: pr ? { ...PUSH, prUrl: pr.htmlUrl } : PUSH,
      ...(pr ? { pullRequest: { number: pr.number, url: pr.htmlUrl, fork: false, headOwner: repository.owner, headRepo: repository.repo, headRef: pr.headRef, ...(pr.authorLogin ? { author: pr.authorLogin } : {}) }, baseRevision: pr.baseSha } : {}),
    });
  }

  async function onCreate(id: string, p: Payload<'create'>): Promise<Outcome> {
    if (p.ref_type !== 'tag') return { message: `A ${p.ref_type} was created; branches build on push.` };
    const repository = repositoryOfPayload(p.repository);
    if (p.installation) await recordRepository(p.installation.id, p.repository.owner?.login ?? repository.owner, p.repository);
    const found = await projectOf(repository);
    if ('message' in found) return found;
    // The event names no commit: the tag is resolved, and its commit's message read, through the forge.
    const resolved = await resolveTag(found.project, p.ref);
    if (!resolved) return { message: `The tag ${p.ref} no longer exists; nothing to build.` };
    const message = await commitMessage(repository, resolved.sha);
    if (SKIP.test(message)) return { message: `The head commit says [ci skip] or [skip ci]; nothing is built.` };
    // Named `push` as the tag's push delivery would be: whichever of the two arrives first starts the pipeline.
    return start(id, { project: found.project, tag: p.ref, revision: { sha: resolved.sha, subject: firstLine(message) || resolved.subject }, key: `tag:${p.ref}:${resolved.sha}`, sender: p.sender, event: PUSH });
  }

  async function onPullRequest(id: string, p: Payload<'pull_request'>): Promise<Outcome> {
    const repository = repositoryOfPayload(p.repository);
    const pr = p.pull_request;
    const headRepo = pr.head.repo;
    const fork = !headRepo || headRepo.id !== p.repository.id;
    await upsertPullRequest(store, {
      repositoryId: p.repository.id,
      number: pr.number,
      state: pr.state,
      headRef: pr.head.ref,
      headSha: pr.head.sha,
      headRepoFullName: headRepo?.full_name ?? null,
      baseRef: pr.base.ref,
      baseSha: pr.base.sha,
      htmlUrl: pr.html_url,
      authorLogin: pr.user?.login ?? null,
      githubUpdatedAt: pr.updated_at,
    });
    if (p.action !== 'opened' && p.action !== 'synchronize' && p.action !== 'reopened') return { message: `Pull request #${pr.number} ${p.action}: recorded; it builds when opened, reopened or pushed to.` };
    if (p.installation) await recordRepository(p.installation.id, p.repository.owner?.login ?? repository.owner, p.repository);
    const found = await projectOf(repository);
    if ('message' in found) return found;
    const project = found.project;
    if (fork && !project.buildForkPrs) return { message: `Pull request #${pr.number} is from a fork, and ${project.slug} does not build forks' pull requests (build_fork_prs).` };
    const message = await commitMessage(repository, pr.head.sha);
    if (SKIP.test(message)) return { message: `The head commit says [ci skip] or [skip ci]; nothing is built.` };
    // As CircleCI: a fork's pull request builds as the branch `pull/<n>`, from the pull request's ref.
    const branch = fork ? `pull/${pr.number}` : pr.head.ref;
    const [headOwner, headName] = (headRepo?.full_name ?? '').split('/');
    return start(id, {
      project,
      branch,
      revision: { sha: pr.head.sha, subject: firstLine(message) },
      key: `branch:${branch}:${pr.head.sha}`,
      sender: p.sender,
      fork,
      event: pullRequestEvent(p.action, pr),
      baseRevision: pr.base.sha,
      ...(fork ? { checkoutRef: `refs/pull/${pr.number}/head` } : {}),
      pullRequest: { number: pr.number, url: pr.html_url, fork, ...(headOwner && headName ? { headOwner, headRepo: headName } : {}), headRef: pr.head.ref, ...(pr.user?.login ? { author: pr.user.login } : {}) },
    });
  }

  interface Start {
    readonly project: Project;
    readonly branch?: string;
    readonly tag?: string;
    readonly revision?: { sha: string; subject: string };
    /** The dedupe key; undefined for a tag resolved only as the pipeline is made (keyed then). */
    readonly key?: string;
    readonly sender?: { id: number } | null;
    readonly fork?: boolean;
    readonly baseRevision?: string;
    readonly checkoutRef?: string;
    readonly pullRequest?: PipelinePullRequest;
    /** What happened, for `pipeline.event.*`. */
    readonly event: PipelineEvent;
  }

  /** Starts a pipeline, unless this commit on this ref already started one; the delivery is marked done in its transaction. */
  async function start(deliveryId: string, s: Start): Promise<Outcome> {
    if (s.key) {
      const earlier = await triggeredBy(store, s.project.id, s.key);
      if (earlier) throw new AlreadyTriggered({ id: earlier.pipelineId, number: earlier.number });
    }
    const actorId = s.sender ? await userOfGitHubAccount(store, s.sender.id) : undefined;
    let message = '';
    const created = await triggers.trigger({
      slug: s.project.slug,
      type: 'webhook',
      ...(s.tag ? { tag: s.tag } : { branch: s.branch }),
      ...(s.revision ? { revision: s.revision } : {}),
      ...(actorId ? { actorId } : {}),
      fork: s.fork === true,
      event: s.event,
      withinTransaction: async (tx, pipeline) => {
        const key = s.key ?? `tag:${s.tag}:${pipeline.revision.sha}`;
        if (!(await claimTrigger(tx, pipeline.projectId, key, pipeline.id))) {
          const earlier = await triggeredBy(tx, pipeline.projectId, key);
          throw new AlreadyTriggered({ id: earlier?.pipelineId ?? '', number: earlier?.number ?? 0 });
        }
        if (s.pullRequest || s.baseRevision || s.checkoutRef) {
          await setPullRequestOfPipeline(tx, pipeline.id, { baseRevision: s.baseRevision, checkoutRef: s.checkoutRef, pullRequest: s.pullRequest as unknown as Record<string, unknown> });
        }
        message = `Pipeline ${pipeline.number} of ${s.project.slug} builds ${s.tag ? `tag ${s.tag}` : s.branch} at ${pipeline.revision.sha.slice(0, 12)}.`;
        await finishDelivery(tx, deliveryId, message, pipeline.id);
      },
    });
    return { message, pipeline: { id: created.id, number: created.number }, finished: true };
  }

  /** The project built from this repository, or why there is none. */
  async function projectOf(repository: RepositoryName): Promise<{ project: Project } | Outcome> {
    // GitHub's names are case-insensitive: `gyre project add acme/app` builds Acme/App.
    const slug = (await projectSlugLike(store, `gh/${repository.owner}/${repository.repo}`)) ?? `gh/${repository.owner}/${repository.repo}`;
    let project: Project;
    try {
      project = await projects.get(slug);
    } catch (error) {
      if (error instanceof NotFoundError || error instanceof InputError) return { message: `No project ${slug} in Gyre; add it with \`gyre project add ${repository.owner}/${repository.repo}\`.` };
      throw error;
    }
    const backing = app.repositoryOf(project.repoUrl);
    if (!backing || backing.owner.toLowerCase() !== repository.owner.toLowerCase() || backing.repo.toLowerCase() !== repository.repo.toLowerCase()) {
      return { message: `${slug} is not built from ${app.webUrl}/${repository.owner}/${repository.repo}; ignored.` };
    }
    return { project };
  }

  /** A commit's whole message, through the installation (a fork's commits too, by the pull request's ref). */
  async function commitMessage(repository: RepositoryName, sha: string): Promise<string> {
    const octokit = await app.octokitFor(repository);
    if (!octokit) return '';
    try {
      return (await octokit.rest.git.getCommit({ ...repository, commit_sha: sha })).data.message;
    } catch (error) {
      if ((error as { status?: number }).status === 404) return '';
      throw error;
    }
  }

  async function resolveTag(project: Project, tag: string): Promise<{ sha: string; subject: string } | undefined> {
    try {
      return await deps.forge.resolve(project.repoUrl, { tag });
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  /** Keeps the repository → installation map current from any delivery that names both. */
  async function recordRepository(installationId: number, accountLogin: string, repo: { id: number; full_name: string; private?: boolean }): Promise<void> {
    await store.transaction(async (tx) => {
      await tx.query('INSERT INTO github_installations (id, account_login) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [installationId, accountLogin]);
      await upsertRepositories(tx, installationId, [{ id: repo.id, fullName: repo.full_name, private: repo.private }]);
    });
  }

  // --- installations --------------------------------------------------------------------------

  async function onInstallation(id: string, p: Payload<'installation'>): Promise<Outcome> {
    const installation = p.installation;
    const account = installation.account as { login?: string; slug?: string; name?: string } | null;
    const accountLogin = account?.login ?? account?.slug ?? account?.name ?? String(installation.id);
    let message: string;
    await store.transaction(async (tx) => {
      switch (p.action) {
        case 'deleted':
          await deleteInstallation(tx, installation.id);
          message = `The app was uninstalled from ${accountLogin}.`;
          break;
        case 'suspend':
          await upsertInstallation(tx, { id: installation.id, accountLogin, accountType: installation.target_type, suspended: true });
          message = `The app's installation on ${accountLogin} is suspended.`;
          break;
        default: {
          await upsertInstallation(tx, { id: installation.id, accountLogin, accountType: installation.target_type });
          if (p.action === 'unsuspend') await setInstallationSuspended(tx, installation.id, false);
          const repositories = ('repositories' in p && p.repositories) || [];
          await upsertRepositories(tx, installation.id, repositories.map((r) => ({ id: r.id, fullName: r.full_name, private: r.private })));
          message = `The app's installation on ${accountLogin} (${p.action}) covers ${repositories.length} repositories${repositories.length ? ` named in the delivery` : ''}.`;
        }
      }
      await finishDelivery(tx, id, message!);
    });
    return { message: message!, finished: true };
  }

  async function onInstallationRepositories(id: string, p: Payload<'installation_repositories'>): Promise<Outcome> {
    const installation = p.installation;
    const account = installation.account as { login?: string; slug?: string; name?: string } | null;
    const accountLogin = account?.login ?? account?.slug ?? account?.name ?? String(installation.id);
    const message = `The app's installation on ${accountLogin}: ${p.repositories_added.length} repositories added, ${p.repositories_removed.length} removed.`;
    await store.transaction(async (tx) => {
      await upsertInstallation(tx, { id: installation.id, accountLogin, accountType: installation.target_type, suspended: Boolean(installation.suspended_at) });
      await upsertRepositories(tx, installation.id, p.repositories_added.map((r) => ({ id: r.id, fullName: r.full_name, private: r.private })));
      await removeRepositories(tx, installation.id, p.repositories_removed.flatMap((r) => (typeof r.id === 'number' ? [r.id] : [])));
      await finishDelivery(tx, id, message);
    });
    return { message, finished: true };
  }
}

/** The owner and name of a delivery's repository. */
function repositoryOfPayload(repository: { full_name: string }): RepositoryName {
  const [owner, repo] = repository.full_name.split('/');
  if (!owner || !repo) throw new InputError(`the delivery's repository '${repository.full_name.slice(0, 200)}' is not <owner>/<repo>`, 'repository');
  return { owner, repo };
}

/** The slug of the project named like this one but for case, if there is one. */
async function projectSlugLike(db: Queryable, slug: string): Promise<string | undefined> {
  const [row] = await db.query<{ slug: string }>('SELECT slug FROM projects WHERE lower(slug) = lower($1) ORDER BY slug = $1 DESC, slug LIMIT 1', [slug]);
  return row?.slug;
}

/** The Gyre user linked to a GitHub account (by GitHub's numeric id, which survives renames). */
async function userOfGitHubAccount(db: Queryable, githubId: number): Promise<string | undefined> {
  const [row] = await db.query<{ user_id: string }>(`SELECT user_id FROM user_identities WHERE provider = 'github' AND subject = $1`, [String(githubId)]);
  return row?.user_id;
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? '';
}
