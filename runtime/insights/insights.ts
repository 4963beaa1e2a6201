import { cursorText, decodePageToken, encodePageToken, isUuid } from '../api/read-model';
import { InputError, NotFoundError } from '../domain/errors';
import type { Project } from '../projects/projects';
import type { Store } from '../store/store';
import { durationMetrics, mttr, successRate, throughput, trend } from './metrics';
import { KEEP_DAYS } from './rollup';
import { namesSince, orgIdOf, projectsOfOrg, tallies, workflowRuns, type BranchScope, type GroupKey, type Scope, type Tally } from './sql/read';
import { latestRuns, testTotals, type RecentRun, type TestFigures, type TestTotals } from './sql/tests';
import { DAY_MS, HOUR_MS, dateRange, dayOf, daysOf, previousWindow, reportingWindow, type ReportingWindow, type Window } from './window';

/**
 * The insights service: each function answers one operation of the API v2 insights, in the shape
 * CircleCI's description gives it, from the rollup the `insights` role keeps (runtime/insights/
 * rollup.ts). Credits: Gyre has none, so every credit figure is 0. Gyre adds queue times
 * (`queue_time_metrics`, `queued_secs`), which CircleCI's description does not have.
 */

export interface BranchChoice {
  /** A branch by name; without it (and without allBranches), the project's default branch. */
  readonly branch?: string;
  readonly allBranches?: boolean;
}

export interface Insights {
  workflows(project: Project, options: BranchChoice & { reportingWindow?: ReportingWindow; pageToken?: string }): Promise<unknown>;
  workflowRuns(project: Project, workflowName: string, options: BranchChoice & { startDate?: string; endDate?: string; pageToken?: string }): Promise<unknown>;
  workflowJobs(project: Project, workflowName: string, options: BranchChoice & { reportingWindow?: ReportingWindow; jobName?: string; pageToken?: string }): Promise<unknown>;
  workflowSummary(project: Project, workflowName: string, options: BranchChoice & { reportingWindow?: ReportingWindow }): Promise<unknown>;
  jobTimeseries(project: Project, workflowName: string, options: BranchChoice & { granularity?: 'daily' | 'hourly'; startDate?: string; endDate?: string }): Promise<unknown>;
  testMetrics(project: Project, workflowName: string, options: BranchChoice): Promise<unknown>;
  branches(project: Project, workflowName?: string): Promise<unknown>;
  projectSummary(project: Project, options: { reportingWindow?: ReportingWindow; branches?: readonly string[]; workflowNames?: readonly string[] }): Promise<unknown>;
  orgSummary(org: string, options: { reportingWindow?: ReportingWindow; projectNames?: readonly string[] }): Promise<unknown>;
}

export interface InsightsDeps {
  readonly store: Store;
  /** The clock windows end at (tests set it). */
  readonly now?: () => Date;
  /** Items per page of the paged lists. */
  readonly pageSize?: number;
}

/** How many of a workflow's latest runs the test metrics are of (as CircleCI's). */
export const TEST_METRICS_RUNS = 10;
/** How many tests the most-failed and slowest lists hold. */
export const TEST_METRICS_TOP = 10;

/** A test as the test-metrics lists give it. Gyre does not know which program wrote the results: `source` is ''. */
const testView = (t: TestFigures) => ({
  test_name: t.name,
  classname: t.classname,
  file: t.file,
  source: '',
  job_name: t.job_name,
  total_runs: Number(t.total_runs),
  failed_runs: Number(t.failed_runs),
  // Seconds, to the millisecond (JUnit reports give times in seconds with a fraction).
  p95_duration: t.p95 === null ? null : Math.round(Number(t.p95) * 1000) / 1000,
  flaky: t.flaky,
});

/** The most branches the branches operation lists (as CircleCI's). */
const MAX_BRANCHES = 5000;

const NONE: Tally = {
  keys: {},
  runs: 0,
  successful: 0,
  failed: 0,
  canceled: 0,
  recoveries: 0,
  recoverySecs: 0,
  firstAt: new Date(0),
  lastAt: new Date(0),
  duration: { count: 0, min: null, max: null, total: 0, mean: null, stddev: null, p50: null, p95: null },
  queued: { count: 0, min: null, max: null, total: 0, mean: null, stddev: null, p50: null, p95: null },
};

const iso = (t: Date | string) => new Date(t).toISOString();
/** The tallies of one grouping set, by their keys joined. */
function byKeys(rows: readonly Tally[], keys: readonly GroupKey[]): Map<string, Tally> {
  const out = new Map<string, Tally>();
  for (const r of rows) if (Object.keys(r.keys).length === keys.length && keys.every((k) => r.keys[k] !== undefined)) out.set(JSON.stringify(keys.map((k) => r.keys[k])), r);
  return out;
}
const key = (...values: string[]) => JSON.stringify(values);

function withoutTotal<T extends { total: number }>(d: T): Omit<T, 'total'> {
  const { total: _total, ...rest } = d;
  return rest;
}

/**
 * The test-metrics answer, in CircleCI's shape: the runs that stored test results, newest first,
 * with their counts (JUnit errors are failures, so `error` is 0), and the most failed and slowest tests.
 */
function testMetricsOf(runs: readonly RecentRun[], totals: TestTotals | undefined) {
  const counted = new Map((totals?.runs ?? []).map((r) => [r.workflow_id, r]));
  const testRuns = runs
    .filter((r) => counted.has(r.workflow_id))
    .map((r) => {
      const c = counted.get(r.workflow_id)!;
      const ran = c.success + c.failure;
      return {
        pipeline_number: Number(r.pipeline_number),
        workflow_id: r.workflow_id,
        success_rate: ran === 0 ? 0 : c.success / ran,
        test_counts: { error: 0, failure: c.failure, skipped: c.skipped, success: c.success, total: c.total },
      };
    });
  const total = testRuns.reduce((sum, r) => sum + r.test_counts.total, 0);
  return {
    average_test_count: testRuns.length === 0 ? 0 : Math.round(total / testRuns.length),
    most_failed_tests: (totals?.mostFailed ?? []).map(testView),
    most_failed_tests_extra: totals?.mostFailedExtra ?? 0,
    slowest_tests: (totals?.slowest ?? []).map(testView),
    slowest_tests_extra: totals?.slowestExtra ?? 0,
    total_test_runs: total,
    test_runs: testRuns,
  };
}

export function createInsights(deps: InsightsDeps): Insights {
  const { store } = deps;
  const now = deps.now ?? (() => new Date());
  const pageSize = deps.pageSize ?? 100;

  const branchScope = (project: Project, choice: BranchChoice): BranchScope => {
    if (choice.allBranches && choice.branch !== undefined) throw new InputError('give either branch or all-branches=true, not both', 'all-branches');
    if (choice.allBranches) return 'all';
    return { name: choice.branch ?? project.defaultBranch };
  };
  /** One tally of everything in the scope and window (none when there were no runs). */
  const total = async (scope: Scope, window: Window) => (await tallies(store, scope, window, { groups: [[]] }))[0] ?? NONE;
  const windowOf = (t: Tally, window: Window) => ({ window_start: iso(t.runs ? t.firstAt : window.start), window_end: iso(t.runs ? t.lastAt : window.end) });

  return {
    async workflows(project, options) {
      const window = reportingWindow(options.reportingWindow, now());
      const after = decodePageToken<{ after?: string }>(options.pageToken, (c) => cursorText(c.after))?.after;
      const rows = byKeys(await tallies(store, { projectIds: [project.id], level: 'workflow', branch: branchScope(project, options) }, window, { groups: [['workflow']] }), ['workflow']);
      const names = [...rows.values()].map((t) => t.keys.workflow!).filter((n) => after === undefined || n > after).sort();
      const page = names.slice(0, pageSize);
      return {
        items: page.map((name) => {
          const t = rows.get(key(name))!;
          return {
            name,
            project_id: project.id,
            ...windowOf(t, window),
            metrics: {
              total_runs: t.runs,
              successful_runs: t.successful,
              failed_runs: t.failed,
              mttr: mttr(t),
              total_credits_used: 0,
              success_rate: successRate(t),
              duration_metrics: withoutTotal(durationMetrics(t.duration)),
              total_recoveries: t.recoveries,
              throughput: throughput(t.runs, daysOf(window)),
              queue_time_metrics: durationMetrics(t.queued),
            },
          };
        }),
        next_page_token: names.length > pageSize ? encodePageToken({ after: page[page.length - 1] }) : null,
      };
    },

    async workflowRuns(project, workflowName, options) {
      const scope = branchScope(project, options);
      const window = dateRange(options.startDate, options.endDate, now(), 90);
      const cursor = decodePageToken<{ at?: string; id?: string }>(options.pageToken, (c) => typeof c.at === 'string' && Number.isFinite(Date.parse(c.at)) && typeof c.id === 'string' && isUuid(c.id));
      const rows = await workflowRuns(store, project.id, workflowName, typeof scope === 'object' ? scope.name : undefined, window, cursor ? { at: new Date(cursor.at!), id: cursor.id! } : undefined, pageSize + 1);
      const page = rows.slice(0, pageSize);
      const last = page[page.length - 1];
      return {
        items: page.map((r) => ({
          id: r.workflow_id,
          branch: r.branch,
          duration: Number(r.duration_secs),
          created_at: iso(r.created_at),
          stopped_at: iso(r.stopped_at),
          credits_used: 0,
          status: r.status,
          is_approval: false,
          pipeline_number: Number(r.pipeline_number),
          queued_secs: Number(r.queued_secs),
        })),
        next_page_token: rows.length > pageSize ? encodePageToken({ at: iso(last.created_at), id: last.workflow_id }) : null,
      };
    },

    async workflowJobs(project, workflowName, options) {
      const window = reportingWindow(options.reportingWindow, now());
      const after = decodePageToken<{ after?: string }>(options.pageToken, (c) => cursorText(c.after))?.after;
      const rows = byKeys(await tallies(store, { projectIds: [project.id], workflowName, level: 'job', branch: branchScope(project, options) }, window, { groups: [['job']] }), ['job']);
      const names = [...rows.values()]
        .map((t) => t.keys.job!)
        .filter((n) => (options.jobName === undefined || n.includes(options.jobName)) && (after === undefined || n > after))
        .sort();
      const page = names.slice(0, pageSize);
      return {
        items: page.map((name) => {
          const t = rows.get(key(name))!;
          return {
            name,
            ...windowOf(t, window),
            metrics: {
              total_runs: t.runs,
              failed_runs: t.failed,
              successful_runs: t.successful,
              duration_metrics: withoutTotal(durationMetrics(t.duration)),
              success_rate: successRate(t),
              total_credits_used: 0,
              throughput: throughput(t.runs, daysOf(window)),
              queue_time_metrics: durationMetrics(t.queued),
            },
          };
        }),
        next_page_token: names.length > pageSize ? encodePageToken({ after: page[page.length - 1] }) : null,
      };
    },

    async workflowSummary(project, workflowName, options) {
      const window = reportingWindow(options.reportingWindow, now());
      const scope: Scope = { projectIds: [project.id], workflowName, level: 'workflow', branch: branchScope(project, options) };
      const [t, p, names] = await Promise.all([total(scope, window), total(scope, previousWindow(window)), namesSince(store, [project.id], dayOf(window.start))]);
      const d = durationMetrics(t.duration);
      const pd = durationMetrics(p.duration);
      const days = daysOf(window);
      return {
        metrics: {
          total_runs: t.runs,
          successful_runs: t.successful,
          mttr: mttr(t),
          total_credits_used: 0,
          failed_runs: t.failed,
          success_rate: successRate(t),
          completed_runs: t.runs,
          window_start: windowOf(t, window).window_start,
          duration_metrics: withoutTotal(d),
          window_end: windowOf(t, window).window_end,
          throughput: throughput(t.runs, days),
          queue_time_metrics: durationMetrics(t.queued),
        },
        trends: {
          total_runs: trend(t.runs, p.runs),
          failed_runs: trend(t.failed, p.failed),
          success_rate: trend(successRate(t), successRate(p)),
          p95_duration_secs: trend(d.p95, pd.p95),
          median_duration_secs: trend(d.median, pd.median),
          total_credits_used: 0,
          mttr: trend(mttr(t), mttr(p)),
          throughput: trend(throughput(t.runs, days), throughput(p.runs, days)),
        },
        workflow_names: [...new Set(names.map((n) => n.workflow_name))].sort(),
      };
    },

    async jobTimeseries(project, workflowName, options) {
      const granularity = options.granularity ?? 'daily';
      // Hourly figures cover the last 48 hours unless asked otherwise, daily ones the last 90 days.
      const window = dateRange(options.startDate, options.endDate, now(), granularity === 'hourly' ? 2 : 90);
      const scope: Scope = { projectIds: [project.id], workflowName, level: 'job', branch: branchScope(project, options) };
      const hourly = granularity === 'hourly';
      const rows = await tallies(store, scope, window, { groups: [['bucket', 'job']], bucket: hourly ? 'hour' : 'day', runsOnly: hourly });
      const bucketDays = hourly ? HOUR_MS / DAY_MS : 1;
      const items = rows
        .map((t) => {
          const d = durationMetrics(t.duration);
          return {
            name: t.keys.job!,
            min_started_at: iso(t.firstAt),
            max_ended_at: iso(t.lastAt),
            timestamp: t.keys.bucket!,
            metrics: {
              total_runs: t.runs,
              failed_runs: t.failed,
              successful_runs: t.successful,
              throughput: throughput(t.runs, bucketDays),
              median_credits_used: 0,
              total_credits_used: 0,
              duration_metrics: { min: d.min, median: d.median, max: d.max, p95: d.p95, total: d.total },
              queue_time_metrics: durationMetrics(t.queued),
            },
          };
        })
        .sort((a, b) => (a.timestamp === b.timestamp ? (a.name < b.name ? -1 : 1) : a.timestamp < b.timestamp ? -1 : 1));
      return { items, next_page_token: null };
    },

    async testMetrics(project, workflowName, options) {
      const scope = branchScope(project, options);
      // '*' is no branch (as in tallies); every other name is looked up as given.
      if (typeof scope === 'object' && scope.name === '*') return testMetricsOf([], undefined);
      const runs = await latestRuns(store, project.id, workflowName, typeof scope === 'object' ? scope.name : undefined, TEST_METRICS_RUNS);
      const totals = await testTotals(store, runs.map((r) => r.workflow_id), TEST_METRICS_TOP);
      return testMetricsOf(runs, totals);
    },

    async branches(project, workflowName) {
      const since = dayOf(new Date(now().getTime() - KEEP_DAYS * DAY_MS));
      const [rows, orgId] = await Promise.all([namesSince(store, [project.id], since, workflowName), orgIdOf(store, project.org)]);
      const branches = [...new Set(rows.map((r) => r.branch).filter((b) => b !== ''))].sort().slice(0, MAX_BRANCHES);
      return { org_id: orgId, project_id: project.id, branches };
    },

    async projectSummary(project, options) {
      const window = reportingWindow(options.reportingWindow, now());
      const scope: Scope = { projectIds: [project.id], level: 'workflow', branch: 'each' };
      const groups: GroupKey[][] = [[], ['workflow'], ['workflow', 'branch']];
      const [current, previous, orgId] = await Promise.all([tallies(store, scope, window, { groups }), tallies(store, scope, previousWindow(window), { groups }), orgIdOf(store, project.org)]);
      const days = daysOf(window);
      const wanted = (values: readonly string[] | undefined, v: string) => !values?.length || values.includes(v);

      const all = byKeys(current, []).get(key()) ?? NONE;
      const allBefore = byKeys(previous, []).get(key()) ?? NONE;
      const projectMetrics = (t: Tally) => ({ total_runs: t.runs, total_duration_secs: durationMetrics(t.duration).total, total_credits_used: 0, success_rate: successRate(t), throughput: throughput(t.runs, days) });
      const small = (t: Tally) => ({ total_credits_used: 0, p95_duration_secs: durationMetrics(t.duration).p95 ?? 0, total_runs: t.runs, success_rate: successRate(t) });
      const smallTrends = (t: Tally, p: Tally) => ({
        total_credits_used: 0,
        p95_duration_secs: trend(durationMetrics(t.duration).p95, durationMetrics(p.duration).p95),
        total_runs: trend(t.runs, p.runs),
        success_rate: trend(successRate(t), successRate(p)),
      });
      const byWorkflow = byKeys(current, ['workflow']);
      const byWorkflowBefore = byKeys(previous, ['workflow']);
      const byBranch = byKeys(current, ['workflow', 'branch']);
      const byBranchBefore = byKeys(previous, ['workflow', 'branch']);
      const workflowNames = [...byWorkflow.values()].map((t) => t.keys.workflow!).sort();
      const pm = projectMetrics(all);
      const pp = projectMetrics(allBefore);
      return {
        org_id: orgId,
        project_id: project.id,
        project_data: {
          metrics: pm,
          trends: {
            total_runs: trend(pm.total_runs, pp.total_runs),
            total_duration_secs: trend(pm.total_duration_secs, pp.total_duration_secs),
            total_credits_used: 0,
            success_rate: trend(pm.success_rate, pp.success_rate),
            throughput: trend(pm.throughput, pp.throughput),
          },
        },
        project_workflow_data: workflowNames
          .filter((w) => wanted(options.workflowNames, w))
          .map((w) => ({ workflow_name: w, metrics: small(byWorkflow.get(key(w))!), trends: smallTrends(byWorkflow.get(key(w))!, byWorkflowBefore.get(key(w)) ?? NONE) })),
        project_workflow_branch_data: [...byBranch.values()]
          .map((t) => [t.keys.workflow!, t.keys.branch!] as const)
          .filter(([w, b]) => wanted(options.workflowNames, w) && wanted(options.branches, b))
          .sort(([w1, b1], [w2, b2]) => (w1 === w2 ? (b1 < b2 ? -1 : 1) : w1 < w2 ? -1 : 1))
          .map(([w, b]) => ({ workflow_name: w, branch: b, metrics: small(byBranch.get(key(w, b))!), trends: smallTrends(byBranch.get(key(w, b))!, byBranchBefore.get(key(w, b)) ?? NONE) })),
        all_branches: [...new Set([...byBranch.values()].map((t) => t.keys.branch!))].sort(),
        all_workflows: workflowNames,
      };
    },

    async orgSummary(org, options) {
      const projects = await projectsOfOrg(store, org);
      if (projects.length === 0 && !(await orgIdOf(store, org))) throw new NotFoundError('organization', `gh/${org}`);
      const chosen = options.projectNames?.length ? projects.filter((p) => options.projectNames!.includes(p.name)) : projects;
      const window = reportingWindow(options.reportingWindow, now());
      const days = daysOf(window);
      const scope: Scope = { projectIds: chosen.map((p) => p.id), level: 'workflow', branch: 'all' };
      const groups: GroupKey[][] = [[], ['project']];
      const [current, previous] = chosen.length ? await Promise.all([tallies(store, scope, window, { groups }), tallies(store, scope, previousWindow(window), { groups })]) : [[], []];
      const t = byKeys(current, []).get(key()) ?? NONE;
      const p = byKeys(previous, []).get(key()) ?? NONE;
      const byProject = byKeys(current, ['project']);
      const byProjectBefore = byKeys(previous, ['project']);
      const seconds = (x: Tally) => durationMetrics(x.duration).total;
      return {
        org_data: {
          metrics: { total_runs: t.runs, total_duration_secs: seconds(t), total_credits_used: 0, success_rate: successRate(t), throughput: throughput(t.runs, days) },
          trends: {
            total_runs: trend(t.runs, p.runs),
            total_duration_secs: trend(seconds(t), seconds(p)),
            total_credits_used: 0,
            success_rate: trend(successRate(t), successRate(p)),
            throughput: trend(throughput(t.runs, days), throughput(p.runs, days)),
          },
        },
        org_project_data: chosen
          .filter((x) => byProject.has(key(x.id)))
          .map((x) => {
            const c = byProject.get(key(x.id))!;
            const b = byProjectBefore.get(key(x.id)) ?? NONE;
            return {
              project_name: x.name,
              metrics: { total_credits_used: 0, total_duration_secs: seconds(c), total_runs: c.runs, success_rate: successRate(c) },
              trends: { total_credits_used: 0, total_duration_secs: trend(seconds(c), seconds(b)), total_runs: trend(c.runs, b.runs), success_rate: trend(successRate(c), successRate(b)) },
            };
          }),
        all_projects: projects.map((x) => x.name),
      };
    },
  };
}
