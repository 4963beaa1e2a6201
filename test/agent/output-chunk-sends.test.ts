import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { gunzipSync, gzipSync } from 'node:zlib';
import { AgentApiClient, TaskApiError } from '../../runtime/agent/agent-api-client';
import { isRefusal, transientReason } from '../../runtime/agent/retries';
import { AuthenticationError, StaleLeaseError } from '../../runtime/domain/errors';
import { compressChunk } from '../../runtime/output/log-chunk';

/**
 * An output chunk goes out with its bytes as they are (node:http, not fetch): what the server
 * receives, and what each kind of answer or failure becomes for the agent, must be what every
 * other call of the agent's task API gives (the retry rules read them).
 */
describe("the agent's output chunk sends", () => {
  let server: Server;
  let url: string;
  let answer: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;
  const received: { method?: string; url?: string; headers: IncomingMessage['headers']; body: Buffer }[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (p: Buffer) => parts.push(p));
      req.on('end', () => {
        const body = Buffer.concat(parts);
        received.push({ method: req.method, url: req.url, headers: req.headers, body });
        answer(req, res, body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    received.length = 0;
  });

  const api = () => new AgentApiClient({ url, token: 'gyre-task.t1.x.1.sig', taskId: 't1' });
  const json = (status: number, body: unknown, headers: Record<string, string> = {}) => (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const failure = (p: Promise<unknown>) => p.then(() => undefined, (error: unknown) => error);

  it('sends the gzip members byte for byte, one after another, with their length, encoding, size and token', async () => {
    answer = json(200, { ok: true });
    const raw = Buffer.from(Array.from({ length: 40_000 }, (_, i) => `line ${i} of a loud step\n`).join(''));
    // Compressed as the agent does: several members, sent without being joined.
    const chunk = await compressChunk(raw);
    expect(chunk.members?.length).toBeGreaterThan(1);
    await expect(api().stepOutput(2, 7, chunk)).resolves.toBeUndefined();
    expect(received).toHaveLength(1);
    const [sent] = received;
    expect(sent.method).toBe('PUT');
    expect(sent.url).toBe('/api/v2/agent/task/t1/step/2/output/7');
    expect(sent.body.equals(chunk.gzip)).toBe(true);
    expect(gunzipSync(sent.body).equals(raw)).toBe(true);
    expect(sent.headers).toMatchObject({
      'content-length': String(chunk.gzip.length),
      'content-encoding': 'gzip',
      'x-gyre-output-bytes': String(raw.length),
      authorization: 'Bearer gyre-task.t1.x.1.sig',
      'content-type': 'application/octet-stream',
    });
    expect(sent.headers['transfer-encoding']).toBeUndefined();
  });

  it('makes each answer what the other calls make of it: a lost lease, a refused token, a refusal with its message, a retry with its wait', async () => {
    const chunk = { gzip: gzipSync('x'), rawBytes: 1 };
    answer = json(409, { message: 'lease lost' });
    expect(await failure(api().stepOutput(0, 0, chunk))).toBeInstanceOf(StaleLeaseError);
    answer = json(401, { message: 'token expired' });
    const refusedToken = await failure(api().stepOutput(0, 0, chunk));
    expect(refusedToken).toBeInstanceOf(AuthenticationError);
    expect((refusedToken as Error).message).toBe('token expired');
    answer = json(400, { message: "an output chunk sent as gzip holds 1 bytes, not the 2 it claims" });
    const refused = await failure(api().stepOutput(0, 0, chunk));
    expect(refused).toBeInstanceOf(TaskApiError);
    expect(isRefusal(refused)).toBe(true);
    expect((refused as Error).message).toBe('PUT /api/v2/agent/task/t1/step/0/output/0 → 400: an output chunk sent as gzip holds 1 bytes, not the 2 it claims');
    answer = json(503, { message: 'draining' }, { 'Retry-After': '2' });
    const busy = await failure(api().stepOutput(0, 0, chunk));
    expect(busy).toMatchObject({ status: 503, retryAfterMs: 2000 });
    expect(transientReason(busy)).toBe('HTTP 503');
    answer = (_req, res) => {
      res.writeHead(204);
      res.end();
    };
    await expect(api().stepOutput(0, 0, chunk)).resolves.toBeUndefined();
  });

  it('fails as a connection failure worth retrying when the answer is cut off or no server listens', async () => {
    const chunk = { gzip: gzipSync('x'), rawBytes: 1 };
    answer = (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
      res.write('{"ok":');
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const cut = await failure(api().stepOutput(0, 0, chunk));
    expect(cut).toBeInstanceOf(Error);
    expect(transientReason(cut)).toBeDefined();

    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await failure(new AgentApiClient({ url: `http://127.0.0.1:${port}`, token: 'gyre-task.t1.x.1.sig', taskId: 't1' }).stepOutput(0, 0, chunk));
    expect(transientReason(refused)).toBe('ECONNREFUSED');
  });
});
