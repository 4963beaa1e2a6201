import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createTestDatabase } from '../test/support/database';

/**
 * The floor: the smallest program that does what a trigger must do before its command runs, as
 * issue #19 describes it — an HTTP POST answered once one `INSERT` and a `NOTIFY` are committed in
 * PostgreSQL, a listener that claims the row with `FOR UPDATE SKIP LOCKED` and spawns the command
 * with `bash -c`, and a row update when it exits. No authentication, no config, no isolation, no
 * output kept: what is left is the machine's cost of an HTTP request, a few PostgreSQL round trips
 * and a process start. `npm run bench -- latency` (with DATABASE_URL) measures it the same way as
 * Gyre in the same run, so the targets' absolute figures can be read against what this machine
 * allows: the issue's 60 pipelines a second is the floor it measured on its own machine (61).
 *
 * It runs in a process of its own, on a fresh database, with as many slots as Gyre's default (4),
 * written in plain JavaScript with the `pg` driver Gyre uses, and started by `node -e` from the
 * repository (where `pg` resolves).
 */
const FLOOR_PROGRAM = `
const http = require('node:http');
const { spawn } = require('node:child_process');
const { Pool, Client } = require('pg');
const url = process.argv[1];
const SLOTS = 4;
const pool = new Pool({ connectionString: url, max: SLOTS + 2 });
const CLAIM = "UPDATE floor_jobs SET status = 'running' WHERE id = (SELECT id FROM floor_jobs WHERE status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, command";
let idle = SLOTS;
let wanted = false;
async function work() {
  if (idle === 0) { wanted = true; return; }
  idle--;
  try {
    for (;;) {
      wanted = false;
      const { rows } = await pool.query({ name: 'claim', text: CLAIM });
      if (rows.length === 0) { if (wanted) continue; return; }
      void work();
      await new Promise((resolve) => {
        const child = spawn('bash', ['-c', rows[0].command], { stdio: 'ignore' });
        child.on('error', resolve);
        child.on('exit', resolve);
      });
      await pool.query({ name: 'done', text: "UPDATE floor_jobs SET status = 'done' WHERE id = $1", values: [rows[0].id] });
    }
  } finally {
    idle++;
  }
}
(async () => {
  await pool.query('CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, status text NOT NULL, command text NOT NULL)');
  await pool.query("CREATE INDEX floor_jobs_queued ON floor_jobs (id) WHERE status = 'queued'");
  const listener = new Client({ connectionString: url });
  await listener.connect();
  listener.on('notification', () => void work());
  await listener.query('LISTEN floor');
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      try {
        const { command } = JSON.parse(body);
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          const { rows } = await client.query({ name: 'insert', text: "INSERT INTO floor_jobs (status, command) VALUES ('queued', $1) RETURNING id", values: [command] });
          await client.query("NOTIFY floor");
          await client.query('COMMIT');
          res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ id: String(rows[0].id) }));
        } finally {
          client.release();
        }
      } catch (error) {
        res.writeHead(500).end(String(error));
      }
    });
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write('listening ' + server.address().port + '\\n'));
})().catch((error) => { console.error(error); process.exit(1); });
`;

export interface FloorProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** The database's name: its PostgreSQL backends say it in their process titles. */
  readonly database: string;
  /** Queues `command`; resolves when the request is answered. */
  trigger(command: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startFloor(): Promise<FloorProcess> {
  const db = await createTestDatabase();
  const child = spawn(process.execPath, ['-e', FLOOR_PROGRAM, db.url], { cwd: `${__dirname}/..`, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const m = /^listening (\d+)$/.exec(line);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`the floor program exited with ${code} before listening`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    child,
    database: new URL(db.url).pathname.slice(1),
    async trigger(command) {
      const res = await fetch(`${url}/trigger`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ command }) });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`floor trigger → ${res.status} ${text}`);
      return (JSON.parse(text) as { id: string }).id;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
      await db.drop();
    },
  };
}
