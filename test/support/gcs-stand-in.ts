import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in of the Cloud Storage JSON API (storage:v1) for the calls Gyre's GCS blob store makes,
 * held to Google's published shapes (the discovery document's `objects.insert` / `get` / `delete`,
 * the upload protocols, and the media download headers; see test/fixtures/gcs/json-api.json):
 *
 * - `POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart&name=…`: a `multipart/related` body,
 *   the Object resource as JSON then the media; answers the Object resource.
 * - `POST /upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=…`: opens a session, answers
 *   200 with its URI in `Location`; `PUT <session>` with `Content-Range: bytes A-B/N` (or `A-B/*`,
 *   or `A-*\/*` for the rest in one request) appends, answering 308 with `Range: bytes=0-X` until the
 *   object is whole, then 200 and the Object resource.
 * - `GET /storage/v1/b/{bucket}/o/{object}?alt=media`, with `Range: bytes=N-` giving 206 (416 at or
 *   past the end); `x-goog-hash: crc32c=…,md5=…` (base64, CRC32C big-endian) on a whole object.
 * - `GET` without `alt=media`: the Object resource. `DELETE`: 204.
 * - Errors: `{ "error": { "code", "message", "errors": [{ "domain": "global", "reason", "message" }] } }`.
 *
 * Object sizes and generations are strings (int64/uint64 in the discovery document). Every request
 * is recorded (method, path, query, whether it carried `Authorization`).
 */
export interface GcsStandIn {
  readonly endpoint: string;
  readonly bucket: string;
  readonly objects: Map<string, Buffer>;
  readonly requests: { method: string; path: string; query: Record<string, string>; authorization: boolean }[];
  /** Answers the next `n` requests 503 (a transient failure GCS documents as retryable). */
  failNext(n: number): void;
  stop(): Promise<void>;
}

export async function startGcsStandIn(bucket = 'gyre-test'): Promise<GcsStandIn> {
  const objects = new Map<string, Buffer>();
  const generations = new Map<string, number>();
  const sessions = new Map<string, { name: string; parts: Buffer[]; received: number }>();
  const requests: GcsStandIn['requests'] = [];
  let generation = 1_700_000_000_000_000;
  let failures = 0;

  const error = (res: ServerResponse, code: number, reason: string, message: string) => {
    res.writeHead(code, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify({ error: { code, message, errors: [{ message, domain: 'global', reason }] } }));
  };
  const resource = (name: string) => {
    const data = objects.get(name)!;
    const gen = String(generations.get(name));
    return {
      kind: 'storage#object',
      id: `${bucket}/${name}/${gen}`,
      selfLink: `${endpoint}/storage/v1/b/${bucket}/o/${encodeURIComponent(name)}`,
      name,
      bucket,
      generation: gen,
      metageneration: '1',
      contentType: 'application/octet-stream',
      storageClass: 'STANDARD',
      size: String(data.length),
      md5Hash: createHash('md5').update(data).digest('base64'),
      crc32c: crc32cBase64(data),
      etag: 'CAE=',
      timeCreated: new Date().toISOString(),
      updated: new Date().toISOString(),
    };
  };
  const store = (res: ServerResponse, name: string, data: Buffer) => {
    objects.set(name, data);
    generations.set(name, ++generation);
    res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify(resource(name)));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const query = Object.fromEntries(url.searchParams);
    requests.push({ method: req.method ?? '', path: url.pathname, query, authorization: req.headers.authorization !== undefined });
    const body = await readBody(req);
    if (failures > 0) {
      failures--;
      return error(res, 503, 'backendError', 'Service Unavailable');
    }
    const upload = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname);
    const object = /^\/storage\/v1\/b\/([^/]+)\/o\/([^/]+)$/.exec(url.pathname);
    const bucketOf = (m: RegExpExecArray) => decodeURIComponent(m[1]);
    if (upload && bucketOf(upload) !== bucket) return error(res, 404, 'notFound', 'The specified bucket does not exist.');
    if (object && bucketOf(object) !== bucket) return error(res, 404, 'notFound', 'The specified bucket does not exist.');

    if (upload && req.method === 'POST' && query.uploadType === 'multipart') {
      const parts = multipartParts(String(req.headers['content-type'] ?? ''), body);
      if (!parts || parts.length !== 2) return error(res, 400, 'invalid', 'Multipart upload needs metadata and media parts.');
      const metadata = JSON.parse(parts[0].toString('utf8')) as { name?: string };
      const name = query.name ?? metadata.name;
      if (!name) return error(res, 400, 'required', 'Required parameter: name');
      return store(res, name, parts[1]);
    }
    if (upload && req.method === 'POST' && query.uploadType === 'resumable' && !query.upload_id) {
      const metadata = body.length > 0 ? (JSON.parse(body.toString('utf8')) as { name?: string }) : {};
      const name = query.name ?? metadata.name;
      if (!name) return error(res, 400, 'required', 'Required parameter: name');
      const id = randomUUID();
      sessions.set(id, { name, parts: [], received: 0 });
      res.writeHead(200, { location: `${endpoint}/upload/storage/v1/b/${bucket}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`, 'content-length': '0' });
      return res.end();
    }
    if (upload && req.method === 'PUT' && query.upload_id) {
      const session = sessions.get(query.upload_id);
      if (!session) return error(res, 404, 'notFound', 'No such upload session.');
      // `A-B/N` a chunk of a known total, `A-B/*` a chunk before the total is known, `A-*/*` (or
      // `A-*/N`) the rest in this one request, `*/N` or `*/*` a status query.
      const range = /^bytes (?:(\d+)-(\d+|\*)|\*)\/(\d+|\*)$/.exec(String(req.headers['content-range'] ?? ''));
      if (!range) return error(res, 400, 'invalid', `Bad Content-Range '${req.headers['content-range']}'`);
      if (range[1] !== undefined) {
        if (Number(range[1]) !== session.received) return error(res, 400, 'invalid', `Content-Range starts at ${range[1]}; ${session.received} bytes received`);
        if (range[2] !== '*' && Number(range[2]) - Number(range[1]) + 1 !== body.length) return error(res, 400, 'invalid', 'Content-Range does not match the body');
        session.parts.push(body);
        session.received += body.length;
      }
      const whole = range[3] === '*' ? range[2] === '*' : Number(range[3]) === session.received;
      if (whole) {
        sessions.delete(query.upload_id);
        return store(res, session.name, Buffer.concat(session.parts));
      }
      res.writeHead(308, session.received > 0 ? { range: `bytes=0-${session.received - 1}`, 'content-length': '0' } : { 'content-length': '0' });
      return res.end();
    }
    if (object && (req.method === 'GET' || req.method === 'DELETE')) {
      const name = decodeURIComponent(object[2]);
      const data = objects.get(name);
      if (!data) return error(res, 404, 'notFound', `No such object: ${bucket}/${name}`);
      if (req.method === 'DELETE') {
        objects.delete(name);
        res.writeHead(204);
        return res.end();
      }
      if (query.alt !== 'media') {
        res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
        return res.end(JSON.stringify(resource(name)));
      }
      const headers: Record<string, string> = {
        'content-type': 'application/octet-stream',
        'x-goog-generation': String(generations.get(name)),
        'x-goog-metageneration': '1',
        'x-goog-stored-content-encoding': 'identity',
        'x-goog-stored-content-length': String(data.length),
        'x-goog-storage-class': 'STANDARD',
      };
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      if (range) {
        const start = Number(range[1]);
        const end = range[2] === '' ? data.length - 1 : Math.min(Number(range[2]), data.length - 1);
        if (start >= data.length) return error(res, 416, 'requestedRangeNotSatisfiable', 'The requested range cannot be satisfied.');
        res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${data.length}`, 'content-length': String(end - start + 1) });
        return res.end(data.subarray(start, end + 1));
      }
      res.writeHead(200, { ...headers, 'x-goog-hash': `crc32c=${crc32cBase64(data)},md5=${createHash('md5').update(data).digest('base64')}`, 'content-length': String(data.length) });
      return res.end(data);
    }
    return error(res, 404, 'notFound', `Not Found: ${req.method} ${url.pathname}`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e) => error(res, 500, 'backendError', (e as Error).message));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    bucket,
    objects,
    requests,
    failNext: (n) => void (failures = n),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The bodies of a `multipart/related; boundary=…` message. */
function multipartParts(contentType: string, body: Buffer): Buffer[] | undefined {
  const boundary = /boundary="?([^";]+)"?/.exec(contentType)?.[1];
  if (!/^multipart\/related/i.test(contentType) || !boundary) return undefined;
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let at = body.indexOf(delimiter);
  while (at >= 0) {
    const next = body.indexOf(delimiter, at + delimiter.length);
    if (next < 0) break;
    const part = body.subarray(at + delimiter.length, next);
    const headerEnd = part.indexOf('\r\n\r\n');
    // A part ends with CRLF before the next delimiter.
    parts.push(part.subarray(headerEnd + 4, part.length - 2));
    at = next;
  }
  return parts;
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32C (Castagnoli) as GCS reports it: the four bytes big-endian, base64. */
export function crc32cBase64(data: Buffer): string {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  const out = Buffer.alloc(4);
  out.writeUInt32BE((crc ^ 0xffffffff) >>> 0);
  return out.toString('base64');
}
