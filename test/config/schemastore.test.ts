import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { compileConfig } from '../../runtime/config/compiler';
import { loadYaml, Positions } from '../../runtime/config/yaml-loader';
import { emitYaml } from '../../runtime/config/emit-yaml';
import { CORPUS, corpusOrbSource } from './corpus';

const POSITIVE = path.join(CORPUS, 'schemastore/positive');
const NEGATIVE = path.join(CORPUS, 'schemastore/negative');
const present = existsSync(POSITIVE) && existsSync(NEGATIVE);
if (!present) console.warn(`skipping the SchemaStore fixtures: ${path.join(CORPUS, 'schemastore')} is absent`);
const positives = present ? readdirSync(POSITIVE).sort() : ['(absent)'];
const negatives = present ? readdirSync(NEGATIVE).sort() : ['(absent)'];
const orbs = present ? corpusOrbSource(positives.map((f) => path.join(POSITIVE, f))) : undefined;
const describeFixtures = present ? describe : describe.skip;

/**
 * SchemaStore's fixtures test a JSON schema, so some reference jobs and pipeline parameters they never
 * define (the schema cannot tell). A compiler must reject those, so for the positive fixtures the test
 * defines each missing job as a one-step docker job and each missing pipeline parameter as a boolean;
 * everything else in the file is compiled as written.
 */
function completeSchemaFixture(text: string): string {
  const doc = loadYaml(text, new Positions()).value as Record<string, any>;
  const jobs: Record<string, unknown> = { ...(doc.jobs ?? {}) };
  for (const wf of Object.values<any>(doc.workflows ?? {})) {
    for (const entry of Array.isArray(wf?.jobs) ? wf.jobs : []) {
      const entries = typeof entry === 'string' ? [[entry, {}]] : Object.entries(entry);
      for (const [name, body] of entries as [string, any][]) {
        if (name.includes('/') || jobs[name] || body?.type === 'approval') continue;
        const reserved = ['requires', 'name', 'context', 'filters', 'matrix', 'type', 'pre-steps', 'post-steps', 'serial-group', 'override-with'];
        const matrixParams = [...Object.keys(body?.matrix?.parameters ?? {}), ...Object.keys(body ?? {}).filter((k) => !reserved.includes(k))];
        jobs[name] = {
          ...(matrixParams.length ? { parameters: Object.fromEntries(matrixParams.map((p) => [p, { type: 'string' }])) } : {}),
          docker: [{ image: 'cimg/base:stable' }],
          steps: [{ run: `echo ${name}` }],
        };
      }
    }
  }
  const params: Record<string, unknown> = { ...(doc.parameters ?? {}) };
  for (const m of text.matchAll(/<<\s*pipeline\.parameters\.([\w-]+)\s*>>/g)) params[m[1]] ??= { type: 'boolean', default: false };
  return emitYaml({ ...doc, ...(Object.keys(jobs).length ? { jobs } : {}), ...(Object.keys(params).length ? { parameters: params } : {}) });
}

describeFixtures('SchemaStore positive fixtures', () => {
  it.each(positives.filter((f) => f !== 'chromeless.json'))('%s compiles', async (file) => {
    const r = await compileConfig(completeSchemaFixture(readFileSync(path.join(POSITIVE, file), 'utf8')), { trigger: { branch: 'main' }, orbs });
    expect(r.ok ? [] : r.problems).toEqual([]);
  });

  it('chromeless.json passes an argument its command does not declare, and that is named', async () => {
    // The schema cannot know command parameters; CircleCI rejects the unexpected argument.
    const r = await compileConfig(readFileSync(path.join(POSITIVE, 'chromeless.json'), 'utf8'), { trigger: { branch: 'main' }, orbs });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.map((p) => p.message).join('\n')).toMatch(/no parameter 'gcloud-service-key' \(declared: gcloud_service_key\)/);
  });
});

describeFixtures('SchemaStore negative fixtures', () => {
  const expected: Record<string, RegExp> = {
    'conflicting-resource-class.yml': /resource_class is given both inside machine and beside it/,
    'invalid-job-name-format.yml': /job name 'this_name_is valid until \. or , then bye_bye' must start with a letter/,
    'invalid-machine-executor-1.yml': /windows\.2xlarge needs a Windows machine image/,
    'invalid-machine-executor-2.yml': /medium is not a macOS resource class/,
    'invalid-workflow-job-requires.yml': /requires status 'invalid_job_status' is not allowed/,
  };
  it('covers every negative fixture', () => {
    expect(Object.keys(expected).sort()).toEqual(negatives);
  });
  it.each(negatives)('%s is rejected with a message, path and position', async (file) => {
    const r = await compileConfig(readFileSync(path.join(NEGATIVE, file), 'utf8'), { trigger: { branch: 'main' }, orbs });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const hit = r.problems.find((p) => expected[file].test(p.message));
    expect(hit).toBeDefined();
    expect(hit!.path).toBeTruthy();
    expect(hit!.line).toBeGreaterThan(0);
  });
});
