import { evaluateExpression, evaluateLogic, LogicError, regexMatchesWhole, truthy } from '../logic';
import type { JobPlan, JobSpec, Requirement, RequiredStatus, WorkflowPlan } from '../plan';
import type { SubstEnv } from '../substitute';
import type { Compilation } from './compilation';
import { lookup as lookupElement, tryLookup } from './elements';
import { expandJob } from './jobs';
import { has, isObj, MAX_TOTAL_JOBS, MAX_WORKFLOW_JOBS, STATUSES, WORKFLOW_JOB_KEYS, type Obj, type Scope } from './model';

/**
 * The workflows pass: each workflow's job entries expanded into instances (matrix, names,
 * aliases), every job expanded, requirements and cycles checked, the processed workflows written,
 * and, for the workflows that run for this trigger, filters, the tag rule and the filtered-requires
 * cascade applied.
 */

interface Instance {
  name: string;
  jobRef: string;
  path: string;
  entry: Obj;
  entryContainer: unknown;
  type: 'build' | 'approval' | 'no-op';
  requiresRaw: unknown;
  filters: unknown;
  contexts: string[];
  serialGroup?: string;
  aliases: string[];
  args: Obj;
  matrixEnv: SubstEnv;
  explicitName: boolean;
  spec?: JobSpec;
  processed?: Obj;
  requires: Requirement[];
}

function filterList(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map(String);
  return [String(v)];
}

function nameMatches(patterns: string[], name: string): boolean {
  return patterns.some((p) => (p.length >= 2 && p.startsWith('/') && p.endsWith('/') ? regexMatchesWhole(p, name) : p === name));
}

function admitsName(f: unknown, name: string): boolean {
  if (!isObj(f)) return true;
  const only = filterList(f.only);
  const ignore = filterList(f.ignore);
  if (has(f, 'only') && !nameMatches(only, name)) return false;
  if (ignore.length && nameMatches(ignore, name)) return false;
  return true;
}

export interface PlannedWorkflows {
  /** The workflows that run for this trigger, with the jobs that run in them. */
  readonly plans: WorkflowPlan[];
  /** `jobs:` of the processed config. */
  readonly processedJobs: Obj;
  /** `workflows:` of the processed config. */
  readonly processedWorkflows: Obj;
}

/** What the workflows pass knows of the trigger. */
interface TriggerFacts {
  readonly lookup: Compilation['pipelineLookup'];
  readonly tagTrigger: boolean;
  /** The tag, or the branch, that filters admit or refuse. */
  readonly triggerName: string;
  readonly legacySchedule: boolean;
  /** On a scheduled workflow's tick, its cron: only `triggers` with this cron admit. */
  readonly scheduledWorkflowCron?: string;
}

/** Plans the workflows of `root`; undefined when the config is refused before any is expanded. */
export function planWorkflows(c: Compilation, root: Obj, scope: Scope): PlannedWorkflows | undefined {
  const out: PlannedWorkflows = { plans: [], processedJobs: {}, processedWorkflows: { version: 2 } };
  let workflows = root.workflows;
  if (workflows === undefined && isObj(root.jobs) && has(root.jobs, 'build')) workflows = { workflow: { jobs: ['build'] } }; // version 2.0
  if (workflows !== undefined && !isObj(workflows)) c.report('workflows must be a map of workflow names to workflows', 'workflows', root, 'workflows');
  const all = isObj(workflows) ? workflows : {};
  const trigger = c.options.trigger;
  const tagTrigger = trigger.tag !== undefined;
  const facts: TriggerFacts = {
    lookup: c.pipelineLookup,
    tagTrigger,
    triggerName: tagTrigger ? trigger.tag! : (trigger.branch ?? trigger.pipeline?.branch ?? ''),
    legacySchedule: trigger.pipeline?.triggerSource === 'schedule',
    scheduledWorkflowCron: trigger.pipeline?.scheduledWorkflowCron,
  };
  if (!withinJobBound(c, all)) return undefined;

  for (const [wfName, wf] of Object.entries(all)) {
    if (wfName === 'version') continue;
    const wfPath = `workflows.${wfName}`;
    if (!isObj(wf)) {
      c.report('a workflow is a map with jobs', wfPath, all, wfName);
      continue;
    }
    if (wf.jobs !== undefined && !Array.isArray(wf.jobs)) {
      c.report('jobs of a workflow is a list of job names or {job: {…}} entries', `${wfPath}.jobs`, wf, 'jobs');
      continue;
    }
    const runs = runsForTrigger(c, wf, wfPath, facts);
    const instances = expandEntries(c, Array.isArray(wf.jobs) ? wf.jobs : [], wfPath, facts);
    if (instances.length > MAX_WORKFLOW_JOBS) {
      c.report(`workflow expands to ${instances.length} jobs; the limit is ${MAX_WORKFLOW_JOBS}`, wfPath, all, wfName);
      continue;
    }
    c.totalJobs += instances.length;
    if (c.totalJobs > MAX_TOTAL_JOBS) {
      c.report(`the config expands to more than ${MAX_TOTAL_JOBS} jobs across its workflows`, wfPath, all, wfName);
      break;
    }
    const names = nameInstances(c, instances, wfName);
    expandInstances(c, instances, scope, wfName);
    linkRequirements(c, instances, names, wfName);
    checkCycles(c, instances, names, wfName);
    out.processedWorkflows[wfName] = processedWorkflow(c, wf, instances, out.processedJobs);
    if (!runs) continue;
    const jobs = runningJobs(c, instances, names, facts);
    if (jobs.length) out.plans.push({ name: wfName, jobs });
  }
  return out;
}

/** Counts the jobs every workflow would expand to before expanding any (matrix sizes multiply). */
function withinJobBound(c: Compilation, workflows: Obj): boolean {
  let plannedJobs = 0;
  for (const [wfName, wf] of Object.entries(workflows)) {
    if (wfName === 'version' || !isObj(wf) || !Array.isArray(wf.jobs)) continue;
    for (const entry of wf.jobs) {
      const body = isObj(entry) ? Object.values(entry)[0] : undefined;
      const matrix = isObj(body) && isObj(body.matrix) && isObj(body.matrix.parameters) ? body.matrix.parameters : undefined;
      plannedJobs += matrix ? Object.values(matrix).reduce<number>((n, v) => n * (Array.isArray(v) ? v.length : 1), 1) : 1;
    }
    if (plannedJobs > MAX_TOTAL_JOBS) {
      c.report(`the config expands to more than ${MAX_TOTAL_JOBS} jobs across its workflows`, `workflows.${wfName}`, workflows, wfName);
      return false;
    }
  }
  return true;
}

/** Does the workflow run for this trigger (`when`, `unless`, legacy schedule triggers)? */
function runsForTrigger(c: Compilation, wf: Obj, wfPath: string, facts: TriggerFacts): boolean {
  let runs = true;
  for (const k of ['when', 'unless'] as const) {
    if (!has(wf, k)) continue;
    try {
      const v = evaluateLogic(wf[k], facts.lookup);
      if (k === 'when' ? !v : v) runs = false;
    } catch (error) {
      if (!(error instanceof LogicError)) throw error;
      c.report(error.message, `${wfPath}.${k}`, wf, k);
    }
  }
  if (facts.legacySchedule && !has(wf, 'triggers')) runs = false; // a legacy schedule runs only its own workflows
  if (has(wf, 'triggers')) {
    // Legacy scheduled workflows run only on their schedule, not on pushes.
    const schedules = Array.isArray(wf.triggers) ? wf.triggers : [];
    const onSchedule = facts.legacySchedule;
    let admitted = false;
    schedules.forEach((t, i) => {
      const s = isObj(t) ? t.schedule : undefined;
      if (!isObj(s) || typeof s.cron !== 'string') {
        c.report('a trigger is {schedule: {cron, filters}}', `${wfPath}.triggers[${i}]`, schedules, i);
        return;
      }
      if (facts.scheduledWorkflowCron !== undefined && s.cron !== facts.scheduledWorkflowCron) return;
      try {
        if (onSchedule && isObj(s.filters) && admitsName(s.filters.branches, facts.triggerName)) admitted = true;
        if (onSchedule && !isObj(s.filters)) admitted = true;
      } catch (error) {
        if (!(error instanceof LogicError)) throw error;
        c.report(error.message, `${wfPath}.triggers[${i}].schedule.filters`, s, 'filters');
      }
    });
    if (!admitted) runs = false;
  }
  return runs;
}

/** The workflow's job entries as instances: one per entry, or one per matrix combination. */
function expandEntries(c: Compilation, wfJobs: unknown[], wfPath: string, facts: TriggerFacts): Instance[] {
  const instances: Instance[] = [];
  // A map entry with several keys invokes each (the schema allows it).
  const flat: { raw: unknown; i: number }[] = [];
  wfJobs.forEach((entryRaw: unknown, i: number) => {
    if (isObj(entryRaw) && Object.keys(entryRaw).length > 1) for (const [k, v] of Object.entries(entryRaw)) flat.push({ raw: { [k]: v }, i });
    else flat.push({ raw: entryRaw, i });
  });
  flat.forEach(({ raw: entryRaw, i }) => {
    const p = `${wfPath}.jobs[${i}]`;
    let jobRef: string;
    let entry: Obj = {};
    let entryContainer: unknown = wfJobs;
    if (typeof entryRaw === 'string') jobRef = entryRaw;
    else if (isObj(entryRaw) && Object.keys(entryRaw).length === 1) {
      jobRef = Object.keys(entryRaw)[0];
      const e = entryRaw[jobRef];
      if (e !== null && e !== undefined && !isObj(e)) {
        c.report(`a workflow job entry is a name or {name: {requires, filters, …}}`, p, wfJobs, i);
        return;
      }
      entry = isObj(e) ? e : {};
      entryContainer = entry;
    } else {
      c.report('a workflow job entry is a name or a map with one key, the job name', p, wfJobs, i);
      return;
    }
    const ep = `${p}.${jobRef}`;
    const matrix = entry.matrix;
    let combos: Obj[] = [{}];
    let alias: string | undefined;
    if (matrix !== undefined) {
      if (!isObj(matrix) || !isObj(matrix.parameters)) {
        c.report('matrix is a map with parameters (each a list of values), and optional exclude and alias', `${ep}.matrix`, entry, 'matrix');
        return;
      }
      alias = matrix.alias !== undefined ? String(matrix.alias) : jobRef;
      for (const [k, vals] of Object.entries(matrix.parameters)) {
        const list = Array.isArray(vals) ? vals : [vals];
        const next: Obj[] = [];
        for (const combo of combos) for (const v of list) next.push({ ...combo, [k]: v });
        combos = next;
        if (combos.length > MAX_WORKFLOW_JOBS) {
          c.report(`matrix expands to more than ${MAX_WORKFLOW_JOBS} jobs`, `${ep}.matrix`, entry, 'matrix');
          return;
        }
      }
      const excludes = Array.isArray(matrix.exclude) ? matrix.exclude.filter(isObj) : [];
      combos = combos.filter((combo) => !excludes.some((ex) => Object.entries(ex).every(([k, v]) => JSON.stringify(combo[k]) === JSON.stringify(v)) && Object.keys(ex).length === Object.keys(combo).length));
    }
    for (const combo of combos) {
      const matrixEnv: SubstEnv = { matrix: combo, noParams: true, pipeline: facts.lookup };
      const sub = c.subst({ ...entry, matrix: undefined }, matrixEnv, ep) as Obj;
      delete sub.matrix;
      const type = sub.type === 'approval' ? 'approval' : 'build';
      const explicitName = sub.name !== undefined;
      const name = explicitName ? String(sub.name) : matrix !== undefined ? [jobRef, ...Object.values(combo).map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v)))].join('-') : jobRef;
      const args: Obj = { ...combo };
      for (const [k, v] of Object.entries(sub)) if (!WORKFLOW_JOB_KEYS.has(k)) args[k] = v;
      const contexts = filterList(sub.context);
      instances.push({
        name,
        jobRef,
        path: ep,
        entry: sub,
        entryContainer,
        type,
        requiresRaw: sub.requires,
        filters: sub.filters,
        contexts,
        ...(sub['serial-group'] !== undefined ? { serialGroup: String(sub['serial-group']) } : {}),
        aliases: alias !== undefined && alias !== name ? [alias] : [],
        args,
        matrixEnv,
        explicitName,
        requires: [],
      });
    }
  });
  return instances;
}

interface Names {
  readonly byName: Map<string, Instance>;
  readonly byAlias: Map<string, Instance[]>;
}

/** Names repeated invocations (`name-1`, `name-2`, …) and indexes instances by name and alias. */
function nameInstances(c: Compilation, instances: Instance[], wfName: string): Names {
  const unnamed = new Map<string, Instance[]>();
  for (const inst of instances) if (!inst.explicitName && inst.aliases.length === 0 && inst.name === inst.jobRef) unnamed.set(inst.name, [...(unnamed.get(inst.name) ?? []), inst]);
  for (const [base, list] of unnamed) {
    if (list.length < 2) continue;
    list.forEach((inst, k) => {
      inst.name = `${base}-${k + 1}`;
      inst.aliases.push(base);
    });
  }
  const byName = new Map<string, Instance>();
  const byAlias = new Map<string, Instance[]>();
  for (const inst of instances) {
    if (byName.has(inst.name)) c.report(`job name '${inst.name}' is used twice in workflow ${wfName}; give one a different name:`, inst.path, inst.entryContainer);
    byName.set(inst.name, inst);
    for (const a of inst.aliases) byAlias.set(a, [...(byAlias.get(a) ?? []), inst]);
  }
  return { byName, byAlias };
}

/** Expands every job (errors are reported whether or not this trigger runs it). */
function expandInstances(c: Compilation, instances: Instance[], scope: Scope, wfName: string): void {
  for (const inst of instances) {
    if (inst.type === 'approval') continue;
    // override-with: an orb job of that name replaces the job when the orb has one; otherwise the
    // job's own definition is the fallback.
    const override = inst.entry['override-with'];
    const overridden = typeof override === 'string' ? tryLookup(scope, 'jobs', override) : undefined;
    const el = overridden ?? lookupElement(c, scope, 'jobs', inst.jobRef, inst.path, inst.entryContainer);
    if (!el) continue;
    const r = expandJob(c, el, inst.args, inst.path, inst.entryContainer, scope, inst.entry['pre-steps'], inst.entry['post-steps'], c.envFor(scope, new Map(), `workflow ${wfName}`));
    inst.type = r.kind;
    inst.spec = r.spec;
    inst.processed = r.processed;
  }
}

function linkRequirements(c: Compilation, instances: Instance[], { byName, byAlias }: Names, wfName: string): void {
  for (const inst of instances) {
    const raw = inst.requiresRaw;
    if (raw === undefined || raw === null) continue;
    const list = Array.isArray(raw) ? raw : [raw];
    list.forEach((item, i) => {
      const rp = `${inst.path}.requires[${i}]`;
      const entries: [string, unknown][] = typeof item === 'string' ? [[item, 'success']] : isObj(item) ? Object.entries(item) : [];
      if (entries.length === 0) c.report('a requires entry is a job name or {job-name: status}', rp, list, i);
      for (const [ref, st] of entries) {
        const statuses = filterList(st);
        for (const s of statuses) {
          if (!STATUSES.includes(s as RequiredStatus)) c.report(`requires status '${s}' is not allowed; allowed: ${STATUSES.join(', ')}`, rp, list, i);
        }
        const valid = statuses.filter((s) => STATUSES.includes(s as RequiredStatus)) as RequiredStatus[];
        const targets = byName.has(ref) ? [byName.get(ref)!] : (byAlias.get(ref) ?? []);
        if (targets.length === 0) {
          c.report(`job '${inst.name}' requires '${ref}', which is not a job in workflow ${wfName}`, rp, list, i);
          continue;
        }
        for (const t of targets) {
          if (t === inst) c.report(`job '${inst.name}' requires itself`, rp, list, i);
          else inst.requires.push({ job: t.name, statuses: valid.length ? valid : ['success'] });
        }
      }
    });
  }
}

function checkCycles(c: Compilation, instances: Instance[], { byName }: Names, wfName: string): void {
  const state = new Map<string, 1 | 2>();
  const visit = (inst: Instance, stack: string[]): void => {
    const s = state.get(inst.name);
    if (s === 2) return;
    if (s === 1) {
      c.report(`workflow ${wfName} has a cycle in requires: ${[...stack, inst.name].join(' -> ')}`, inst.path, inst.entryContainer);
      return;
    }
    state.set(inst.name, 1);
    for (const r of inst.requires) {
      const t = byName.get(r.job);
      if (t) visit(t, [...stack, inst.name]);
    }
    state.set(inst.name, 2);
  };
  for (const inst of instances) visit(inst, []);
}

/** The workflow as the processed config writes it; its build jobs are added to `processedJobs`. */
function processedWorkflow(c: Compilation, wf: Obj, instances: Instance[], processedJobs: Obj): Obj {
  // Two instances may share a job key only when their processed jobs are the same.
  const texts = new WeakMap<object, string>();
  const text = (o: unknown): string => {
    if (o === null || typeof o !== 'object') return JSON.stringify(o);
    let t = texts.get(o);
    if (t === undefined) texts.set(o, (t = JSON.stringify(o)));
    return t;
  };
  return {
    ...(has(wf, 'when') ? { when: wf.when } : {}),
    ...(has(wf, 'unless') ? { unless: wf.unless } : {}),
    ...(has(wf, 'triggers') ? { triggers: wf.triggers } : {}),
    jobs: instances.map((inst) => {
      // Keys of the processed jobs map must be valid job names; the workflow entry keeps the real name.
      let jobKey = inst.name.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^[^A-Za-z]+/, '') || 'job';
      if (inst.type === 'no-op') processedJobs[jobKey] = { type: 'no-op' };
      if (inst.processed && inst.type === 'build') {
        const existing = processedJobs[jobKey];
        if (existing !== undefined && text(existing) !== text(inst.processed)) {
          let k = 2;
          const base = jobKey;
          while (processedJobs[`${base}-${k}`] !== undefined && text(processedJobs[`${base}-${k}`]) !== text(inst.processed)) {
            c.budget.tick(() => inst.path);
            k++;
          }
          jobKey = `${base}-${k}`;
        }
        processedJobs[jobKey] = inst.processed;
      }
      const body: Obj = {};
      if (jobKey !== inst.name || inst.type === 'approval') body.name = inst.name;
      if (inst.type === 'approval') body.type = 'approval';
      if (inst.requires.length) body.requires = inst.requires.map((r) => (r.statuses.length === 1 && r.statuses[0] === 'success' ? r.job : { [r.job]: r.statuses.length === 1 ? r.statuses[0] : r.statuses }));
      if (inst.contexts.length) body.context = inst.contexts;
      if (inst.filters !== undefined) body.filters = inst.filters;
      if (inst.serialGroup) body['serial-group'] = inst.serialGroup;
      const key = inst.type === 'approval' ? inst.jobRef : jobKey;
      c.budget.place(body, inst.path);
      return Object.keys(body).length ? { [key]: body } : key;
    }),
  };
}

/** The jobs that run for this trigger: filters, the tag rule and the filtered-requires cascade. */
function runningJobs(c: Compilation, instances: Instance[], { byName }: Names, facts: TriggerFacts): JobPlan[] {
  const { tagTrigger, triggerName } = facts;
  const admitted = new Map<string, boolean>();
  for (const inst of instances) {
    let ok: boolean;
    try {
      const f = inst.filters;
      if (typeof f === 'string') ok = truthy(evaluateExpression(f, facts.lookup));
      else if (f !== undefined && f !== null && !isObj(f)) {
        c.report('filters is a map with branches and tags (or an expression string)', `${inst.path}.filters`, inst.entry, 'filters');
        ok = false;
      } else if (tagTrigger) ok = isObj(f) && isObj(f.tags) ? admitsName(f.tags, triggerName) : false;
      else ok = isObj(f) ? admitsName(f.branches, triggerName) : true;
      if (isObj(f)) {
        // Regexes are checked even when this trigger does not use them.
        for (const k of ['branches', 'tags']) {
          const x = f[k];
          if (isObj(x)) for (const pat of [...filterList(x.only), ...filterList(x.ignore)]) if (pat.length >= 2 && pat.startsWith('/') && pat.endsWith('/')) regexMatchesWhole(pat, '');
        }
      }
    } catch (error) {
      if (!(error instanceof LogicError)) throw error;
      c.report(error.message, `${inst.path}.filters`, inst.entry, 'filters');
      ok = false;
    }
    admitted.set(inst.name, ok);
  }
  const runsMemo = new Map<string, Requirement[] | null>();
  const resolveRun = (inst: Instance, guard: number): Requirement[] | null => {
    if (runsMemo.has(inst.name)) return runsMemo.get(inst.name)!;
    runsMemo.set(inst.name, null); // cycles were reported above; treat as not running
    if (!admitted.get(inst.name) || guard > instances.length) return null;
    const kept = inst.requires.filter((r) => {
      const t = byName.get(r.job);
      return t !== undefined && resolveRun(t, guard + 1) !== null;
    });
    let result: Requirement[] | null = kept;
    if (inst.requires.length > 0) {
      // On a tag every upstream job must run too; on a branch, a job runs while any requirement does.
      if (tagTrigger ? kept.length !== inst.requires.length : kept.length === 0) result = null;
    }
    runsMemo.set(inst.name, result);
    return result;
  };
  const jobs: JobPlan[] = [];
  for (const inst of instances) {
    const req = resolveRun(inst, 0);
    if (req === null) continue;
    jobs.push({
      name: inst.name,
      type: inst.type,
      requires: req,
      contexts: inst.contexts,
      ...(inst.type === 'build' && inst.spec ? { spec: inst.spec } : {}),
      ...(inst.serialGroup ? { serialGroup: inst.serialGroup } : {}),
    });
  }
  return jobs;
}
