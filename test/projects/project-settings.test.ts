import Ajv from 'ajv';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createProjects, type Projects } from '../../runtime/projects/projects';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * CircleCI's project settings (`GET`/`PATCH /api/v2/project/{slug}/settings`), those Gyre has:
 * their defaults, each one changed on its own, what is refused, and the audit record of a change.
 * The same values are what `Projects.get` gives the code that acts on them (auto-cancel, the GitHub
 * webhook). On PGlite and, with DATABASE_URL, on PostgreSQL: both run the migration that adds them.
 */

/** CircleCI's `project_settings` (circleci-api-v2.openapi.json, components.schemas). */
const PROJECT_SETTINGS = {
  type: 'object',
  additionalProperties: false,
  properties: {
    advanced: {
      type: 'object',
      additionalProperties: false,
      properties: {
        autocancel_builds: { type: 'boolean' },
        build_fork_prs: { type: 'boolean' },
        build_prs_only: { type: 'boolean' },
        disable_ssh: { type: 'boolean' },
        forks_receive_secret_env_vars: { type: 'boolean' },
        oss: { type: 'boolean' },
        set_github_status: { type: 'boolean' },
        setup_workflows: { type: 'boolean' },
        write_settings_requires_admin: { type: 'boolean' },
        pr_only_branch_overrides: { type: 'array', items: { type: 'string' } },
      },
    },
  },
};
const isProjectSettings = new Ajv({ strict: false }).compile(PROJECT_SETTINGS);

const DEFAULTS = {
  autocancel_builds: false,
  build_fork_prs: false,
  build_prs_only: false,
  forks_receive_secret_env_vars: false,
  set_github_status: true,
};
/** Each setting's name in the API and on the Project. */
const FIELDS = {
  autocancel_builds: 'autocancelBuilds',
  build_fork_prs: 'buildForkPrs',
  build_prs_only: 'buildPrsOnly',
  forks_receive_secret_env_vars: 'forksReceiveSecretEnvVars',
  set_github_status: 'setGithubStatus',
} as const;
const NAMES = Object.keys(FIELDS) as (keyof typeof FIELDS)[];

describe.each(flowStore())('project settings (%s)', (store) => {
  let g: TestGyre;
  let projects: Projects;
  let forgeCache: string;
  const SETTINGS = '/api/v2/project/gh/acme/app/settings';

  beforeAll(async () => {
    g = await startTestGyre({ store });
    await g.addProject('gh/acme/app', { '.circleci/config.yml': 'version: 2.1\n' });
    forgeCache = mkdtempSync(join(tmpdir(), 'gyre-settings-forge-'));
    projects = createProjects({ store: g.gyre.store, forge: createGitForge({ cacheDir: forgeCache }) });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    if (forgeCache) rmSync(forgeCache, { recursive: true, force: true });
  });

  const patch = (advanced: unknown) => g.raw('PATCH', SETTINGS, { body: JSON.stringify({ advanced }) });

  it('a new project has CircleCI’s defaults, answered in the spec’s shape, and the Project says the same', async () => {
    const settings = await g.api('GET', SETTINGS);
    expect(settings).toEqual({ advanced: DEFAULTS });
    expect(isProjectSettings(settings)).toBe(true);
    const project = await projects.get('gh/acme/app');
    for (const name of NAMES) expect([name, project[FIELDS[name]]]).toEqual([name, DEFAULTS[name]]);
  });

  it.each(NAMES)('PATCH changes %s alone, answers every setting, and it stays changed', async (name) => {
    const flipped = { ...DEFAULTS, [name]: !DEFAULTS[name] };
    const changed = await patch({ [name]: !DEFAULTS[name] });
    expect(changed.status).toBe(200);
    expect(changed.body).toEqual({ advanced: flipped });
    expect(isProjectSettings(changed.body)).toBe(true);
    expect(await g.api('GET', SETTINGS)).toEqual({ advanced: flipped });
    expect((await projects.get('gh/acme/app'))[FIELDS[name]]).toBe(!DEFAULTS[name]);

    // Back again, so each case starts from the defaults.
    expect((await patch({ [name]: DEFAULTS[name] })).body).toEqual({ advanced: DEFAULTS });
    expect((await projects.get('gh/acme/app'))[FIELDS[name]]).toBe(DEFAULTS[name]);
  });

  it('several settings change in one PATCH; an empty one changes nothing', async () => {
    const both = await patch({ autocancel_builds: true, set_github_status: false });
    expect(both.body).toEqual({ advanced: { ...DEFAULTS, autocancel_builds: true, set_github_status: false } });
    expect((await g.raw('PATCH', SETTINGS, { body: '{}' })).body).toEqual(both.body);
    expect((await patch({})).body).toEqual(both.body);
    await patch(DEFAULTS);
    expect(await g.api('GET', SETTINGS)).toEqual({ advanced: DEFAULTS });
  });

  it('refuses a setting Gyre does not have, a value that is not a boolean, and an unknown field, naming it; nothing changes', async () => {
    // CircleCI has these; Gyre does not act on them, so it does not pretend to store them.
    for (const name of ['oss', 'disable_ssh', 'setup_workflows', 'incorrect']) {
      const refused = await g.raw('PATCH', SETTINGS, { body: JSON.stringify({ advanced: { autocancel_builds: true, [name]: true } }) });
      expect([name, refused.status]).toEqual([name, 400]);
      expect(refused.body.message).toContain(`'${name}'`);
    }
    for (const value of ['yes', 1, null, [true]]) {
      const refused = await patch({ build_prs_only: value });
      expect([value, refused.status]).toEqual([value, 400]);
      expect(refused.body.message).toMatch(/build_prs_only must be true or false/);
    }
    const root = await g.raw('PATCH', SETTINGS, { body: JSON.stringify({ incorrect: { autocancel_builds: true } }) });
    expect(root.status).toBe(400);
    expect(root.body.message).toContain(`'incorrect'`);
    expect((await g.raw('PATCH', SETTINGS, { body: JSON.stringify({ advanced: true }) })).status).toBe(400);
    expect(await g.api('GET', SETTINGS)).toEqual({ advanced: DEFAULTS });

    const missing = await g.raw('PATCH', '/api/v2/project/gh/acme/nope/settings', { body: JSON.stringify({ advanced: { autocancel_builds: true } }) });
    expect(missing.status).toBe(404);
    expect((await g.raw('GET', '/api/v2/project/gh/acme/nope/settings')).status).toBe(404);
  });

  it('a change is in the audit log, naming the settings it gave and their values; a refused one as failed', async () => {
    const since = new Date(Date.now() - 1000).toISOString();
    await patch({ autocancel_builds: true, build_fork_prs: true });
    await patch({ autocancel_builds: false, build_fork_prs: false });
    expect((await patch({ oss: true })).status).toBe(400);
    const items = (await g.api('GET', `/api/v2/audit?since=${encodeURIComponent(since)}&order=asc&limit=100`)).items.filter((i: any) => i.action === 'project.settings');
    expect(items.slice(-3)).toEqual([
      expect.objectContaining({ result: 'success', actor: expect.objectContaining({ login: 'admin' }), target: { type: 'project', id: 'gh/acme/app' }, project: 'gh/acme/app', detail: { autocancel_builds: true, build_fork_prs: true } }),
      expect.objectContaining({ result: 'success', target: { type: 'project', id: 'gh/acme/app' }, detail: { autocancel_builds: false, build_fork_prs: false } }),
      expect.objectContaining({ result: 'failed', status: 400, project: 'gh/acme/app', detail: expect.objectContaining({ message: expect.stringContaining(`'oss'`) }) }),
    ]);
  });
});
