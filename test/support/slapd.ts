import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './processes';

/**
 * A throwaway OpenLDAP server for the LDAP sign-in tests: slapd from Debian's `slapd` package
 * (`apt-get install slapd ldap-utils`), configured with a slapd.conf in a temp directory (mdb
 * backend, the core/cosine/inetorgperson/nis schemas), seeded with slapadd, listening on
 * ldap://127.0.0.1:<free port>. Works as root (slapd then stays root: no `-u`) and as an ordinary user.
 */

export const SLAPD = '/usr/sbin/slapd';
const SLAPADD = '/usr/sbin/slapadd';
const SCHEMAS = ['core', 'cosine', 'inetorgperson', 'nis'].map((s) => `/etc/ldap/schema/${s}.schema`);

/** Why slapd (with `tls`, also openssl) cannot run here, naming the package to install; undefined when it can. */
export function slapdMissing(options: { tls?: boolean } = {}): string | undefined {
  const missing = [SLAPD, SLAPADD, ...SCHEMAS].filter((p) => !existsSync(p));
  if (missing.length) return `${missing.join(', ')} missing: install the Debian package slapd (apt-get install slapd ldap-utils)`;
  if (options.tls && spawnSync('openssl', ['version']).status !== 0) return 'openssl missing: install the Debian package openssl';
  return undefined;
}

export const BASE_DN = 'dc=gyre,dc=test';

/** People in the seeded directory, with their passwords (stored as {SSHA}). */
export const PEOPLE = {
  alice: { dn: `uid=alice,ou=people,${BASE_DN}`, password: 'Wonder land ü!', name: 'Alice Liddell', email: 'alice@gyre.test', groups: ['ci-admins', 'developers'] },
  bob: { dn: `uid=bob,ou=people,${BASE_DN}`, password: 'b0b-the-builder', name: 'Bob Builder', email: 'bob@gyre.test', groups: ['developers', 'release-managers'] },
  carol: { dn: `uid=carol,ou=people,${BASE_DN}`, password: 'carol', name: 'Carol Danvers', email: undefined, groups: [] as string[] },
} as const;

/** `dana` has two entries under ou=people (one in ou=contractors), both with this password. */
export const DUPLICATE = { login: 'dana', password: 'dana-twice' };

/** {SSHA}: SHA-1 of password and salt, then the salt, base64 (what slappasswd makes). */
function ssha(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(Buffer.from(password, 'utf8')).update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** LDIF value: base64 (`attr:: …`) unless it is plain safe ASCII. */
function attr(name: string, value: string): string {
  return /^[\x21-\x39\x3b\x3d-\x7e][\x20-\x7e]*$/.test(value) && !value.endsWith(' ') ? `${name}: ${value}` : `${name}:: ${Buffer.from(value, 'utf8').toString('base64')}`;
}

function seedLdif(servicePassword: string): string {
  const entries: string[][] = [
    [`dn: ${BASE_DN}`, 'objectClass: dcObject', 'objectClass: organization', 'dc: gyre', 'o: Gyre test directory'],
    [`dn: cn=gyre-reader,${BASE_DN}`, 'objectClass: organizationalRole', 'objectClass: simpleSecurityObject', 'cn: gyre-reader', attr('userPassword', ssha(servicePassword))],
    [`dn: ou=people,${BASE_DN}`, 'objectClass: organizationalUnit', 'ou: people'],
    [`dn: ou=contractors,ou=people,${BASE_DN}`, 'objectClass: organizationalUnit', 'ou: contractors'],
    [`dn: ou=groups,${BASE_DN}`, 'objectClass: organizationalUnit', 'ou: groups'],
  ];
  for (const [login, p] of Object.entries(PEOPLE)) {
    const [given, sn] = p.name.split(' ');
    entries.push([`dn: ${p.dn}`, 'objectClass: inetOrgPerson', `uid: ${login}`, `cn: ${p.name}`, `givenName: ${given}`, `sn: ${sn}`, ...(p.email ? [`mail: ${p.email}`] : []), attr('userPassword', ssha(p.password))]);
  }
  for (const ou of ['ou=people', 'ou=contractors,ou=people']) {
    entries.push([`dn: uid=dana,${ou},${BASE_DN}`, 'objectClass: inetOrgPerson', 'uid: dana', 'cn: Dana Scully', 'sn: Scully', attr('userPassword', ssha(DUPLICATE.password))]);
  }
  entries.push([`dn: cn=ci-admins,ou=groups,${BASE_DN}`, 'objectClass: groupOfNames', 'cn: ci-admins', `member: ${PEOPLE.alice.dn}`]);
  entries.push([`dn: cn=developers,ou=groups,${BASE_DN}`, 'objectClass: groupOfNames', 'cn: developers', `member: ${PEOPLE.alice.dn}`, `member: ${PEOPLE.bob.dn}`]);
  // A posixGroup lists people by uid (memberUid), not by DN.
  entries.push([`dn: cn=release-managers,ou=groups,${BASE_DN}`, 'objectClass: posixGroup', 'cn: release-managers', 'gidNumber: 5001', 'memberUid: bob']);
  // A group of someone else entirely, which nobody above may end up in.
  entries.push([`dn: cn=auditors,ou=groups,${BASE_DN}`, 'objectClass: groupOfNames', 'cn: auditors', `member: uid=eve,ou=people,${BASE_DN}`]);
  return entries.map((e) => e.join('\n')).join('\n\n') + '\n';
}

function slapdConf(dir: string, rootPassword: string, tls: boolean): string {
  return [
    ...SCHEMAS.map((s) => `include ${s}`),
    ...(tls ? [`TLSCACertificateFile ${join(dir, 'ca.crt')}`, `TLSCertificateFile ${join(dir, 'server.crt')}`, `TLSCertificateKeyFile ${join(dir, 'server.key')}`] : []),
    `pidfile ${join(dir, 'slapd.pid')}`,
    `argsfile ${join(dir, 'slapd.args')}`,
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    'loglevel none',
    // Like many directories (Active Directory among them), take a DN with an empty password as an
    // unauthenticated bind and answer success: the hole a sign-in must not fall into.
    'allow bind_anon_dn',
    'database mdb',
    'maxsize 16777216',
    `suffix "${BASE_DN}"`,
    `rootdn "cn=admin,${BASE_DN}"`,
    `rootpw ${ssha(rootPassword)}`,
    `directory ${join(dir, 'data')}`,
    // Passwords are only for binding; everything else is readable, anonymously too (one test
    // searches without a service account).
    'access to attrs=userPassword by anonymous auth by * none',
    'access to * by * read',
    '',
  ].join('\n');
}

/**
 * A CA, a server certificate it signed for 127.0.0.1 (IP SAN only), and a second CA that signed
 * nothing slapd shows (for "the wrong CA" cases). openssl, as .ci/tls-postgres.sh uses it.
 */
function makeCertificates(dir: string): void {
  const openssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 20_000 });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed (${r.status ?? r.signal}): ${r.stderr}${r.error ?? ''}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-days', '2', '-subj', '/CN=Gyre test LDAP CA', '-keyout', 'ca.key', '-out', 'ca.crt');
  openssl('req', '-x509', ...ec, '-days', '2', '-subj', '/CN=Some other CA', '-keyout', 'other-ca.key', '-out', 'other-ca.crt');
  openssl('req', ...ec, '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'server.ext', '-out', 'server.crt');
}

export interface Slapd {
  /** ldap://127.0.0.1:<port> */
  readonly url: string;
  /** The service account Gyre searches as (cn=gyre-reader, an ordinary entry, not the root DN). */
  readonly bindDn: string;
  readonly bindPassword: string;
  readonly baseDn: string;
  /** With `tls`: ldaps://127.0.0.1:<port>, its certificate (also offered by StartTLS on `url`) signed by `caFile`. */
  readonly ldapsUrl?: string;
  readonly caFile?: string;
  /** With `tls`: a CA that did not sign slapd's certificate. */
  readonly otherCaFile?: string;
  /** Kills slapd and removes its directory. */
  stop(): Promise<void>;
}

/** Answers once something accepts TCP connections on the port, or throws after `ms`. */
async function waitForPort(port: number, child: ChildProcess, output: () => string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`slapd exited (${child.exitCode ?? child.signalCode}): ${output()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > until) throw new Error(`slapd did not listen on 127.0.0.1:${port} within ${ms} ms: ${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a seeded slapd (see the module comment); call `stop()` when done. With `tls`, it also
 * offers StartTLS and listens on ldaps:// (needs openssl).
 */
export async function startSlapd(options: { tls?: boolean } = {}): Promise<Slapd> {
  const tls = options.tls === true;
  const missing = slapdMissing({ tls });
  if (missing) throw new Error(missing);
  const dir = mkdtempSync(join(tmpdir(), 'gyre-slapd-'));
  try {
    mkdirSync(join(dir, 'data'), { mode: 0o700 });
    const bindPassword = randomBytes(12).toString('base64url');
    const conf = join(dir, 'slapd.conf');
    if (tls) makeCertificates(dir);
    writeFileSync(conf, slapdConf(dir, randomBytes(12).toString('base64url'), tls), { mode: 0o600 });
    writeFileSync(join(dir, 'seed.ldif'), seedLdif(bindPassword));
    const add = spawnSync(SLAPADD, ['-q', '-f', conf, '-l', join(dir, 'seed.ldif')], { encoding: 'utf8', timeout: 20_000 });
    if (add.status !== 0) throw new Error(`slapadd failed (${add.status ?? add.signal}): ${add.stderr}${add.error ?? ''}`);

    const port = await freePort();
    const url = `ldap://127.0.0.1:${port}`;
    const ldapsPort = tls ? await freePort() : undefined;
    const ldapsUrl = tls ? `ldaps://127.0.0.1:${ldapsPort}` : undefined;
    const listeners = [`${url}/`, ...(ldapsUrl ? [`${ldapsUrl}/`] : [])].join(' ');
    // -d 0: stay in the foreground (so the child is slapd itself) and log nothing.
    const child = spawn(SLAPD, ['-f', conf, '-h', listeners, '-d', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      await waitForPort(port, child, () => output);
      if (ldapsPort) await waitForPort(ldapsPort, child, () => output);
    } catch (error) {
      await stop();
      throw error;
    }
    const certificates = tls ? { ldapsUrl, caFile: join(dir, 'ca.crt'), otherCaFile: join(dir, 'other-ca.crt') } : {};
    return { url, bindDn: `cn=gyre-reader,${BASE_DN}`, bindPassword, baseDn: BASE_DN, ...certificates, stop };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}
