import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * Runs registry-scenario.ts (PGlite, the config API routes, `gyre orb import|list`) in a Node process
 * and checks what it observed.
 */
let seen: Record<string, any>;
beforeAll(() => {
  const repo = path.resolve(__dirname, '../..');
  const text = execFileSync(process.execPath, ['-r', require.resolve('tsx/cjs'), path.join(__dirname, 'registry-scenario.ts')], { cwd: repo, encoding: 'utf8', timeout: 240_000 });
  seen = JSON.parse(text);
}, 90_000);

describe('orb registry (PGlite)', () => {
  it('resolves x.y.z, x.y, x and volatile to the newest match', () => {
    expect(seen['resolve 1']).toBe('1.10.0');
    expect(seen['resolve 1.2']).toBe('1.2.10');
    expect(seen['resolve 1.2.0']).toBe('1.2.0');
    expect(seen['resolve volatile']).toBe('2.0.1');
    expect(seen['resolve 3']).toBeNull();
    expect(seen['resolve unknown orb']).toBeNull();
    expect(seen['source of 1.2']).toContain('cimg/base:1.2.10');
  });

  it('versions are immutable and inputs are checked', () => {
    expect(seen['republish']).toEqual({ ok: false, error: expect.stringMatching(/already published/) });
    expect(seen['bad name'].error).toMatch(/must be namespace\/orb/);
    expect(seen['bad version'].error).toMatch(/must be x\.y\.z/);
    expect(seen['bad yaml'].error).toMatch(/not valid YAML/);
    expect(seen['bad keys'].error).toMatch(/unknown top-level keys: steps/);
  });

  it('the compiler resolves orbs from the registry, including orbs that import orbs', () => {
    expect(seen['orb importing orb']).toEqual({ kind: 'docker', images: [{ image: 'cimg/base:1.2.10' }] });
  });
});

describe('config API routes', () => {
  it('POST /api/v2/compile-config-with-defaults answers as the circleci CLI expects', () => {
    expect(seen['api compile good']).toMatchObject({ valid: true, errors: [] });
    expect(seen['api compile good']['output-yaml']).toMatch(/- run: echo feature/);
    expect(seen['api compile good']['source-yaml']).toMatch(/^version: 2.1/);
    expect(seen['api compile bad'].valid).toBe(false);
    expect(seen['api compile bad'].errors).toEqual([{ message: expect.stringMatching(/^line 2:\d+: workflows\.w\.jobs\[0\]\.nope: job 'nope' is not defined/) }]);
    expect(seen['api compile no yaml'].error).toMatch(/^400: body\.config_yaml is required/);
  });

  it('POST /api/v2/orbs needs an administrator; GET lists', () => {
    expect(seen['api publish non-admin'].error).toMatch(/administrator/);
    expect(seen['api publish'].status).toBe(201);
    expect(seen['api list'].items).toEqual(expect.arrayContaining([{ name: 'acme/api', version: '1.0.0', created_at: expect.stringMatching(/^\d{4}-/) }]));
  });
});

describe('gyre orb import|list', () => {
  it('imports an orb source tree (packed client-side) and a packed file, then lists them', () => {
    expect(seen['cli import tree']).toEqual({ code: 0, text: expect.stringMatching(/Imported circleci\/slack@4\.13\.3/) });
    expect(seen['cli import file']).toBe(0);
    expect(seen['imported tree source']).toMatch(/(^|\n)commands:/);
    expect(seen['imported tree source']).not.toMatch(/<<include\(/);
    expect(seen['cli list'].code).toBe(0);
    expect(seen['cli list'].text).toMatch(/circleci\/slack@4\.13\.3/);
    expect(seen['cli list'].text).toMatch(/acme\/file@0\.0\.1/);
  });

  it('refuses a bad --name', () => {
    expect(seen['cli bad name']).toEqual({ code: 2, text: expect.stringMatching(/must be <ns>\/<orb>@<x\.y\.z>/) });
  });
});
