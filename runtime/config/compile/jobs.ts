import type { JobSpec, Step } from '../plan';
import type { SubstEnv } from '../substitute';
import type { Compilation } from './compilation';
import { checkExecutorBody, executorSpec, resolveExecutor } from './executors';
import { envMap, EXECUTOR_KINDS, has, isObj, type Element, type Obj, type Scope } from './model';
import { bindParams } from './parameters';
import { expandSteps, processedStep, toPlanStep } from './steps';

/** Jobs: one invocation of a job element, with its executor merged and its steps expanded. */
export function expandJob(
  c: Compilation,
  element: Element,
  args: Obj,
  argsPath: string,
  argsContainer: unknown,
  caller: Scope,
  preSteps: unknown,
  postSteps: unknown,
  matrixEnv: SubstEnv,
): { spec?: JobSpec; processed: Obj; kind: 'build' | 'approval' | 'no-op' } {
  const def = element.def;
  if (!isObj(def)) {
    c.report(`${element.label} must be a map`, element.path);
    return { processed: {}, kind: 'build' };
  }
  const declaredType = def.type;
  if (declaredType === 'approval') return { processed: { type: 'approval' }, kind: 'approval' };
  if (declaredType === 'no-op') return { processed: { type: 'no-op' }, kind: 'no-op' };
  const params = bindParams(c, element, args, argsPath, argsContainer, caller, 0);
  const env = c.envFor(element.scope, params, element.label);
  const raw = { ...def };
  delete raw.parameters;
  delete raw.description;
  const body = c.subst(raw, env, element.path) as Obj;
  c.positions.copy(def, body);

  // Executor: a reusable one merged under the job's own keys; environments merge, the job winning.
  let merged: Obj = body;
  // An executor that did not resolve was reported where it is named (or its orb is missing).
  let executorUnresolved = false;
  const jobKinds = EXECUTOR_KINDS.filter((k) => has(body, k));
  if (has(body, 'executor')) {
    const base = resolveExecutor(c, body.executor, element.scope, `${element.path}.executor`, body, 'executor', 0);
    executorUnresolved = Object.keys(base).length === 0;
    // The job's own executor keys replace the executor's (a job may swap the image of a reusable executor).
    const baseKept = jobKinds.length ? Object.fromEntries(Object.entries(base).filter(([k]) => !(EXECUTOR_KINDS as readonly string[]).includes(k))) : base;
    merged = { ...baseKept, ...body };
    delete merged.executor;
    if (isObj(base.environment) || isObj(body.environment)) {
      merged.environment = { ...envMap(base.environment), ...envMap(body.environment) };
    }
    c.positions.copy(body, merged);
  }
  // The job's own keys are placed in the expanded config as they are (its steps are placed one by one as they expand).
  for (const [k, v] of Object.entries(merged)) if (k !== 'steps') c.budget.place(v, `${element.path}.${k}`);
  checkExecutorBody(c, merged, element.path);
  const kinds = EXECUTOR_KINDS.filter((k) => has(merged, k));
  if (kinds.length === 0 && !executorUnresolved) c.report(`${element.label} has no executor: give it docker, machine, macos or executor`, element.path, def);

  const pre = expandSteps(c, preSteps ?? [], caller, `${argsPath}.pre-steps`, 1, matrixEnv);
  if (body.steps === undefined) c.report(`${element.label} has no steps`, element.path, def);
  const steps = expandSteps(c, body.steps, element.scope, `${element.path}.steps`, 1, env);
  const post = expandSteps(c, postSteps ?? [], caller, `${argsPath}.post-steps`, 1, matrixEnv);
  const all = [...pre, ...steps, ...post];

  const planSteps = all.map((s) => toPlanStep(c, s)).filter((s): s is Step => s !== undefined);
  let parallelism = 1;
  if (merged.parallelism !== undefined) {
    const n = typeof merged.parallelism === 'string' ? Number(merged.parallelism) : merged.parallelism;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) c.report(`parallelism must be a positive integer, not ${JSON.stringify(merged.parallelism)}`, `${element.path}.parallelism`, body, 'parallelism');
    else parallelism = n;
  }
  const spec: JobSpec = {
    executor: executorSpec(merged),
    steps: planSteps,
    environment: envMap(merged.environment),
    workingDirectory: typeof merged.working_directory === 'string' ? merged.working_directory : '~/project',
    parallelism,
    ...(merged.resource_class !== undefined ? { resourceClass: String(merged.resource_class) } : {}),
    ...(typeof merged.shell === 'string' ? { shell: merged.shell } : {}),
  };
  const processed: Obj = {};
  for (const [k, v] of Object.entries(merged)) {
    if (k === 'steps' || k === 'type') continue;
    processed[k] = v;
  }
  processed.steps = all.map(processedStep);
  return { spec, processed, kind: 'build' };
}
