import { Type } from '@sinclair/typebox';
import { auditOf, type GyreApp } from '../api/http-app';
import type { OrbRegistry } from './orb-registry';
import type { CompileResult, PipelineValues, TriggerContext } from './plan';

/** Maps the `pipeline_values` the circleci CLI sends (`pipeline.git.branch`, …) onto ours. */
export function pipelineValuesFrom(v: Record<string, unknown> | undefined): PipelineValues {
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
    ...(eventOf(v) ? { event: eventOf(v) } : {}),
  };
}

/** The `pipeline.event.*` values among those the CLI sent, scalars only. */
function eventOf(v: Record<string, unknown> | undefined): Record<string, string | number | boolean> | undefined {
  const event = Object.fromEntries(
    Object.entries(v ?? {}).filter((e): e is [string, string | number | boolean] => e[0].startsWith('pipeline.event.') && ['string', 'number', 'boolean'].includes(typeof e[1])),
  );
  return Object.keys(event).length ? event : undefined;
}

export interface ConfigRouteDeps {
  readonly orbs: OrbRegistry;
  /** Compiles a config (with its orbs, within the compilation budgets, off the event loop). */
  readonly compile: (source: string, trigger: TriggerContext) => Promise<CompileResult>;
  /** Largest body the compile and orb routes take: a config of the compiler's largest size, as JSON. */
  readonly maxConfigBytes: number;
}

const Scalar = Type.Union([Type.String({ maxLength: 64 * 1024 }), Type.Number(), Type.Boolean()]);

export function registerConfigRoutes(app: GyreApp, deps: ConfigRouteDeps): void {
  // What `circleci config validate|process --host <gyre>` calls.
  app.post(
    '/api/v2/compile-config-with-defaults',
    {
      // A compilation changes nothing: not audited.
      config: { permission: 'authenticated', action: false },
      bodyLimit: deps.maxConfigBytes,
      schema: {
        body: Type.Object({
          config_yaml: Type.String(),
          options: Type.Optional(
            Type.Object({
              owner_id: Type.Optional(Type.Unknown()),
              pipeline_values: Type.Optional(Type.Record(Type.String({ maxLength: 256 }), Type.Unknown(), { maxProperties: 200 })),
              pipeline_parameters: Type.Optional(Type.Record(Type.String({ maxLength: 256 }), Scalar, { maxProperties: 1000 })),
            }),
          ),
        }),
      },
    },
    async (request) => {
      const body = request.body;
      const values = pipelineValuesFrom(body.options?.pipeline_values);
      const result = await deps.compile(body.config_yaml, {
        ...(values.tag ? { tag: values.tag } : { branch: values.branch ?? 'main' }),
        parameters: body.options?.pipeline_parameters ?? {},
        pipeline: values,
      });
      if (result.ok) return { valid: true, 'source-yaml': body.config_yaml, 'output-yaml': result.compiledYaml, errors: [] };
      return {
        valid: false,
        'source-yaml': body.config_yaml,
        'output-yaml': '',
        errors: result.problems.map((p) => ({ message: `${p.line ? `line ${p.line}:${p.column ?? 1}: ` : ''}${p.path ? `${p.path}: ` : ''}${p.message}` })),
      };
    },
  );

  app.post(
    '/api/v2/orbs',
    { config: { permission: 'instance:admin', action: 'orb.import' }, bodyLimit: deps.maxConfigBytes, schema: { body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 300 }), version: Type.String({ minLength: 1, maxLength: 100 }), source: Type.String({ minLength: 1 }) }) } },
    async (request, reply) => {
      const { name, version, source } = request.body;
      await deps.orbs.publish(name, version, source, auditOf(request));
      reply.code(201);
      return { name, version };
    },
  );

  app.get('/api/v2/orbs', { config: { permission: 'authenticated' } }, async () => {
    const items = await deps.orbs.list();
    return { items: items.map((o) => ({ name: o.name, version: o.version, created_at: o.createdAt })) };
  });
}
