import { StaleLeaseError } from '../domain/errors';
import type { Lease } from '../dispatcher/sql/leases';
import { LEASE_IS_CURRENT } from '../dispatcher/sql/leases';
import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';
import type { Step } from '../config/plan';
import type { TaskSshKeys } from '../dispatcher/dispatcher';
import { isSshRepositoryUrl } from '../domain/repository-url';
import type { Contexts } from './contexts';
import { vcsOriginOf, type OidcIssuer } from './oidc-tokens';
import type { SshKeys, TaskSshKeysInput } from './ssh-keys';
import { expressionValuesOf } from '../triggers/pipeline-event';
import { TASK_FACTS, type TaskFacts } from './task-facts';

export { TASK_FACTS, type TaskFacts } from './task-facts';

/**
 * What a task's agent receives of its secrets, asked for by the agent itself under its lease (the
 * agent API's `GET …/secrets` with its task token, or in process for the built-in runner), never
 * put in a claim answer, a Nomad job or a task row: the project's environment variables, those of
 * the contexts the job names (when its pipeline may use them), and its OIDC tokens. A pipeline of a
 * forked pull request gets no variables unless its project allows it (Contexts.resolveForTask), but
 * still its OIDC tokens: they hold no secret, name the pipeline's own ref, and CircleCI issues them
 * to forks too. The project's SSH keys go only to a job that uses them (a checkout over SSH, an
 * `add_ssh_keys` step), and to a fork's only as its variables do.
 */
export type TaskSecretsAnswer =
  | {
      readonly env: Readonly<Record<string, string>>;
      /**
       * A short-lived token the checkout step reads the project's repository with (a GitHub App
       * installation's, for that one repository, contents: read), when the repository needs one.
       * Only the checkout step's git gets it (never a step's environment); the agent masks it.
       */
      readonly gitToken?: string;
      /** The SSH keys the job uses (runtime/secrets/ssh-keys.ts), private halves in clear; the agent masks them. */
      readonly sshKeys?: TaskSshKeys;
    }
  /** The job may not have a context it names (it changed since the job was queued): the agent fails the job with this. */
  | { readonly refused: string };

export interface TaskSecrets {
  /**
   * The secrets of the lease's task; StaleLeaseError when the lease is not current. `claimed`: what
   * they are decided by, read by the claim statement that made this lease (TASK_FACTS), and the
   * job's steps, for the built-in runner, which asks in the same process a moment after its claim:
   * the lease is not read again. Anyone else (a runner over the agent API) passes none, and the
   * lease is checked.
   */
  forLease(lease: Lease, claimed?: { readonly facts: TaskFacts; readonly steps: readonly Step[] }): Promise<TaskSecretsAnswer>;
}


export interface TaskSecretsDeps {
  readonly store: Store;
  readonly contexts: Pick<Contexts, 'resolveForTask'>;
  /**
   * A checkout token for a repository URL (runtime/github/app.ts `gitTokenOf`), or undefined when
   * it needs none. Forks' pipelines get it too: their checkout reads the same repository, and the
   * token reads nothing else. Without it, checkouts are anonymous.
   */
  readonly gitToken?: (repoUrl: string) => Promise<string | undefined>;
  /** Mints CIRCLE_OIDC_TOKEN and CIRCLE_OIDC_TOKEN_V2; without it jobs get none. */
  readonly oidc?: Pick<OidcIssuer, 'mint'>;
  /** Opens the project's SSH keys a job uses; without it jobs get none. */
  readonly sshKeys?: Pick<SshKeys, 'forTask'>;
  readonly log: Logger;
}

interface TaskRow extends TaskFacts {
  steps: readonly Step[] | null;
}

/** Which of the project's SSH keys a job's steps use: the checkout key for a checkout over SSH, and what its `add_ssh_keys` steps select. */
export function sshKeysUsedBy(steps: readonly Step[], repoUrl: string): Omit<TaskSshKeysInput, 'projectId' | 'fork'> {
  const checkout = isSshRepositoryUrl(repoUrl) && steps.some((s) => s.type === 'checkout');
  let additional: 'all' | string[] = [];
  for (const step of steps) {
    if (step.type !== 'add_ssh_keys' || additional === 'all') continue;
    additional = step.fingerprints === undefined ? 'all' : [...additional, ...step.fingerprints.filter((f): f is string => typeof f === 'string')];
  }
  return { checkout, additional };
}

/** A settled promise's value, or its error thrown. */
function settled<T>(result: PromiseSettledResult<T>): T {
  if (result.status === 'rejected') throw result.reason;
  return result.value;
}

/** A task's facts (TASK_FACTS) and its job's steps, under its lease; StaleLeaseError when the lease is not current. */
export async function readTaskFacts(q: Queryable, lease: Lease): Promise<{ facts: TaskFacts; steps: readonly Step[] | null }> {
  const [row] = await q.query<{ facts: TaskFacts; steps: Step[] | null }>(
    `SELECT ${TASK_FACTS} AS facts, j.spec -> 'steps' AS steps
       FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id
       JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = j.project_id
      WHERE ${LEASE_IS_CURRENT}`,
    [lease.taskId, lease.leaseId, lease.attempt],
  );
  if (!row) throw new StaleLeaseError(lease.taskId, lease.leaseId);
  return row;
}

export function createTaskSecrets(deps: TaskSecretsDeps): TaskSecrets {
  const { store, log } = deps;

  /** The job's OIDC tokens; none (and a warning) when they cannot be made. */
  async function mintTokens(oidc: NonNullable<TaskSecretsDeps['oidc']>, row: TaskRow, orgId: string, taskId: string): Promise<{ v1: string; v2: string } | undefined> {
    try {
      const contextIds = row.contexts?.length
        ? (await store.query<{ id: string }>(`SELECT id FROM contexts WHERE organization_id = $1 AND name = ANY($2::text[]) ORDER BY name`, [orgId, row.contexts])).map((c) => c.id)
        : [];
      let vcsOrigin: string | undefined;
      try {
        vcsOrigin = vcsOriginOf(row.repo_url);
      } catch {
        vcsOrigin = undefined;
      }
      const ref = row.tag ? `refs/tags/${row.tag}` : row.branch ? `refs/heads/${row.branch}` : undefined;
      return await oidc.mint({
        orgId,
        projectId: row.project_id,
        userId: row.actor_id ?? undefined,
        contextIds,
        ...(vcsOrigin && ref ? { vcsOrigin, vcsRef: ref } : {}),
        pipelineId: row.pipeline_id,
        workflowId: row.workflow_id,
        jobId: row.job_id,
      });
    } catch (error) {
      // A job runs without OIDC tokens rather than not at all (a branch name the `sub` cannot hold).
      log.warn('no OIDC tokens for this job', { task: taskId, error: (error as Error).message });
      return undefined;
    }
  }

  return {
    async forLease(lease, claimed) {
      const { facts, steps } = claimed ?? (await readTaskFacts(store, lease));
      const row: TaskRow = { ...facts, steps };
      if (!row.org_id) return { refused: `the project's organization does not exist` };
      // What the answer is made of is read at once, not one after the other (on the way to every
      // task's first command): the contexts' variables, the OIDC tokens, the checkout token and
      // the SSH keys. Only reads; a refusal still wins over what else failed, as before.
      const resolving = deps.contexts.resolveForTask({
        orgId: row.org_id,
        projectId: row.project_id,
        contextNames: row.contexts ?? [],
        pipeline: { branch: row.branch ?? undefined, tag: row.tag ?? undefined, fork: row.from_fork === true, values: expressionValuesOf(row) },
        actor: { userId: row.actor_id ?? undefined },
        ...(row.project_slug !== undefined && row.project_org !== undefined && row.forks_receive_secret_env_vars !== undefined
          ? { project: { id: row.project_id, slug: row.project_slug, org: row.project_org, organization_id: row.org_id, forks_receive_secret_env_vars: row.forks_receive_secret_env_vars } }
          : {}),
      });
      const minting = deps.oidc ? mintTokens(deps.oidc, row, row.org_id, lease.taskId) : Promise.resolve(undefined);
      // GitHub not answering is the secrets' failure, as the database not answering is: the task is
      // not run without its checkout token (a remote agent asks again; an abandoned lease is retried).
      const gitTokening = deps.gitToken ? deps.gitToken(row.repo_url) : Promise.resolve(undefined);
      const sshKeying = deps.sshKeys
        ? deps.sshKeys.forTask({ projectId: row.project_id, fork: row.from_fork === true, ...sshKeysUsedBy(Array.isArray(row.steps) ? row.steps : [], row.repo_url) })
        : Promise.resolve(undefined);
      const [resolvedOf, tokensOf, gitTokenOf, sshKeysOf] = await Promise.allSettled([resolving, minting, gitTokening, sshKeying]);
      const resolved = settled(resolvedOf);
      if (!resolved.ok) return { refused: resolved.reason };
      const env: Record<string, string> = { ...resolved.env };
      const tokens = settled(tokensOf);
      if (tokens) {
        env.CIRCLE_OIDC_TOKEN = tokens.v1;
        env.CIRCLE_OIDC_TOKEN_V2 = tokens.v2;
      }
      const gitToken = settled(gitTokenOf);
      const sshKeys = settled(sshKeysOf);
      return { env, ...(gitToken ? { gitToken } : {}), ...(sshKeys ? { sshKeys } : {}) };
    },
  };
}
