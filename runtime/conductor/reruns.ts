import { InputError } from '../domain/errors';
import type { JobStatus } from '../domain/model';
import type { Requirement } from '../config/plan';

/** What `POST /workflow/{id}/rerun` asks for: CircleCI's RerunWorkflowParameters. */
export interface RerunRequest {
  /** Rerun the jobs that did not succeed and every job downstream of them. */
  readonly fromFailed?: boolean;
  /** Ids of the jobs to rerun; with their upstream jobs unless `sparseTree`. */
  readonly jobs?: readonly string[];
  /** Rerun exactly `jobs`: their upstream jobs keep the results they had. */
  readonly sparseTree?: boolean;
  /** SSH into the rerun job: not something Gyre offers. */
  readonly enableSsh?: boolean;
}

/** A job of the workflow being rerun, as the decision needs it. */
export interface RerunCandidate {
  readonly id: string;
  readonly name: string;
  readonly status: JobStatus;
  readonly requires: readonly Requirement[];
}

/**
 * The statuses a from_failed rerun starts again from: every way a job can end without succeeding,
 * other than not running because of another job (those are downstream of one of these).
 */
const DID_NOT_SUCCEED: readonly JobStatus[] = ['failed', 'infrastructure_fail', 'timedout', 'terminated-unknown', 'canceled', 'unauthorized'];

/** Refuses a request CircleCI refuses whatever the workflow (InputError naming the field). */
export function checkRerunRequest(request: RerunRequest): void {
  const named = request.jobs ?? [];
  if (request.enableSsh) throw new InputError('enable_ssh is not supported: Gyre does not offer SSH access to jobs; rerun without it', 'enable_ssh');
  if (request.fromFailed && named.length > 0) throw new InputError('from_failed and jobs cannot be used together: from_failed reruns the jobs that failed, jobs names the jobs to rerun', 'from_failed');
  if (request.sparseTree && named.length === 0) throw new InputError('sparse_tree needs jobs: it says how the jobs named there are rerun', 'sparse_tree');
}

/**
 * The ids of the jobs a rerun of a finished workflow runs again; every other job is copied into
 * the new workflow with the result it had, as CircleCI does, and a rerun job whose requirement is
 * a copied job sees that job's result.
 *
 * - nothing asked: every job;
 * - `fromFailed`: the jobs that did not succeed, and everything downstream of them;
 * - `jobs`: those jobs and, unless `sparseTree`, every job they require (transitively).
 *
 * Throws InputError (naming the field) for what CircleCI refuses too: enable_ssh (Gyre has no SSH
 * reruns), from_failed with jobs, sparse_tree without jobs, ids that are not jobs of this
 * workflow, from_failed when every job succeeded.
 */
export function jobsToRerun(workflowId: string, jobs: readonly RerunCandidate[], request: RerunRequest): Set<string> {
  checkRerunRequest(request);
  const named = request.jobs ?? [];
  const byName = new Map(jobs.map((j) => [j.name, j]));
  if (request.fromFailed) {
    const failed = jobs.filter((j) => DID_NOT_SUCCEED.includes(j.status));
    if (failed.length === 0) throw new InputError(`workflow ${workflowId} has no failed or canceled job to rerun from (from_failed)`, 'from_failed');
    // Downstream: a job is rerun when any job it requires is.
    const rerun = new Set(failed.map((j) => j.id));
    for (let grew = true; grew; ) {
      grew = false;
      for (const job of jobs) {
        if (rerun.has(job.id) || !job.requires.some((r) => rerun.has(byName.get(r.job)?.id ?? ''))) continue;
        rerun.add(job.id);
        grew = true;
      }
    }
    return rerun;
  }
  if (named.length === 0) return new Set(jobs.map((j) => j.id));

  const ids = new Set(jobs.map((j) => j.id));
  const unknown = [...new Set(named.filter((id) => !ids.has(id)))];
  if (unknown.length > 0) throw new InputError(`jobs ${unknown.map((id) => `'${id.slice(0, 100)}'`).join(', ')} ${unknown.length === 1 ? 'is not a job' : 'are not jobs'} of workflow ${workflowId}`, 'jobs');
  const rerun = new Set(named);
  if (request.sparseTree) return rerun;
  // Upstream: what the named jobs require, and what that requires.
  const pending = jobs.filter((j) => rerun.has(j.id));
  while (pending.length > 0) {
    for (const requirement of pending.pop()!.requires) {
      const upstream = byName.get(requirement.job);
      if (!upstream || rerun.has(upstream.id)) continue;
      rerun.add(upstream.id);
      pending.push(upstream);
    }
  }
  return rerun;
}
