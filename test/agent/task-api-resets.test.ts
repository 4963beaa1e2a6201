import { createServer, type Server, type Socket } from 'node:net';
import { AgentApiClient } from '../../runtime/agent/agent-api-client';

/**
 * A server that resets the first connection of each request it sees (as a kept-alive connection
 * closed by the server just as a request goes out is reset), then answers the next one: the agent
 * sends an idempotent request once more on a new connection and never re-sends a POST.
 */
describe("the agent's task API when a connection is reset before the answer", () => {
  let server: Server;
  let url: string;
  const seen: string[] = [];
  let resetNext = true;

  beforeAll(async () => {
    server = createServer((socket: Socket) => {
      let head = '';
      socket.on('data', (data) => {
        head += data.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        const line = head.slice(0, head.indexOf('\r\n'));
        seen.push(line);
        head = '';
        if (resetNext) {
          resetNext = false;
          socket.resetAndDestroy();
          return;
        }
        socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{"ok":true}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address() as { port: number };
    url = `http://127.0.0.1:${address.port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    seen.length = 0;
    resetNext = true;
  });

  const api = () => new AgentApiClient({ url, token: 'gyre-task.t1.x.1.sig', taskId: 't1' });

  it('sends a PUT (an output chunk) once more and gets its answer', async () => {
    await expect(api().stepOutput(0, 0, { gzip: Buffer.from('chunk'), rawBytes: 5 })).resolves.toBeUndefined();
    expect(seen).toEqual(['PUT /api/v2/agent/task/t1/step/0/output/0 HTTP/1.1', 'PUT /api/v2/agent/task/t1/step/0/output/0 HTTP/1.1']);
  });

  it('does not send a POST twice: the reset is the caller’s to handle', async () => {
    await expect(api().stepFinished(0, { status: 'success', exit_code: 0 })).rejects.toThrow(/fetch failed/);
    expect(seen).toEqual(['POST /api/v2/agent/task/t1/step/0/finished HTTP/1.1']);
  });
});
