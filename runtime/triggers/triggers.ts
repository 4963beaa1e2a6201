import { randomUUID } from 'node:crypto';
import { auditInsert, type Audit } from '../audit/audit-log';
import { InputError, NotFoundError } from '../domain/errors';
import type { TriggerType } from '../domain/model';
import type { Forge, Revision } from '../forge/forge';
import type { Projects } from '../projects/projects';
import type { Queryable, Store } from '../store/store';
import { eventOfTrigger, type PipelineEvent } from './pipeline-event';

export const PIPELINE_CREATED = 'gyre_pipeline_created';

export type ParameterValue = string | number | boolean;

export interface TriggerRequest {
  readonly slug: string;
  readonly branch?: string;
  readonly tag?: string;
  readonly parameters?: Readonly<Record<string, ParameterValue>>;
  readonly actorId?: string;
  readonly type: TriggerType;
  /**
   * The pipeline builds a pull request from a fork: its jobs get no project variables and no
   * contexts unless the project allows it (`forks_receive_secret_env_vars`, docs/security.md).
   * Set by what knows it (the GitHub webhook); the API's trigger route never sets it. @default false
   */
  readonly fork?: boolean;
  /**
   * What happened (`pipeline.event.*`, ./pipeline-event.ts), when the trigger knows more than its
   * type says (the GitHub webhook: `pull_request` and its action). @default - from `type`
   */
  readonly event?: PipelineEvent;
  /** The request's audit record, appended in the transaction that creates the pipeline. */
  readonly audit?: Audit;
  /**
   * The commit to build, when the trigger already knows it (a webhook names the commit pushed):
   * the forge is not asked what the branch or tag points at now. @default - resolved by the forge
   */
  readonly revision?: Revision;
  /**
   * Runs in the transaction that creates the pipeline, after its row is written (a webhook records
   * its delivery and what it started there, and what the pipeline builds of a pull request). A throw
   * rolls the pipeline back and is thrown to the caller.
   */
  readonly withinTransaction?: (tx: Queryable, pipeline: { readonly id: string; readonly number: number; readonly projectId: string; readonly revision: Revision }) => Promise<void>;
}

export interface CreatedPipeline {
  readonly id: string;
  readonly number: number;
  readonly state: string;
  readonly createdAt: Date;
}

/**
 * A pipeline as its trigger created it, with what the conductor reads of a pending pipeline to
 * start it (Conductor.startPipeline): its row's columns and its project's, by their names there.
 */
export interface StartingPipeline {
  readonly id: string;
  readonly number: number;
  readonly branch: string | null;
  readonly tag: string | null;
  readonly revision: string;
  readonly parameters: Record<string, ParameterValue>;
  readonly project_id: string;
  readonly trigger_type: string;
  readonly event: unknown;
  readonly repo_url: string;
  readonly default_branch: string;
  readonly slug: string;
}

export interface Triggers {
  /** Resolves the revision, records a pending pipeline and announces it to the conductor. */
  trigger(request: TriggerRequest): Promise<CreatedPipeline>;
  /**
   * Tells `listener` of each pipeline this process is about to create, with its id, before its
   * transaction, and `created`, which resolves once it is committed with what starting it reads,
   * or undefined when it was not (a conductor in the same process starts it without waiting for
   * the NOTIFY and reading its row back; it knows the NOTIFY to come is this one's, since no
   * NOTIFY is sent before the commit: runtime/roles/conductor.ts). Not a pipeline whose trigger
   * writes more in its transaction than the pipeline row (a webhook's pull request, a schedule's
   * tick): the conductor reads those. Returns the unsubscribe.
   */
  onCreated(listener: (id: string, created: Promise<StartingPipeline | undefined>) => void): () => void;
}

/** Triggers that write what starting a pipeline reads besides its row (the schedule it fired from). */
const READ_BACK_TYPES: ReadonlySet<string> = new Set(['scheduled_pipeline', 'schedule']);

export function createTriggers({ store, forge, projects }: { store: Store; forge: Forge; projects: Pick<Projects, 'get'> }): Triggers {
  const listeners = new Set<(id: string, created: Promise<StartingPipeline | undefined>) => void>();
  return {
    onCreated(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },

    async trigger(request) {
      if (request.branch && request.tag) throw new InputError('give a branch or a tag, not both', 'tag');
      const project = await projects.get(request.slug);
      const ref = request.tag ? { tag: request.tag } : { branch: request.branch || project.defaultBranch };
      let revision = request.revision;
      try {
        revision ??= await forge.resolve(project.repoUrl, ref);
      } catch (error) {
        if (error instanceof NotFoundError) {
          throw new InputError(`${error.kind} '${error.id}' does not exist in ${project.slug}'s repository`, error.kind);
        }
        throw error;
      }
      const id = randomUUID();
      const parameters = request.parameters ?? {};
      const event = request.event ?? eventOfTrigger(request.type);
      let handOver: ((pipeline: StartingPipeline | undefined) => void) | undefined;
      if (listeners.size > 0 && !request.withinTransaction && !READ_BACK_TYPES.has(request.type)) {
        const handed = new Promise<StartingPipeline | undefined>((resolve) => (handOver = resolve));
        for (const listener of listeners) listener(id, handed);
      }
      let created: CreatedPipeline;
      const detail = { ...(ref.tag ? { tag: ref.tag } : { branch: ref.branch }), revision: revision.sha, ...(request.fork ? { fork: true } : {}) };
      const target = { type: 'pipeline', id };
      // The request's audit record goes in the pipeline's own statement when it can (the number
      // merged in from the row): one statement, committed on its own, where a transaction took
      // BEGIN, the pipeline, the record and COMMIT, four round trips before the answer.
      const entry = request.withinTransaction ? undefined : request.audit?.entry?.({ target, project: project.slug, detail });
      const values = [
        id,
        project.id,
        request.type,
        request.actorId ?? null,
        ref.branch ?? null,
        ref.tag ?? null,
        revision.sha,
        revision.subject,
        JSON.stringify(parameters),
        request.fork === true,
        JSON.stringify(event),
        PIPELINE_CREATED,
        id,
      ];
      // One statement, one round trip: the project's next number, the pipeline row, the NOTIFY the
      // conductor wakes on (delivered when it commits) and, when given, the audit record.
      const insert = (q: Queryable, audited: boolean) =>
        q.query<{ number: number; created_at: Date }>(
          `WITH seq AS (UPDATE projects SET pipeline_seq = pipeline_seq + 1 WHERE id = $2 RETURNING pipeline_seq),
                made AS (
                  INSERT INTO pipelines (id, project_id, number, state, trigger_type, actor_id, branch, tag, revision, commit_subject, parameters, from_fork, event)
                  SELECT $1::uuid, $2::uuid, pipeline_seq, 'pending', $3::text, $4::uuid, $5::text, $6::text, $7::text, $8::text, $9::jsonb, $10::boolean, $11::jsonb FROM seq
                  RETURNING number, created_at)${audited ? `,
                audited AS (${auditInsert(14, 'made', `jsonb_build_object('number', made.number)`)})` : ''}
           SELECT made.number, made.created_at FROM made CROSS JOIN (SELECT pg_notify($12::text, $13::text)) AS told`,
          audited ? [...values, ...entry!.values] : values,
        );
      try {
        if (entry || (!request.audit && !request.withinTransaction)) {
          const [row] = await insert(store, entry !== undefined);
          if (!row) throw new NotFoundError('project', request.slug);
          entry?.done();
          created = { id, number: row.number, state: 'pending', createdAt: new Date(row.created_at) };
        } else {
          created = await store.transaction(async (tx) => {
            const [row] = await insert(tx, false);
            if (!row) throw new NotFoundError('project', request.slug);
            const number = row.number;
            await request.audit?.record(tx, { target, project: project.slug, detail: { number, ...detail } });
            await request.withinTransaction?.(tx, { id, number, projectId: project.id, revision });
            return { id, number, state: 'pending', createdAt: new Date(row.created_at) };
          });
        }
      } catch (error) {
        // Not committed: no NOTIFY was sent either.
        handOver?.(undefined);
        throw error;
      }
      handOver?.({
        // As the row reads back: JSON columns through JSON, the project as the revision was resolved for.
        id,
        number: created.number,
        branch: ref.branch ?? null,
        tag: ref.tag ?? null,
        revision: revision.sha,
        parameters: JSON.parse(JSON.stringify(parameters)),
        project_id: project.id,
        trigger_type: request.type,
        event: JSON.parse(JSON.stringify(event)),
        repo_url: project.repoUrl,
        default_branch: project.defaultBranch,
        slug: project.slug,
      });
      return created;
    },
  };
}
