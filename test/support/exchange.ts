import { createServer, type Server } from 'node:http';

/**
 * A little key-value store over HTTP on 127.0.0.1, for steps of different tasks (different uids,
 * different sandboxes, which share no directory) and the test to hand each other values:
 * `curl -X PUT --data V $URL/k/NAME`, `curl -sf $URL/k/NAME` (404 until set). It also counts
 * hits per key (`hits(name)`), for side effects that must happen once.
 */
export interface Exchange {
  readonly url: string;
  set(key: string, value: string): void;
  get(key: string): string | undefined;
  /** How often `POST /hit/<name>` was called. */
  hits(name: string): number;
  close(): Promise<void>;
}

export async function startExchange(): Promise<Exchange> {
  const values = new Map<string, string>();
  const counts = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const [, kind, name] = (req.url ?? '').split('/');
      if (kind === 'hit' && name) {
        counts.set(name, (counts.get(name) ?? 0) + 1);
        res.end('ok');
      } else if (kind === 'k' && name && req.method === 'PUT') {
        values.set(name, Buffer.concat(chunks).toString('utf8'));
        res.end('ok');
      } else if (kind === 'k' && name && values.has(name)) {
        res.end(values.get(name));
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    set: (key, value) => void values.set(key, value),
    get: (key) => values.get(key),
    hits: (name) => counts.get(name) ?? 0,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
