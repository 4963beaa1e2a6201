import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One request the fake engine received (path without the API version, query parsed, JSON body parsed). */
export interface EngineRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingHttpHeaders;
  readonly body: any;
}

export interface FakeDockerEngine {
  readonly socketPath: string;
  /** Every request, in order. */
  readonly requests: EngineRequest[];
  close(): Promise<void>;
}

export interface FakeDockerEngineOptions {
  /** Image names the engine has (as `GET /images/{name}/json` is asked); pulls and tags add to them. */
  readonly images?: readonly string[];
  /** A pull ends with this error in its progress stream (status 200, as engines report it). */
  readonly pullError?: string;
}

/**
 * A recording stand-in for the Docker Engine API on a unix socket, for what cannot happen here: a
 * pull from a registry (nothing can be pulled on this machine). It answers what the Docker
 * executor asks while starting a task (images, pull, tag, network, containers, the attach that
 * carries the keep-alive's $HOME, the exec that reads it otherwise) in the shapes of the Engine API v1.41; the same calls are exercised against Podman's
 * socket in test/execution/docker-executor.test.ts.
 */
/** One frame of a non-TTY container's multiplexed output on stdout: stream 1, three zero bytes, length, payload. */
function stdoutFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = 1;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

export async function startFakeDockerEngine(options: FakeDockerEngineOptions = {}): Promise<FakeDockerEngine> {
  const dir = mkdtempSync(join(tmpdir(), 'gyre-fake-engine-'));
  const socketPath = join(dir, 'engine.sock');
  const images = new Set(options.images ?? []);
  const requests: EngineRequest[] = [];
  let ids = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://engine');
      const path = decodeURIComponent(url.pathname.replace(/^\/v1\.\d+/, ''));
      const text = Buffer.concat(chunks).toString('utf8');
      // JSON bodies parsed; others (the tar of a PUT …/archive) kept as they came, their size recorded.
      const isJson = String(req.headers['content-type'] ?? 'application/json').startsWith('application/json');
      requests.push({ method: req.method ?? '', path, query: url.searchParams, headers: req.headers, body: !text ? undefined : isJson ? JSON.parse(text) : { bytes: chunks.reduce((n, c) => n + c.length, 0) } });
      const json = (status: number, body?: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(body === undefined ? undefined : JSON.stringify(body));
      };
      let m: RegExpExecArray | null;
      // Whether an engine answers here (a Gyre server with GYRE_DOCKER_SOCKET asks at start).
      if (req.method === 'GET' && path === '/_ping') {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        return res.end('OK');
      }
      if (req.method === 'GET' && (m = /^\/images\/(.+)\/json$/.exec(path))) return images.has(m[1]) ? json(200, { Id: 'sha256:0' }) : json(404, { message: `No such image: ${m[1]}` });
      if (req.method === 'POST' && path === '/images/create') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write(`${JSON.stringify({ status: 'Pulling fs layer', id: 'layer' })}\n`);
        if (options.pullError) res.end(`${JSON.stringify({ errorDetail: { message: options.pullError }, error: options.pullError })}\n`);
        else {
          const from = url.searchParams.get('fromImage')!;
          const tag = url.searchParams.get('tag')!;
          images.add(tag.startsWith('sha256:') ? `${from}@${tag}` : `${from}:${tag}`);
          res.end(`${JSON.stringify({ status: `Status: Downloaded newer image for ${from}:${tag}` })}\n`);
        }
        return;
      }
      if (req.method === 'POST' && /^\/images\/.+\/tag$/.test(path)) {
        images.add(`${url.searchParams.get('repo')}:${url.searchParams.get('tag')}`);
        return json(201);
      }
      if (req.method === 'POST' && path === '/networks/create') return json(201, { Id: `net-${++ids}` });
      if (req.method === 'POST' && path === '/containers/create') return json(201, { Id: `ctr-${++ids}`, Warnings: [] });
      if (req.method === 'POST' && /^\/containers\/[^/]+\/start$/.test(path)) return json(204);
      if (req.method === 'POST' && /^\/containers\/[^/]+\/exec$/.test(path)) return json(201, { Id: `exec-${++ids}` });
      if (req.method === 'POST' && /^\/exec\/[^/]+\/start$/.test(path)) {
        // A non-TTY exec's output, multiplexed: stream 1 (stdout), three zero bytes, length, payload.
        res.writeHead(200, { 'Content-Type': 'application/vnd.docker.raw-stream' });
        return res.end(stdoutFrame('/root'));
      }
      if (req.method === 'GET' && /^\/exec\/[^/]+\/json$/.test(path)) return json(200, { Running: false, ExitCode: 0 });
      // Files written into a container (the agent's job directory: the in-job circleci command),
      // and none there to find (no step asked to halt).
      if (req.method === 'PUT' && /^\/containers\/[^/]+\/archive$/.test(path)) return json(200);
      if (req.method === 'HEAD' && /^\/containers\/[^/]+\/archive$/.test(path)) return json(404);
      if (req.method === 'DELETE') return json(204);
      json(404, { message: `the fake engine does not answer ${req.method} ${path}` });
    });
  });
  // An attach (the agent holds the primary container's stdin open) is a connection upgrade.
  const attached = new Set<import('node:net').Socket>();
  server.on('upgrade', (req, socket) => {
    const url = new URL(req.url ?? '/', 'http://engine');
    requests.push({ method: req.method ?? '', path: decodeURIComponent(url.pathname.replace(/^\/v1\.\d+/, '')), query: url.searchParams, headers: req.headers, body: undefined });
    attached.add(socket as import('node:net').Socket);
    socket.on('error', () => undefined);
    socket.on('close', () => attached.delete(socket as import('node:net').Socket));
    socket.write('HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n');
    // With stdout, what the agent's keep-alive prints as it starts (its image's $HOME and whether
    // it has bash), multiplexed as a non-TTY container's stdout is.
    if (url.searchParams.get('stdout') === '1') socket.write(stdoutFrame('/root\nno-bash\n'));
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          rmSync(dir, { recursive: true, force: true });
          resolve();
        });
        server.closeAllConnections();
        for (const socket of attached) socket.destroy();
      }),
  };
}
