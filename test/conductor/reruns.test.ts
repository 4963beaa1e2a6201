import { jobsToRerun, type RerunCandidate } from '../../runtime/conductor/reruns';
import type { JobStatus } from '../../runtime/domain/model';

/**
 * Which jobs a rerun runs again. The workflow, as a config would say it:
 *
 *   build ─┬─ test ── deploy
 *          └─ lint
 *   docs (on its own)
 */
const job = (name: string, status: JobStatus, requires: string[] = []): RerunCandidate => ({ id: `id-${name}`, name, status, requires: requires.map((j) => ({ job: j, statuses: ['success'] })) });
const workflow = (statuses: Partial<Record<string, JobStatus>> = {}): RerunCandidate[] => [
  job('build', statuses.build ?? 'success'),
  job('test', statuses.test ?? 'success', ['build']),
  job('deploy', statuses.deploy ?? 'success', ['test']),
  job('lint', statuses.lint ?? 'success', ['build']),
  job('docs', statuses.docs ?? 'success'),
];
const names = (ids: Set<string>) => [...ids].map((id) => id.replace(/^id-/, '')).sort();

describe('jobsToRerun', () => {
  it('reruns every job when nothing narrows it (an empty jobs list is nothing)', () => {
    expect(names(jobsToRerun('w', workflow(), {}))).toEqual(['build', 'deploy', 'docs', 'lint', 'test']);
    expect(names(jobsToRerun('w', workflow(), { jobs: [], fromFailed: false }))).toEqual(['build', 'deploy', 'docs', 'lint', 'test']);
  });

  it('from_failed: the jobs that did not succeed and everything downstream of them, not what succeeded beside them', () => {
    expect(names(jobsToRerun('w', workflow({ test: 'failed', deploy: 'not_run' }), { fromFailed: true }))).toEqual(['deploy', 'test']);
    expect(names(jobsToRerun('w', workflow({ build: 'canceled', test: 'canceled', deploy: 'canceled', lint: 'canceled' }), { fromFailed: true }))).toEqual(['build', 'deploy', 'lint', 'test']);
    for (const status of ['infrastructure_fail', 'timedout', 'unauthorized', 'terminated-unknown'] as const) {
      expect(names(jobsToRerun('w', workflow({ docs: status }), { fromFailed: true }))).toEqual(['docs']);
    }
  });

  it('from_failed when every job succeeded (or only did not run) is refused, naming from_failed', () => {
    expect(() => jobsToRerun('w1', workflow(), { fromFailed: true })).toThrow(/workflow w1 has no failed or canceled job to rerun from \(from_failed\)/);
    expect(() => jobsToRerun('w1', workflow({ deploy: 'not_run' }), { fromFailed: true })).toThrow(/from_failed/);
  });

  it('jobs: those jobs and everything they require, transitively', () => {
    expect(names(jobsToRerun('w', workflow(), { jobs: ['id-deploy'] }))).toEqual(['build', 'deploy', 'test']);
    expect(names(jobsToRerun('w', workflow(), { jobs: ['id-lint', 'id-docs'] }))).toEqual(['build', 'docs', 'lint']);
  });

  it('jobs with sparse_tree: exactly those jobs', () => {
    expect(names(jobsToRerun('w', workflow(), { jobs: ['id-deploy'], sparseTree: true }))).toEqual(['deploy']);
  });

  it('refuses ids that are not jobs of the workflow, naming each once', () => {
    expect(() => jobsToRerun('w1', workflow(), { jobs: ['id-build', 'nope', 'nope', 'other'] })).toThrow("jobs 'nope', 'other' are not jobs of workflow w1");
    expect(() => jobsToRerun('w1', workflow(), { jobs: ['nope'] })).toThrow("jobs 'nope' is not a job of workflow w1");
  });

  it('refuses what CircleCI refuses: enable_ssh, from_failed with jobs, sparse_tree without jobs', () => {
    expect(() => jobsToRerun('w', workflow(), { enableSsh: true, jobs: ['id-build'] })).toThrow(/enable_ssh is not supported/);
    expect(() => jobsToRerun('w', workflow({ test: 'failed' }), { fromFailed: true, jobs: ['id-test'] })).toThrow(/from_failed and jobs cannot be used together/);
    expect(() => jobsToRerun('w', workflow(), { sparseTree: true })).toThrow(/sparse_tree needs jobs/);
  });
});
