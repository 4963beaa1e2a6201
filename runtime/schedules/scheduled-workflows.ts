import { parse } from 'yaml';
import { regexMatchesWhole } from '../config/logic';
import { InputError } from '../domain/errors';
import { cadenceOf } from './timetable';

/**
 * Scheduled workflows: CircleCI's legacy `triggers: - schedule: {cron, filters}` on a workflow.
 * They are read from the compiled config of a project's default branch (its latest pipeline that
 * compiled), as CircleCI reads them from the config it has; each (cron, branch) they name fires a
 * pipeline on that branch whose plan holds only the workflows with that cron (the compiler runs
 * `triggers` workflows only then, never on pushes).
 *
 * The branches a schedule fires on are the names in its `filters.branches.only`; a regular
 * expression there cannot be listed, so it stands for the default branch when it matches it (as
 * does a schedule without `only`, unless `ignore` excludes the default branch). Cron patterns are
 * five-field, UTC.
 */

export interface ScheduledWorkflow {
  readonly cron: string;
  readonly branch: string;
  /** The workflows that run on this tick, for people (the compiler decides what runs). */
  readonly workflows: readonly string[];
}

/** Compiled configs larger than this are not read for schedules (the compiler's own bound is 4 MiB of source). */
const MAX_CONFIG_CHARS = 16 * 1024 * 1024;

export function scheduledWorkflowsIn(compiledYaml: string, defaultBranch: string): { readonly schedules: ScheduledWorkflow[]; readonly problems: string[] } {
  const problems: string[] = [];
  if (compiledYaml.length > MAX_CONFIG_CHARS) return { schedules: [], problems: [`the compiled config is larger than ${MAX_CONFIG_CHARS} characters`] };
  let config: unknown;
  try {
    config = parse(compiledYaml, { maxAliasCount: 100 });
  } catch (error) {
    return { schedules: [], problems: [`the compiled config does not parse: ${(error as Error).message}`] };
  }
  const workflows = isObj(config) && isObj(config.workflows) ? config.workflows : {};
  const byKey = new Map<string, { cron: string; branch: string; workflows: string[] }>();
  for (const [name, wf] of Object.entries(workflows)) {
    if (!isObj(wf) || !Array.isArray(wf.triggers)) continue;
    wf.triggers.forEach((trigger, i) => {
      const schedule = isObj(trigger) ? trigger.schedule : undefined;
      if (!isObj(schedule) || typeof schedule.cron !== 'string') return;
      const cron = schedule.cron;
      try {
        cadenceOf(cron);
      } catch (error) {
        problems.push(`workflows.${name}.triggers[${i}].schedule.cron: ${(error as InputError).message}`);
        return;
      }
      const branches = isObj(schedule.filters) && isObj(schedule.filters.branches) ? schedule.filters.branches : undefined;
      for (const branch of branchesOf(branches, defaultBranch)) {
        const key = JSON.stringify([cron, branch]);
        const entry = byKey.get(key) ?? { cron, branch, workflows: [] };
        if (!entry.workflows.includes(name)) entry.workflows.push(name);
        byKey.set(key, entry);
      }
    });
  }
  return { schedules: [...byKey.values()], problems };
}

function branchesOf(filter: Record<string, unknown> | undefined, defaultBranch: string): string[] {
  const only = list(filter?.only);
  const ignore = list(filter?.ignore);
  const isRegex = (p: string) => p.length >= 2 && p.startsWith('/') && p.endsWith('/');
  const matches = (patterns: string[], name: string) => patterns.some((p) => (isRegex(p) ? safeMatch(p, name) : p === name));
  const names = filter?.only === undefined ? [defaultBranch] : [...only.filter((p) => !isRegex(p)), ...(only.some((p) => isRegex(p) && safeMatch(p, defaultBranch)) ? [defaultBranch] : [])];
  return [...new Set(names)].filter((name) => name !== '' && !matches(ignore, name));
}

function safeMatch(pattern: string, name: string): boolean {
  try {
    return regexMatchesWhole(pattern, name);
  } catch {
    return false;
  }
}

function list(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
