import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join, posix } from 'node:path';
import ts from 'typescript';
import { UI_FILES, VENDOR_FILES } from '../../runtime/ui/routes';
import { startTestGyre, type TestGyre } from '../support/gyre';

// The UI is native ES modules served from a fixed list: every module a page imports is on the
// list and served as JavaScript under the strict policy; nothing off the list can be asked for,
// however the path is spelled; and the typed API client passes TypeScript's checks.

const UI_DIR = join(__dirname, '../../runtime/ui');
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'";

/** GET with the path sent exactly as written (fetch would resolve its dot segments first). */
function rawGet(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: 'GET', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The relative specifiers a module imports (static `import … from '…'` and `import '…'`). */
function importsOf(source: string): string[] {
  return [...source.matchAll(/^\s*import\s+(?:[^'";]+?\s+from\s+)?['"]([^'"]+)['"]/gm)].map((m) => m[1]);
}

describe('the UI modules', () => {
  let gyre: TestGyre;

  beforeAll(async () => {
    gyre = await startTestGyre();
  }, 60_000);

  afterAll(async () => {
    await gyre?.stop();
  });

  test('every module the page loads, and every module they import, is served as JavaScript under the strict policy', async () => {
    const page = await (await fetch(`${gyre.url}/`)).text();
    const entries = [...page.matchAll(/<script type="module" src="([^"]+)"><\/script>/g)].map((m) => m[1]);
    expect(entries).toEqual(['/ui/app.js']);
    const seen = new Set<string>();
    const queue = [...entries];
    while (queue.length) {
      const url = queue.shift()!;
      if (seen.has(url)) continue;
      seen.add(url);
      const res = await fetch(gyre.url + url);
      expect({ url, status: res.status }).toEqual({ url, status: 200 });
      expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      expect(res.headers.get('content-security-policy')).toBe(CSP);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      const source = await res.text();
      for (const specifier of importsOf(source)) {
        // Bare specifiers would need an import map, which the policy's script-src would not run.
        expect(specifier).toMatch(/^\.\.?\//);
        queue.push(posix.join(posix.dirname(url), specifier));
      }
    }
    // Every file on the list is reachable from the page: nothing served is dead weight.
    const served = new Set([...UI_FILES.filter((f) => f.endsWith('.js')).map((f) => `/ui/${f}`), ...Object.keys(VENDOR_FILES).filter((f) => f.endsWith('.js')).map((f) => `/ui/vendor/${f}`)]);
    expect([...seen].sort()).toEqual([...served].sort());
  });

  test('the stylesheets are served as CSS, the chart library from its pinned npm package', async () => {
    const pinned = JSON.parse(readFileSync(join(__dirname, '../../package.json'), 'utf8')).dependencies.uplot;
    expect(pinned).toMatch(/^\d+\.\d+\.\d+$/);
    for (const url of ['/ui/app.css', '/ui/vendor/uPlot.min.css']) {
      const res = await fetch(gyre.url + url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/css; charset=utf-8');
    }
    const chart = await (await fetch(`${gyre.url}/ui/vendor/uPlot.esm.js`)).text();
    expect(chart).toBe(readFileSync(require.resolve('uplot/dist/uPlot.esm.js'), 'utf8'));
  });

  test.each([
    '/ui/../package.json',
    '/ui/%2e%2e/package.json',
    '/ui/..%2fpackage.json',
    '/ui/%2e%2e%2f%2e%2e%2fpackage.json',
    '/ui/views/../../../package.json',
    '/ui/views/..%2f..%2fapi%2fhttp-app.ts',
    '/ui/routes.ts',
    '/ui/index.html',
    '/ui/views/',
    '/ui/vendor/uPlot.cjs.js',
    '/ui/vendor/../../../node_modules/uplot/package.json',
    '/ui/vendor/%2e%2e%2f%2e%2e%2fpackage.json',
    '/ui/app.js%00.css',
    '/ui/APP.JS',
    '/ui//etc/passwd',
    '/ui/%5c..%5cpackage.json',
  ])('%s is not served, signed in or not', async (path) => {
    // Signed in, it is simply not there (or not even a path: a NUL is a bad request); without a
    // session, a path that is not public is refused first.
    const signedIn = await rawGet(gyre.url, path, { 'Circle-Token': gyre.token });
    expect([400, 404]).toContain(signedIn.status);
    const anonymous = await rawGet(gyre.url, path);
    expect([401, 404]).toContain(anonymous.status);
    for (const { body } of [signedIn, anonymous]) {
      expect(body).not.toContain('"name": "gyre"');
      expect(body).not.toContain('registerUiRoutes');
      expect(body).not.toContain('root:');
      expect(body).not.toContain('function uPlot');
    }
  });

  test('the API client and the modules typed with it pass TypeScript checks', () => {
    const files = ['api.js', 'links.js'].map((f) => join(UI_DIR, f));
    const program = ts.createProgram(files, {
      allowJs: true,
      checkJs: true,
      noEmit: true,
      strict: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ES2022,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
      types: [],
    });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file ? `${d.file.fileName.slice(UI_DIR.length + 1)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}` : '';
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(problems).toEqual([]);
  }, 60_000);
});
