import { compileConfig } from '../../runtime/config/compiler';
import { createMemoryOrbSource } from '../../runtime/config/orb-registry';
import type { CompileResult, JobPlan, TriggerContext } from '../../runtime/config/plan';

export const orbs = createMemoryOrbSource();

export async function compile(yaml: string, trigger: TriggerContext = { branch: 'main' }): Promise<CompileResult> {
  return compileConfig(yaml, { trigger, orbs });
}

/** Compiles and fails the test with the problems when the config is not valid. */
export async function plan(yaml: string, trigger: TriggerContext = { branch: 'main' }) {
  const r = await compile(yaml, trigger);
  if (!r.ok) throw new Error(`expected a valid config, got:\n${r.problems.map((p) => `${p.line}:${p.column} ${p.path} ${p.message}`).join('\n')}`);
  return r;
}

export async function problems(yaml: string, trigger: TriggerContext = { branch: 'main' }) {
  const r = await compile(yaml, trigger);
  if (r.ok) throw new Error('expected problems, the config compiled');
  return r.problems;
}

export async function job(yaml: string, name: string, trigger?: TriggerContext): Promise<JobPlan> {
  const r = await plan(yaml, trigger);
  const found = r.plan.workflows.flatMap((w) => w.jobs).find((j) => j.name === name);
  if (!found) throw new Error(`no job ${name} in plan`);
  return found;
}

/** `{workflow: ["job <- req", …]}` for the jobs that run. */
export async function shape(yaml: string, trigger?: TriggerContext): Promise<Record<string, string[]>> {
  const r = await plan(yaml, trigger);
  return Object.fromEntries(
    r.plan.workflows.map((w) => [w.name, w.jobs.map((j) => (j.requires.length ? `${j.name} <- ${j.requires.map((q) => q.job).join(',')}` : j.name))]),
  );
}

export const DOCKER = `docker: [{image: cimg/base:stable}]`;
