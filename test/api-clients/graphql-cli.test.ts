/**
 * `POST /graphql-unstable` answering the operations the circleci CLI sends (test/fixtures/circleci-cli/:
 * each its operation, variables and fields, in graphql-js's printed form, naming the CLI command), with
 * the variables the CLI sets and its bare `Authorization: <token>` header. The CLI binary itself
 * is not on npm (only its Go source is published), so the documents are sent from here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestGyre, type TestGyre } from '../support/gyre';

const FIXTURES = join(__dirname, '..', 'fixtures', 'circleci-cli');
/** A fixture's document without the header comment that says what it is. */
const doc = (name: string) =>
  readFileSync(join(FIXTURES, name), 'utf8')
    .split('\n')
    .filter((line, i, lines) => !(line.startsWith('# ') && lines.slice(0, i).every((l) => l.startsWith('# '))))
    .join('\n');

const GREET_1 = `version: 2.1
description: Greets someone
commands:
  hello:
    parameters:
      to: { type: string, default: world }
    steps:
      - run: echo "hello << parameters.to >>"
`;
const GREET_2 = GREET_1.replace('hello << parameters.to >>', 'hi there << parameters.to >>');
const TOOL = `version: 2.1
jobs:
  lint:
    docker: [{ image: cimg/base:stable }]
    steps: [{ run: echo lint }]
`;

const CONFIG = `version: 2.1
orbs:
  greet: gyre/greet@1.1.0
parameters:
  who: { type: string, default: nobody }
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - greet/hello: { to: << pipeline.parameters.who >> }
workflows:
  main: { jobs: [build] }
`;

describe('the circleci CLI GraphQL queries (/graphql-unstable)', () => {
  let g: TestGyre;
  let dev: string;

  /** Sends a document as the CLI does: JSON {query, variables}, the token as a bare Authorization header. */
  const gql = async (query: string, variables: Record<string, unknown> = {}, token: string | null = dev) => {
    const res = await fetch(`${g.url}/graphql-unstable`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json; charset=utf-8', Accept: 'application/json; charset=utf-8', ...(token ? { Authorization: token } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    return { status: res.status, body: (await res.json()) as { data?: any; errors?: { message: string }[] } };
  };

  beforeAll(async () => {
    g = await startTestGyre();
    await g.api('POST', '/api/v2/orbs', { name: 'gyre/greet', version: '1.0.0', source: GREET_1 });
    await g.api('POST', '/api/v2/orbs', { name: 'gyre/greet', version: '1.1.0', source: GREET_2 });
    await g.api('POST', '/api/v2/orbs', { name: 'other/tool', version: '0.1.0', source: TOOL });
    dev = (await g.api('POST', '/api/v2/users', { login: 'dev' })).token;
  }, 60_000);

  afterAll(async () => {
    await g?.stop();
  });

  it('config validate / process: compiles with the orb registry, and reports a bad config', async () => {
    const ok = await gql(doc('config-validate.graphql'), { config: CONFIG, next: false, pipelineValues: [{ key: 'pipeline.git.branch', val: 'main' }, { key: 'pipeline.number', val: 7 }] });
    expect(ok.status).toBe(200);
    expect(ok.body.errors).toBeUndefined();
    expect(ok.body.data.buildConfig).toMatchObject({ valid: true, errors: [], sourceYaml: CONFIG });
    expect(ok.body.data.buildConfig.outputYaml).toContain('hi there nobody');

    const bad = await gql(doc('config-validate.graphql'), { config: CONFIG.replace('gyre/greet@1.1.0', 'gyre/missing@1.0.0'), next: false });
    expect(bad.body.data.buildConfig.valid).toBe(false);
    expect(bad.body.data.buildConfig.errors[0].message).toMatch(/gyre\/missing/);
  });

  it('config process with pipeline parameters, and with --org-id (a variable the CLI never declares)', async () => {
    const withParams = await gql(doc('config-validate-with-parameters.graphql'), { config: CONFIG, next: false, pipelineParametersJson: JSON.stringify({ who: 'ada' }) });
    expect(withParams.body.data.buildConfig.outputYaml).toContain('hi there ada');
    const withOrg = await gql(doc('config-validate-with-org-id.graphql'), { config: CONFIG, next: false, orgId: '123e4567-e89b-12d3-a456-426614174000' });
    expect(withOrg.body.errors).toBeUndefined();
    expect(withOrg.body.data.buildConfig.valid).toBe(true);
    const badParams = await gql(doc('config-validate-with-parameters.graphql'), { config: CONFIG, next: false, pipelineParametersJson: '[1,2' });
    expect(badParams.body.errors?.[0].message).toMatch(/pipelineParametersJson must be a JSON object/);
  });

  it('orb validate: a good orb is valid, a bad one says why', async () => {
    const ok = await gql(doc('orb-validate.graphql'), { config: GREET_1 });
    expect(ok.body.data.orbConfig).toMatchObject({ valid: true, errors: [], sourceYaml: GREET_1, outputYaml: GREET_1 });
    const bad = await gql(doc('orb-validate.graphql'), { config: 'version: 2.1\nworkflows: {}\n' });
    expect(bad.body.data.orbConfig.valid).toBe(false);
    expect(bad.body.data.orbConfig.errors[0].message).toMatch(/unknown top-level keys: workflows/);
  });

  it('orb source: by version, the newest (volatile), and none for an orb not in the registry', async () => {
    const exact = await gql(doc('orb-source.graphql'), { orbVersionRef: 'gyre/greet@1.0.0' });
    expect(exact.body.data.orbVersion).toMatchObject({ version: '1.0.0', source: GREET_1, id: expect.stringMatching(/^[0-9a-f-]{36}$/), orb: { id: expect.any(String) } });
    const newest = await gql(doc('orb-source.graphql'), { orbVersionRef: 'gyre/greet@volatile' });
    expect(newest.body.data.orbVersion).toMatchObject({ version: '1.1.0', source: GREET_2 });
    const missing = await gql(doc('orb-source.graphql'), { orbVersionRef: 'gyre/nope@volatile' });
    expect(missing.body).toEqual({ data: { orbVersion: null } });
  });

  it('orb info: the orb, its namespace and its versions newest first', async () => {
    const info = await gql(doc('orb-info.graphql'), { orbVersionRef: 'gyre/greet@1.0.0' });
    const v = info.body.data.orbVersion;
    expect(v).toMatchObject({ version: '1.0.0', source: GREET_1, orb: { name: 'gyre/greet', namespace: { name: 'gyre' }, categories: [] } });
    expect(v.orb.versions.map((x: any) => x.version)).toEqual(['1.1.0', '1.0.0']);
    expect(new Date(v.orb.versions[0].createdAt).getTime()).toBeGreaterThan(0);
    expect(v.orb.statistics).toEqual({ last30DaysBuildCount: 0, last30DaysProjectCount: 0, last30DaysOrganizationCount: 0 });
  });

  it('orb list: every orb with its newest version, paged by cursor', async () => {
    const page = await gql(doc('orb-list.graphql'), { after: '', certifiedOnly: true });
    expect(page.body.data.orbs.totalCount).toBe(2);
    expect(page.body.data.orbs.edges.map((e: any) => [e.node.name, e.node.versions[0].version])).toEqual([
      ['gyre/greet', '1.1.0'],
      ['other/tool', '0.1.0'],
    ]);
    expect(page.body.data.orbs.edges[0].node.versions[0].source).toBe(GREET_2);
    expect(page.body.data.orbs.pageInfo).toEqual({ hasNextPage: false });
    const after = await gql(doc('orb-list.graphql'), { after: 'gyre/greet', certifiedOnly: false });
    expect(after.body.data.orbs.edges.map((e: any) => e.node.name)).toEqual(['other/tool']);
  });

  it("a namespace's orbs, an orb's latest version, whether it exists, and the (empty) categories", async () => {
    const versions = await gql(doc('namespace-orbs.graphql'), { namespace: 'gyre', after: '' });
    expect(versions.body.data.registryNamespace).toMatchObject({ name: 'gyre', id: expect.any(String) });
    expect(versions.body.data.registryNamespace.orbs.edges.map((e: any) => [e.node.name, e.node.versions[0].version])).toEqual([['gyre/greet', '1.1.0']]);
    const listed = await gql(doc('namespace-orbs-list.graphql'), { namespace: 'gyre', after: '', view: 'PUBLIC_ONLY' });
    expect(listed.body.data.registryNamespace.orbs.edges[0].node.versions.map((x: any) => x.version)).toEqual(['1.1.0', '1.0.0']);
    const detailed = await gql(doc('namespace-orbs-list-details.graphql'), { namespace: 'gyre', after: '', view: 'PUBLIC_ONLY' });
    expect(detailed.body.data.registryNamespace.orbs.edges[0].node.versions).toEqual([{ source: GREET_2, version: '1.1.0' }]);
    const privateOnly = await gql(doc('namespace-orbs-list.graphql'), { namespace: 'gyre', after: '', view: 'PRIVATE_ONLY' });
    expect(privateOnly.body.data.registryNamespace.orbs.edges).toEqual([]);
    const noNamespace = await gql(doc('namespace-orbs.graphql'), { namespace: 'nobody', after: '' });
    expect(noNamespace.body.data.registryNamespace).toBeNull();

    const latest = await gql(doc('orb-latest-version.graphql'), { name: 'gyre/greet' });
    expect(latest.body.data.orb.versions).toEqual([{ version: '1.1.0' }]);
    const exists = await gql(doc('orb-exists.graphql'), { name: 'gyre/greet', namespace: 'gyre' });
    expect(exists.body.data).toMatchObject({ orb: { id: expect.any(String), isPrivate: false }, registryNamespace: { id: expect.any(String) } });
    const absent = await gql(doc('orb-exists.graphql'), { name: 'gyre/nope', namespace: 'gyre' });
    expect(absent.body.data.orb).toBeNull();
    const categories = await gql(doc('orb-categories.graphql'), { after: '' });
    expect(categories.body.data.orbCategories).toEqual({ totalCount: 0, edges: [], pageInfo: { hasNextPage: false } });
  });

  it('needs a token, as a bare Authorization header, Circle-Token or Bearer', async () => {
    expect((await gql(doc('orb-latest-version.graphql'), { name: 'gyre/greet' }, null)).status).toBe(401);
    expect((await gql(doc('orb-latest-version.graphql'), { name: 'gyre/greet' }, 'not-a-token')).status).toBe(401);
    const viaHeader = await fetch(`${g.url}/graphql-unstable`, { method: 'POST', headers: { 'Circle-Token': dev, 'Content-Type': 'application/json' }, body: JSON.stringify({ query: '{ orb(name: "gyre/greet") { name } }' }) });
    expect(await viaHeader.json()).toEqual({ data: { orb: { name: 'gyre/greet' } } });
  });

  it('answers hostile and unknown documents with GraphQL errors, never a crash', async () => {
    const unknown = await gql('{ viewer { login } }');
    expect(unknown.status).toBe(200);
    expect(unknown.body.errors?.[0].message).toMatch(/Cannot query field "viewer"/);
    const mutation = await gql('mutation($name: String!) { createNamespace(name: $name) { namespace { id } } }', { name: 'x' });
    expect(mutation.body.errors?.[0].message).toMatch(/answers queries only.*POST \/api\/v2\/orbs/);
    const unparsable = await gql('{ orb(name: ');
    expect(unparsable.body.errors?.[0].message).toMatch(/Syntax Error/);
    const deep = `{ orb(name: "gyre/greet") { ${'versions { orb { '.repeat(6)}id${' } }'.repeat(6)} } }`;
    expect((await gql(deep)).body.errors?.[0].message).toMatch(/more than 8 deep/);
    const wide = `{ ${Array.from({ length: 400 }, (_, i) => `a${i}: orbCategories { totalCount }`).join(' ')} }`;
    expect((await gql(wide)).body.errors?.[0].message).toMatch(/more than 300 fields/);
    const twice = `query($c: String!) { a: buildConfig(configYaml: $c) { valid } b: buildConfig(configYaml: $c) { valid } }`;
    expect((await gql(twice, { c: CONFIG })).body.errors?.[0].message).toMatch(/one compilation a request/);
    const tokens = `{ ${'a '.repeat(6000)} }`;
    expect((await gql(tokens)).body.errors?.[0].message).toMatch(/more that 5000 tokens/);
    const badVariable = await gql(doc('config-validate.graphql'), { config: CONFIG, next: false, pipelineValues: [{ key: 'k', val: { nested: true } }] });
    expect(badVariable.body.errors?.[0].message).toMatch(/pipeline value \(val\) must be a string, number or boolean/);
    const badRef = await gql(doc('orb-source.graphql'), { orbVersionRef: "'; DROP TABLE orb_versions; --" });
    expect(badRef.body.errors?.[0].message).toMatch(/must be namespace\/orb@version/);
    const cyclic = await gql('{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }');
    expect(cyclic.body.errors?.[0].message).toMatch(/Cannot spread fragment/);

    const tooLong = await gql(`{ ${'orbCategories { totalCount } '.repeat(800)} }`);
    expect(tooLong.status).toBe(400);
    const notJson = await fetch(`${g.url}/graphql-unstable`, { method: 'POST', headers: { Authorization: dev, 'Content-Type': 'application/json' }, body: '{"query":' });
    expect(notJson.status).toBe(400);
    const noQuery = await fetch(`${g.url}/graphql-unstable`, { method: 'POST', headers: { Authorization: dev, 'Content-Type': 'application/json' }, body: JSON.stringify({ query: 42 }) });
    expect(noQuery.status).toBe(400);
    expect(((await noQuery.json()) as { message: string }).message).toMatch(/query/);
    // Still serving.
    expect((await gql(doc('orb-latest-version.graphql'), { name: 'gyre/greet' })).body.data.orb.versions).toEqual([{ version: '1.1.0' }]);
  });
});
