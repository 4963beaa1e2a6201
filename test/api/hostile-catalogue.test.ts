import { connect } from 'node:net';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip, gzipSync } from 'node:zlib';
import { extractLocal } from '../../runtime/agent/file-transfer';
import { parseJUnit } from '../../runtime/output/junit';
import { sendHostile } from '../support/hostile-send';
import { HOSTILE_CASES } from '../support/hostile-cases';
import { startHostileTarget, type HostileTarget } from '../support/hostile-server';
import { craftTar, type CraftedEntry } from '../support/tar';

interface ArchiveCase {
  readonly name: string;
  readonly entries: (CraftedEntry & { body?: string | Buffer })[];
  readonly refusal: RegExp;
  /** Paths relative to the case's directory (the parent of `dest`) that must not appear. */
  readonly mustNotExist?: string[];
}

const file = (name: string, body = 'x'): CraftedEntry & { body: string } => ({ name, type: 'file', mode: 0o644, mtime: 0, size: 0, body });
const link = (name: string, target: string, type: 'symlink' | 'hardlink' = 'symlink'): CraftedEntry => ({ name, type, mode: 0o777, mtime: 0, size: 0, linkname: target });
const dir = (name: string): CraftedEntry => ({ name, type: 'directory', mode: 0o755, mtime: 0, size: 0 });

const ARCHIVES: readonly ArchiveCase[] = [
  { name: 'an entry that climbs out with ..', entries: [file('../escaped.txt')], refusal: /would leave|\.\./, mustNotExist: ['escaped.txt'] },
  { name: 'an absolute entry', entries: [file('/tmp/gyre-absolute-escape.txt')], refusal: /absolute|would leave/ },
  { name: 'a symlink out, then a file through it', entries: [link('out', '..'), file('out/escaped.txt')], refusal: /leave|outside|link/, mustNotExist: ['escaped.txt'] },
  { name: 'the symlink chain a/b/c -> . then a/b/c/y -> ../../..', entries: [dir('a'), dir('a/b'), link('a/b/c', '.'), link('a/b/c/y', '../../..'), file('a/b/c/y/escaped.txt')], refusal: /leave|outside|link/, mustNotExist: ['escaped.txt'] },
  { name: 'a link target that climbs after a name', entries: [link('x', 'a/b/../../..')], refusal: /link|leave/ },
  { name: 'an absolute symlink target', entries: [link('etc', '/etc'), file('etc/gyre-escape')], refusal: /link|leave|outside|absolute/ },
  { name: 'a hard link to a file outside', entries: [link('passwd', '/etc/passwd', 'hardlink')], refusal: /link|leave|outside|absolute/ },
  { name: 'a hard link that climbs', entries: [link('h', '../x', 'hardlink')], refusal: /link|leave|\.\./ },
  { name: 'a character device', entries: [{ name: 'null', type: 'character-device', mode: 0o666, mtime: 0, size: 0 }], refusal: /device|not allowed|type/ },
  { name: 'a fifo', entries: [{ name: 'pipe', type: 'fifo', mode: 0o666, mtime: 0, size: 0 }], refusal: /fifo|not allowed|type/ },
  { name: 'a directory entry that climbs', entries: [dir('../escaped-dir')], refusal: /would leave|\.\./, mustNotExist: ['escaped-dir'] },
  { name: 'a file that replaces a directory made through a link', entries: [dir('d'), link('d/l', '../..'), dir('d/l/x')], refusal: /leave|outside|link/, mustNotExist: ['x'] },
  { name: 'a long (pax) name that climbs', entries: [file(`${'a'.repeat(120)}/../../escaped.txt`)], refusal: /would leave|\.\./, mustNotExist: ['escaped.txt'] },
  { name: 'a symlink whose target is empty', entries: [link('empty', '')], refusal: /link|target|empty/ },
];

const REPORTS: readonly { name: string; xml: string; refusal: RegExp }[] = [
  {
    name: 'a billion laughs (entity expansion)',
    xml: `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><testsuite><testcase name="&lol3;"/></testsuite>`,
    refusal: /DOCTYPE|entit/i,
  },
  { name: 'an external entity that reads a file', xml: `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><testsuite><testcase name="&xxe;"/></testsuite>`, refusal: /DOCTYPE|entit/i },
  { name: 'nesting 10,000 deep', xml: `<testsuites>${'<testsuite>'.repeat(10_000)}${'</testsuite>'.repeat(10_000)}</testsuites>`, refusal: /deep|nest|depth/i },
  { name: 'XML that does not parse', xml: '<testsuite><testcase name="a"></testsuite', refusal: /line \d+|parse|not valid|malformed|closing/i },
  { name: 'more than half a million elements', xml: `<testsuite>${'<testcase name="a"/>'.repeat(600_000)}</testsuite>`, refusal: /elements|too many/i },
];

/**
 * The hostile-input catalogue, against a Gyre running as its own process: every case gets the
 * answer it must (a 4xx with a message naming what was wrong, or a compile error), the server is
 * healthy after each, and nothing appears outside the directory it was given.
 *
 * Archives and JUnit reports are handled by the agent, not the server: those cases send a crafted
 * archive through the server's agent API (stored and served back byte for byte) into the agent's
 * own extraction, and hostile reports into the agent's JUnit reader.
 */
describe('the hostile-input catalogue', () => {
  let t: HostileTarget;
  beforeAll(async () => {
    // A long lease: the catalogue's agent cases use one task token throughout.
    t = await startHostileTarget({ env: { GYRE_LEASE_TTL_MS: '3600000' } });
  }, 120_000);
  afterAll(async () => {
    await t?.stop();
  });

  const healthy = async () => {
    expect(t.child.exitCode).toBeNull();
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    expect(t.strays()).toEqual([]);
  };

  it('has at least 150 cases across the public API, the agent API, compilation, names, archives and reports', () => {
    expect(HOSTILE_CASES.length + ARCHIVES.length + REPORTS.length).toBeGreaterThanOrEqual(150);
    expect(new Set(HOSTILE_CASES.map((c) => `${c.group}: ${c.name}`)).size).toBe(HOSTILE_CASES.length);
  });

  it('a client that closes the connection in the middle of an upload ends its own request and nothing else', async () => {
    const before = t.stderr().length;
    for (const path of [`/api/v2/agent/task/${t.claimed.task.taskId}/test-results`, `/api/v2/agent/task/${t.claimed.task.taskId}/artifacts`]) {
      await new Promise<void>((resolve, reject) => {
        const socket = connect(t.port, '127.0.0.1', () => {
          socket.write(`PUT ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.claimed.token}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{"name":"a"`);
          setTimeout(() => {
            socket.destroy();
            resolve();
          }, 200);
        });
        socket.on('error', reject);
      });
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(t.stderr().slice(before)).not.toMatch(/request failed/);
    await healthy();
  });

  it.each(HOSTILE_CASES.map((c) => [`${c.group}: ${c.name}`, c] as const))('%s', async (_name, c) => {
    const answer = await sendHostile(t, c.request(t));
    if ('compileError' in c.expect) {
      expect(answer.status).toBe(200);
      const body = JSON.parse(answer.body);
      expect(body.valid).toBe(false);
      expect(body.errors[0]?.message).toMatch(c.expect.compileError);
    } else {
      let message: unknown = answer.body.slice(0, 300);
      try {
        message = JSON.parse(answer.body).message;
      } catch {
        /* shown as text */
      }
      expect({ status: answer.status, message }).toEqual({ status: c.expect.status, message: expect.stringMatching(c.expect.message) });
    }
    await healthy();
  }, 60_000);

  describe('archives, through the agent API into the agent’s extraction', () => {
    let n = 0;
    it.each(ARCHIVES.map((a) => [a.name, a] as const))('%s', async (_name, a) => {
      const key = `hostile-${n++}`;
      const auth = { Authorization: `Bearer ${t.claimed.token}` };
      const base = `${t.url}/api/v2/agent/task/${t.claimed.task.taskId}`;
      const archive = gzipSync(craftTar(a.entries));
      const put = await fetch(`${base}/cache?key=${key}`, { method: 'PUT', headers: auth, body: archive });
      expect(put.status).toBe(200);
      const found = (await (await fetch(`${base}/cache/find`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ keys: [key] }) })).json()) as { cache: { id: string } };
      const download = await fetch(`${base}/cache/${found.cache.id}`, { headers: auth });
      const served = Buffer.from(await download.arrayBuffer());
      expect(served.equals(archive)).toBe(true);
      const dest = join(t.root, 'tmp', key, 'dest');
      mkdirSync(dest, { recursive: true });
      await expect(extractLocal(dest, Readable.from([served]).pipe(createGunzip()))).rejects.toThrow(a.refusal);
      for (const escaped of a.mustNotExist ?? []) expect(existsSync(join(t.root, 'tmp', key, escaped))).toBe(false);
      await healthy();
    });
  });

  describe('JUnit reports, into the agent’s reader', () => {
    it.each(REPORTS.map((r) => [r.name, r] as const))('%s', async (_name, r) => {
      expect(() => parseJUnit(r.xml)).toThrow(r.refusal);
      await healthy();
    });
  });
});

