import { request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { MAX_INSPECTED_BODY, screen } from './api-filter';

/**
 * A TLS front for an engine's unix socket: mutual TLS on a TCP port, and an HTTP proxy that lets
 * through only what api-filter.ts allows of the Docker Engine API (the engine is rootful: the
 * options that reach the host are refused with a 403 and a `{"message": …}` the docker CLI
 * prints). Only clients with a certificate from `ca` get through; the handshake of any other
 * client fails before a byte reaches the engine. Bodies and answers stream both ways (build
 * contexts, image loads, `logs -f`, events); attach and exec start hijack the connection
 * (`Upgrade: tcp`), after which their bytes are piped as they are.
 */
export interface TlsProxy {
  readonly port: number;
  close(): Promise<void>;
}

/** Hop-by-hop headers of the engine's answer: the proxy's own connection to the client has its own. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection']);

export async function startTlsProxy(options: { host: string; port?: number; ca: string; cert: string; key: string; socketPath: string }): Promise<TlsProxy> {
  const openSockets = new Set<Duplex>();
  const track = (socket: Duplex) => {
    openSockets.add(socket);
    socket.once('close', () => openSockets.delete(socket));
  };
  const server = createServer({
    // Half-closes pass through a hijacked connection: `docker run` without stdin closes its sending
    // side at once (a TLS close_notify) and still reads the container's output.
    allowHalfOpen: true,
    ca: [options.ca],
    cert: options.cert,
    key: options.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    // A build context or `docker load` may take longer than Node's default 5 minutes to send.
    requestTimeout: 0,
    // docker build sends every registry credential in X-Registry-Config.
    maxHeaderSize: 256 * 1024,
  });
  server.on('secureConnection', (socket) => {
    socket.setNoDelay(true);
    track(socket);
  });
  // A failed handshake (no certificate, another CA's) is the client's problem, not the proxy's.
  server.on('tlsClientError', () => undefined);

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    forward(req, res).catch((error) => {
      if (!res.headersSent) sendError(res, 502, `the remote engine did not answer: ${(error as Error).message}`);
      else res.destroy();
    });
  });

  async function forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const screening = screen(req.method ?? 'GET', req.url ?? '/', false);
    if (!screening.allow) {
      req.resume();
      return sendError(res, screening.status, screening.message);
    }
    let body: Buffer | undefined;
    if (screening.checkBody) {
      body = await readBody(req, MAX_INSPECTED_BODY);
      if (!body) return sendError(res, 413, `the request body is over ${MAX_INSPECTED_BODY} bytes, more than remote Docker in Gyre reads for ${req.url}`, true);
      let parsed: unknown;
      try {
        parsed = body.length > 0 ? JSON.parse(body.toString('utf8')) : {};
      } catch {
        return sendError(res, 400, `the request body of ${req.url} is not JSON`);
      }
      const refused = screening.checkBody(parsed);
      if (refused) return sendError(res, 403, refused);
    }
    const headers: IncomingHttpHeaders = { ...req.headers };
    if (body) {
      delete headers['transfer-encoding'];
      headers['content-length'] = String(body.length);
    }
    await new Promise<void>((resolve, reject) => {
      const upstream = request({ socketPath: options.socketPath, method: req.method, path: req.url, headers, agent: false }, (answer) => {
        const out: string[] = [];
        for (let i = 0; i < answer.rawHeaders.length; i += 2) if (!HOP_BY_HOP.has(answer.rawHeaders[i].toLowerCase())) out.push(answer.rawHeaders[i], answer.rawHeaders[i + 1]);
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, out);
        // Streams (events, logs -f, build output) start before their first line.
        res.flushHeaders();
        answer.pipe(res);
        answer.on('error', () => res.destroy());
        resolve();
      });
      upstream.on('error', reject);
      // The client gone (Ctrl-C on `docker logs -f`): so is the request to the engine.
      res.on('close', () => {
        if (!res.writableFinished) upstream.destroy();
      });
      if (body) upstream.end(body);
      else req.pipe(upstream);
    });
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    hijack(req, socket, head).catch((error) => socket.end(rawError(502, `the remote engine did not answer: ${(error as Error).message}`)));
  });

  /**
   * Attach and exec start: the request goes to the engine as a request (its body read first), and
   * only once the engine has switched protocols (101) are the two connections piped. An answer that
   * does not switch (no such container) is passed on and the connection closed, so nothing the
   * client sends after it reaches the engine unscreened.
   */
  async function hijack(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const screening = screen(req.method ?? 'GET', req.url ?? '/', true);
    if (!screening.allow) return void socket.end(rawError(screening.status, screening.message));
    if (req.headers['transfer-encoding']) return void socket.end(rawError(400, 'a request that upgrades the connection must give its Content-Length'));
    const length = Number(req.headers['content-length'] ?? 0);
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_INSPECTED_BODY) return void socket.end(rawError(413, `the request body of ${req.url} is too large`));
    // exec start's body ({"Detach":false,"Tty":true}) may come after the packet of the headers.
    const received = await readAtLeast(socket, head, length);
    const body = received.subarray(0, length);
    const early = received.subarray(length);
    if (screening.checkBody) {
      let parsed: unknown;
      try {
        parsed = body.length > 0 ? JSON.parse(body.toString('utf8')) : {};
      } catch {
        return void socket.end(rawError(400, `the request body of ${req.url} is not JSON`));
      }
      const refused = screening.checkBody(parsed);
      if (refused) return void socket.end(rawError(403, refused));
    }
    await new Promise<void>((resolve, reject) => {
      const upstream = request({ socketPath: options.socketPath, method: req.method, path: req.url, headers: req.headers, agent: false });
      upstream.on('upgrade', (answer, engine, engineHead) => {
        track(engine);
        socket.write(rawHead(answer, answer.rawHeaders));
        if (engineHead.length > 0) socket.write(engineHead);
        if (early.length > 0) engine.write(early);
        socket.pipe(engine);
        engine.pipe(socket);
        const end = () => {
          socket.destroy();
          engine.destroy();
        };
        // Each side's end passes to the other (pipe); either side failing or closing ends both.
        socket.on('error', end).on('close', end);
        engine.on('error', end).on('close', end);
        resolve();
      });
      upstream.on('response', (answer) => {
        const out: string[] = [];
        for (let i = 0; i < answer.rawHeaders.length; i += 2) {
          const name = answer.rawHeaders[i].toLowerCase();
          if (!HOP_BY_HOP.has(name) && name !== 'content-length' && name !== 'transfer-encoding') out.push(answer.rawHeaders[i], answer.rawHeaders[i + 1]);
        }
        socket.write(rawHead(answer, [...out, 'Connection', 'close']));
        answer.pipe(socket);
        resolve();
      });
      upstream.on('error', reject);
      upstream.end(body);
    });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open connections (a `docker run` the job left attached) end with the engine.
        for (const socket of openSockets) socket.destroy();
      }),
  };
}

/** A Docker-style error: the docker CLI prints `message`. */
function sendError(res: ServerResponse, status: number, message: string, close = false): void {
  const body = JSON.stringify({ message });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(close ? { connection: 'close' } : {}) });
  res.end(body);
}

function rawError(status: number, message: string): string {
  const body = JSON.stringify({ message });
  return `HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : status === 413 ? 'Payload Too Large' : status === 400 ? 'Bad Request' : 'Bad Gateway'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

function rawHead(answer: IncomingMessage, rawHeaders: string[]): string {
  let head = `HTTP/1.1 ${answer.statusCode} ${answer.statusMessage ?? ''}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/** The whole body, or undefined once it passes `limit` bytes. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve(undefined);
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** `have` plus what the socket sends until there are `n` bytes; the socket is left paused. */
function readAtLeast(socket: Duplex, have: Buffer, n: number): Promise<Buffer> {
  if (have.length >= n) return Promise.resolve(have);
  return new Promise((resolve, reject) => {
    const chunks = [have];
    let size = have.length;
    const done = (error?: Error) => {
      socket.off('data', onData).off('end', onEnd).off('error', done);
      socket.pause();
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= n) done();
    };
    const onEnd = () => done(new Error('the client closed the connection before its request body ended'));
    socket.on('data', onData).on('end', onEnd).on('error', done);
    socket.resume();
  });
}
