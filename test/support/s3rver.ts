import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';

/**
 * An S3-compatible server (s3rver) on loopback with one bucket, `gyre-test`, and the settings
 * that point a Gyre at it. It takes any credentials; the SDK is given `S3RVER`.
 */
export async function startS3rver() {
  const S3rver = require('s3rver');
  const directory = mkdtempSync(join(tmpdir(), 'gyre-s3rver-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory, configureBuckets: [{ name: 'gyre-test' }] });
  objectsSwappedWhole(server.store);
  const { port } = await server.run();
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    bucket: 'gyre-test',
    endpoint,
    env: { GYRE_BLOB_STORE: 's3', GYRE_S3_BUCKET: 'gyre-test', GYRE_S3_ENDPOINT: endpoint, GYRE_S3_FORCE_PATH_STYLE: 'true', GYRE_S3_REGION: 'us-east-1' },
    async stop() {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/**
 * s3rver rewrites an object's file in place, and a GET streams that file under the length its
 * metadata gave, so a read that meets a write of the same key is cut short (the connection
 * closed before the announced length), hangs, or answers an error; S3 swaps an object whole, and
 * a reader sees the old one or the new. Gyre publishes documents while builds read them (the OIDC
 * discovery documents are written again once a new key is stored), so the stand-in is made to
 * behave as S3 does: reads and writes of one key take turns, a read holding its turn until it has
 * its body.
 */
function objectsSwappedWhole(store: any): void {
  const turns = new Map<string, { readers: number; writing: boolean; waiting: (() => void)[] }>();
  const turnOf = (key: string) => {
    let turn = turns.get(key);
    if (!turn) turns.set(key, (turn = { readers: 0, writing: false, waiting: [] }));
    return turn;
  };
  // A key's turn is kept once made (a few per test): one taken away while a woken waiter had not
  // yet run would let the next comer start a turn of its own beside it.
  const next = (key: string) => {
    for (const wake of turnOf(key).waiting.splice(0)) wake();
  };
  const reading = async (key: string) => {
    const turn = turnOf(key);
    while (turn.writing) await new Promise<void>((r) => turn.waiting.push(r));
    turn.readers++;
    return () => {
      turn.readers--;
      next(key);
    };
  };
  const writing = async (key: string) => {
    const turn = turnOf(key);
    while (turn.writing || turn.readers > 0) await new Promise<void>((r) => turn.waiting.push(r));
    turn.writing = true;
    return () => {
      turn.writing = false;
      next(key);
    };
  };
  const put = store.putObject.bind(store);
  store.putObject = async (object: { bucket: string; key: string }) => {
    const done = await writing(`${object.bucket}/${object.key}`);
    try {
      return await put(object);
    } finally {
      done();
    }
  };
  // The body is read while the turn is held and handed on from memory: a GET that answers 304
  // never reads (nor closes) the file s3rver opened, so a turn held until the body had been sent
  // would never end.
  const get = store.getObject.bind(store);
  store.getObject = async (bucket: string, key: string, options?: unknown) => {
    const done = await reading(`${bucket}/${key}`);
    try {
      const object = await get(bucket, key, options);
      if (object?.content) object.content = Readable.from([await buffer(object.content)]);
      return object;
    } finally {
      done();
    }
  };
}
