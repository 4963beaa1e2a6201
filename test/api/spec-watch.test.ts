import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SpecWatch } from '../support/spec-watch';
import { startTestGyre } from '../support/gyre';

/**
 * The suite-wide check (test/setup-spec-watch.ts) sees answers whoever asks, so a shape Gyre gets
 * wrong fails whichever test made the request: shown here with a plain HTTP server answering the
 * way a broken route would, asked by plain fetch (as a browser or an npm client would ask).
 */
const watch = (globalThis as { gyreSpecWatch?: SpecWatch }).gyreSpecWatch!;

describe('the suite-wide API v2 answer check', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/api/v2/me') {
        res.setHeader('content-type', 'application/json; charset=utf-8');
        // `login` must be a string and `name` is required.
        res.write('{"id":"6f0bd6c0-6a37-4c1f-8b5a-6e3bb5b0e0a3",');
        res.end('"login":42}');
      } else if (req.url === '/api/v2/me/collaborations') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify([{ id: '6f0bd6c0-6a37-4c1f-8b5a-6e3bb5b0e0a3', 'vcs-type': 'github', name: 'acme', avatar_url: 'https://example.test/a.png', slug: 'gh/acme' }]));
      } else if (req.url === '/api/v2/pipeline/6f0bd6c0-6a37-4c1f-8b5a-6e3bb5b0e0a3') {
        res.statusCode = 404;
        res.setHeader('content-type', 'application/json');
        res.end('{"message":"Pipeline not found."}');
      } else if (req.url === '/api/v2/me/stream') {
        res.setHeader('content-type', 'text/event-stream');
        res.end('data: {}\n\n');
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('reports an answer outside the description, naming the request, the operation and the fields', async () => {
    const res = await fetch(`${url}/api/v2/me`);
    expect(await res.json()).toEqual({ id: '6f0bd6c0-6a37-4c1f-8b5a-6e3bb5b0e0a3', login: 42 });
    const seen = watch.take();
    expect(seen).toHaveLength(1);
    expect(seen[0].request).toBe('GET /api/v2/me → 200');
    expect(seen[0].operation).toMatch(/getCurrentUser/);
    expect(seen[0].problems.join('\n')).toMatch(/login must be string/);
    expect(seen[0].problems.join('\n')).toMatch(/must have required property 'name'/);
  });

  it('lets answers that fit, error answers and non-JSON bodies through', async () => {
    expect((await fetch(`${url}/api/v2/me/collaborations`)).status).toBe(200);
    expect((await fetch(`${url}/api/v2/pipeline/6f0bd6c0-6a37-4c1f-8b5a-6e3bb5b0e0a3`)).status).toBe(404);
    expect(await (await fetch(`${url}/api/v2/me/stream`)).text()).toBe('data: {}\n\n');
    expect(watch.take()).toEqual([]);
  });

  it("sees Gyre's own answers, asked without the test client", async () => {
    const g = await startTestGyre();
    try {
      const before = watch.checked();
      const res = await fetch(`${g.url}/api/v2/me`, { headers: { 'Circle-Token': g.token } });
      expect(res.status).toBe(200);
      await res.json();
      expect(watch.checked()).toBe(before + 1);
      expect(watch.take()).toEqual([]);
    } finally {
      await g.stop();
    }
  });
});
