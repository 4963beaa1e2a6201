import type { Router } from '../api/router';
import { InputError, PermissionError } from '../domain/errors';
import { compileConfig } from './compiler';
import type { OrbRegistry } from './orb-registry';
import type { PipelineValues } from './plan';

interface CompileBody {
  config_yaml?: unknown;
  options?: { owner_id?: unknown; pipeline_values?: Record<string, unknown>; pipeline_parameters?: Record<string, unknown> };
}

/** Maps the `pipeline_values` the circleci CLI sends (`pipeline.git.branch`, …) onto ours. */
function pipelineValuesFrom(v: Record<string, unknown> | undefined): PipelineValues {
  const s = (k: string) => (v && v[k] !== undefined && v[k] !== null ? String(v[k]) : undefined);
  const number = v?.['pipeline.number'];
  return {
    ...(s('pipeline.id') ? { id: s('pipeline.id') } : {}),
    ...(number !== undefined && Number.isFinite(Number(number)) ? { number: Number(number) } : {}),
    ...(s('pipeline.project.git_url') ? { projectGitUrl: s('pipeline.project.git_url') } : {}),
    ...(s('pipeline.project.type') ? { projectType: s('pipeline.project.type') } : {}),
    ...(s('pipeline.git.revision') ? { revision: s('pipeline.git.revision') } : {}),
    ...(s('pipeline.git.base_revision') ? { baseRevision: s('pipeline.git.base_revision') } : {}),
    ...(s('pipeline.git.branch') ? { branch: s('pipeline.git.branch') } : {}),
    ...(s('pipeline.git.tag') ? { tag: s('pipeline.git.tag') } : {}),
    ...(s('pipeline.trigger_source') ? { triggerSource: s('pipeline.trigger_source') } : {}),
  };
}

export function registerConfigRoutes(router: Router, deps: { orbs: OrbRegistry }): void {
  // What `circleci config validate|process --host <gyre>` calls.
  router.post('/api/v2/compile-config-with-defaults', async (ctx) => {
    const body = await ctx.body<CompileBody>();
    if (typeof body.config_yaml !== 'string') throw new InputError('config_yaml must be a string holding the config', 'config_yaml');
    const values = pipelineValuesFrom(body.options?.pipeline_values);
    const params = body.options?.pipeline_parameters ?? {};
    if (params === null || typeof params !== 'object' || Array.isArray(params)) throw new InputError('options.pipeline_parameters must be an object', 'options.pipeline_parameters');
    for (const [k, v] of Object.entries(params)) {
      if (!['string', 'number', 'boolean'].includes(typeof v)) throw new InputError(`pipeline parameter ${k} must be a string, number or boolean`, 'options.pipeline_parameters');
    }
    const result = await compileConfig(body.config_yaml, {
      trigger: {
        ...(values.tag ? { tag: values.tag } : { branch: values.branch ?? 'main' }),
        parameters: params as Record<string, string | number | boolean>,
        pipeline: values,
      },
      orbs: deps.orbs,
    });
    if (result.ok) return { json: { valid: true, 'source-yaml': body.config_yaml, 'output-yaml': result.compiledYaml, errors: [] } };
    return {
      json: {
        valid: false,
        'source-yaml': body.config_yaml,
        'output-yaml': '',
        errors: result.problems.map((p) => ({ message: `${p.line ? `line ${p.line}:${p.column ?? 1}: ` : ''}${p.path ? `${p.path}: ` : ''}${p.message}` })),
      },
    };
  });

  router.post('/api/v2/orbs', async (ctx) => {
    if (!ctx.principal?.isAdmin) throw new PermissionError('importing orbs needs an administrator');
    const body = await ctx.body<{ name?: unknown; version?: unknown; source?: unknown }>();
    await deps.orbs.publish(body.name as string, body.version as string, body.source as string);
    return { status: 201, json: { name: body.name, version: body.version } };
  });

  router.get('/api/v2/orbs', async () => {
    const items = await deps.orbs.list();
    return { json: { items: items.map((o) => ({ name: o.name, version: o.version, created_at: o.createdAt })) } };
  });
}
