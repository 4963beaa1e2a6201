import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * What the proxy does to one request instead of passing it on:
 * - `status`: answers it itself with this status, as a load balancer would, never passing it on;
 * - `drop-before`: closes the connection before anything reaches the server;
 * - `drop-midway`: passes on the first `bytes` of the request body, then cuts both connections
 *   (the server sees an upload that broke off);
 * - `drop-after`: passes the whole request on and waits for the server's whole answer, then closes
 *   the client's connection without it (the server did the work; the client cannot know);
 * - `cut-answer`: passes the request on and the first `bytes` of the answer's body back, then
 *   closes the client's connection (a download that breaks midway);
 * - `strip-range`: passes the request on without its `Range` and `If-Range` headers, as a proxy
 *   that does not forward them would (the server answers with the whole body).
 */
export type Fault =
  | { kind: 'status'; status: number }
  | { kind: 'drop-before' }
  | { kind: 'drop-midway'; bytes: number }
  | { kind: 'drop-after' }
  | { kind: 'cut-answer'; bytes: number }
  | { kind: 'strip-range' };

/** One request as the proxy received it. */
export interface SeenRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
}

export interface FaultProxy {
  readonly url: string;
  readonly port: number;
  /** Applies `fault` to the next `times` requests whose method and path (without the query) match. */
  fail(method: string, path: RegExp, fault: Fault, times?: number): void;
  /** Every request seen, in order, as `METHOD /path` (faulted or not). */
  readonly seen: string[];
  /** Every request seen, in order, with its headers (faulted or not, before any was stripped). */
  readonly requests: SeenRequest[];
  /** How many requests `METHOD /path` matched. */
  count(method: string, path: RegExp): number;
  close(): Promise<void>;
}

/** An HTTP proxy on loopback in front of `target` that injects faults into chosen requests. */
export async function startFaultProxy(target: string, port = 0): Promise<FaultProxy> {
  const upstream = new URL(target);
  const rules: { method: string; path: RegExp; fault: Fault; left: number }[] = [];
  const seen: string[] = [];
  const requests: SeenRequest[] = [];
  const sockets = new Set<Socket>();

  const forward = (req: IncomingMessage, headers: IncomingHttpHeaders, onAnswer: (answer: IncomingMessage) => void, onError: () => void) => {
    let answered = false;
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (answer) => {
      answered = true;
      onAnswer(answer);
    });
    // The server may answer before it read the whole body and close its side: the answer still goes back.
    out.on('error', () => answered || onError());
    return out;
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    seen.push(`${req.method} ${path}`);
    requests.push({ method: req.method ?? 'GET', path, headers: { ...req.headers } });
    const rule = rules.find((r) => r.left > 0 && r.method === req.method && r.path.test(path));
    if (rule) rule.left--;
    const fault = rule?.fault;
    const drop = () => req.socket.destroy();

    if (fault?.kind === 'status') {
      req.resume();
      res.writeHead(fault.status, { 'Content-Type': 'text/html' }).end(`<html><body><h1>${fault.status}</h1>the upstream is not available</body></html>`);
      return;
    }
    if (fault?.kind === 'drop-before') {
      drop();
      return;
    }

    const headers = { ...req.headers };
    if (fault?.kind === 'strip-range') {
      delete headers.range;
      delete headers['if-range'];
    }
    const out = forward(
      req,
      headers,
      (answer) => {
        if (fault?.kind === 'drop-after') {
          answer.resume();
          answer.on('end', drop);
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (fault?.kind === 'cut-answer') {
          let sent = 0;
          answer.on('data', (chunk: Buffer) => {
            if (sent >= fault.bytes) return;
            const piece = chunk.subarray(0, fault.bytes - sent);
            sent += piece.length;
            // The connection goes once the piece has reached the client.
            res.write(piece, () => sent >= fault.bytes && setImmediate(drop));
          });
          return;
        }
        answer.pipe(res);
      },
      () => drop(),
    );
    if (fault?.kind === 'drop-midway') {
      let passed = 0;
      req.on('data', (chunk: Buffer) => {
        if (passed >= fault.bytes) return;
        const piece = chunk.subarray(0, fault.bytes - passed);
        passed += piece.length;
        out.write(piece);
        if (passed >= fault.bytes) {
          out.destroy();
          drop();
        }
      });
      req.on('end', () => {
        out.destroy();
        drop();
      });
      return;
    }
    req.pipe(out);
  };

  const server: Server = createServer(handle);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    seen,
    requests,
    fail(method, path, fault, times = 1) {
      rules.push({ method, path, fault, left: times });
    },
    count: (method, path) => seen.filter((s) => s.startsWith(`${method} `) && path.test(s.slice(method.length + 1))).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
