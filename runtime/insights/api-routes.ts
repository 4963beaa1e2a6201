import { Type } from '@sinclair/typebox';
import type { GyreApp } from '../api/http-app';
import { OneOf, Segment, SlugParams } from '../api/schemas';
import type { Projects } from '../projects/projects';
import type { Insights } from './insights';
import { REPORTING_WINDOWS } from './window';

export interface InsightsRouteDeps {
  readonly insights: Insights;
  readonly projects: Projects;
}

const INSIGHTS = '/api/v2/insights';
const PROJECT = `${INSIGHTS}/:vcs/:org/:repo`;
const slugOf = (params: { vcs: string; org: string; repo: string }) => `${params.vcs}/${params.org}/${params.repo}`;

const Text = (maxLength: number) => Type.Optional(Type.String({ maxLength }));
const ReportingWindowQuery = Type.Optional(OneOf(REPORTING_WINDOWS));
const Branches = { branch: Text(1024), 'all-branches': Type.Optional(Type.Boolean()) };
const PageToken = { 'page-token': Text(1000) };
const Dates = { 'start-date': Text(64), 'end-date': Text(64) };
/** A list in a query: the parameter repeated (`?branches=main&branches=dev`); one value is a list of one. */
const Names = Type.Optional(Type.Array(Type.String({ maxLength: 1024 }), { maxItems: 100 }));
const WorkflowParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, name: Segment });

const branchOf = (q: { branch?: string; 'all-branches'?: boolean }) => ({ branch: q.branch === '' ? undefined : q.branch, allBranches: q['all-branches'] });

/**
 * The insights operations of API v2 (runtime/insights/insights.ts answers them; docs/insights.md).
 * A project's figures need `project:read` on it (a project the caller cannot see answers 404, as
 * every project route does); an organisation's, a role in the organisation.
 */
export function registerInsightsRoutes(app: GyreApp, deps: InsightsRouteDeps): void {
  const { insights, projects } = deps;
  const read = { config: { permission: 'project:read' as const } };

  app.get(
    `${PROJECT}/workflows`,
    { ...read, schema: { params: SlugParams, querystring: Type.Object({ ...Branches, ...PageToken, 'reporting-window': ReportingWindowQuery }) } },
    async (request) => {
      const q = request.query;
      return insights.workflows(await projects.get(slugOf(request.params)), { ...branchOf(q), reportingWindow: q['reporting-window'], pageToken: q['page-token'] });
    },
  );

  app.get(
    `${PROJECT}/workflows/:name`,
    { ...read, schema: { params: WorkflowParams, querystring: Type.Object({ ...Branches, ...PageToken, ...Dates }) } },
    async (request) => {
      const q = request.query;
      return insights.workflowRuns(await projects.get(slugOf(request.params)), request.params.name, {
        ...branchOf(q),
        startDate: q['start-date'],
        endDate: q['end-date'],
        pageToken: q['page-token'],
      });
    },
  );

  app.get(
    `${PROJECT}/workflows/:name/jobs`,
    { ...read, schema: { params: WorkflowParams, querystring: Type.Object({ ...Branches, ...PageToken, 'reporting-window': ReportingWindowQuery, 'job-name': Text(1024) }) } },
    async (request) => {
      const q = request.query;
      return insights.workflowJobs(await projects.get(slugOf(request.params)), request.params.name, {
        ...branchOf(q),
        reportingWindow: q['reporting-window'],
        jobName: q['job-name'] || undefined,
        pageToken: q['page-token'],
      });
    },
  );

  app.get(
    `${PROJECT}/workflows/:name/summary`,
    { ...read, schema: { params: WorkflowParams, querystring: Type.Object({ ...Branches, 'reporting-window': ReportingWindowQuery }) } },
    async (request) => {
      const q = request.query;
      return insights.workflowSummary(await projects.get(slugOf(request.params)), request.params.name, { ...branchOf(q), reportingWindow: q['reporting-window'] });
    },
  );

  app.get(
    `${PROJECT}/workflows/:name/test-metrics`,
    { ...read, schema: { params: WorkflowParams, querystring: Type.Object({ ...Branches }) } },
    async (request) => insights.testMetrics(await projects.get(slugOf(request.params)), request.params.name, branchOf(request.query)),
  );

  app.get(
    `${INSIGHTS}/time-series/:vcs/:org/:repo/workflows/:name/jobs`,
    { ...read, schema: { params: WorkflowParams, querystring: Type.Object({ ...Branches, ...Dates, granularity: Type.Optional(OneOf(['daily', 'hourly'] as const)) }) } },
    async (request) => {
      const q = request.query;
      return insights.jobTimeseries(await projects.get(slugOf(request.params)), request.params.name, {
        ...branchOf(q),
        granularity: q.granularity,
        startDate: q['start-date'],
        endDate: q['end-date'],
      });
    },
  );

  app.get(`${PROJECT}/branches`, { ...read, schema: { params: SlugParams, querystring: Type.Object({ 'workflow-name': Text(1024) }) } }, async (request) =>
    insights.branches(await projects.get(slugOf(request.params)), request.query['workflow-name'] || undefined),
  );

  app.get(
    `${INSIGHTS}/pages/:vcs/:org/:repo/summary`,
    { ...read, schema: { params: SlugParams, querystring: Type.Object({ 'reporting-window': ReportingWindowQuery, branches: Names, 'workflow-names': Names }) } },
    async (request) => {
      const q = request.query;
      return insights.projectSummary(await projects.get(slugOf(request.params)), { reportingWindow: q['reporting-window'], branches: q.branches, workflowNames: q['workflow-names'] });
    },
  );

  app.get(
    `${INSIGHTS}/:vcs/:org/summary`,
    { config: { permission: 'org:read' }, schema: { params: Type.Object({ vcs: Segment, org: Segment }), querystring: Type.Object({ 'reporting-window': ReportingWindowQuery, 'project-names': Names }) } },
    async (request) => insights.orgSummary(request.params.org, { reportingWindow: request.query['reporting-window'], projectNames: request.query['project-names'] }),
  );
}
