import { generateKeyPairSync } from 'node:crypto';
import type Sshpk from 'sshpk';
import { InputError } from '../domain/errors';

/**
 * SSH keys as OpenSSH writes and reads them, through `sshpk` (its parsers of PEM, PKCS#1, PKCS#8 and
 * OpenSSH private keys, and its fingerprints): what Gyre makes for a checkout key, what it accepts
 * as an additional key, and fingerprints exactly as `ssh-keygen -l` prints them. Errors never hold
 * any part of a key.
 */

/** A key pair as Gyre keeps it: the private half only ever sealed (runtime/secrets/secret-box.ts). */
export interface SshKeyPair {
  /** The private key, PEM-armoured text ending in a newline (what goes into the job's file). */
  readonly privateKey: string;
  /** The public key, one line: `ssh-ed25519 AAAA… comment`. */
  readonly publicKey: string;
  /** `ssh-keygen -l -E md5` without its `MD5:`: 16 colon-separated lower-case hex bytes. */
  readonly fingerprint: string;
  /** `ssh-keygen -l` (-E sha256): `SHA256:` and unpadded base64. */
  readonly fingerprintSha256: string;
}

/** The largest private key accepted, in bytes (an RSA key of 16384 bits in PEM is about 12.5 KiB). */
export const MAX_PRIVATE_KEY_BYTES = 16 * 1024;
/** Key types OpenSSH still uses: not DSA (ssh-dss), which it turned off in 7.0. */
const KEY_TYPES = new Set(['rsa', 'ecdsa', 'ed25519']);
/** OpenSSH refuses RSA keys shorter than this (RequiredRSASize). */
const MIN_RSA_BITS = 1024;

/** sshpk loads on first use, not with the server: an embedded server that never sees a key does not hold it (issue #19). */
let loadedSshpk: typeof Sshpk | undefined;
const sshpk = (): typeof Sshpk => (loadedSshpk ??= require('sshpk') as typeof Sshpk);

function pairOf(key: Sshpk.PrivateKey, privateKey: string, comment: string): SshKeyPair {
  const pub = key.toPublic();
  pub.comment = comment;
  return {
    privateKey,
    publicKey: pub.toString('ssh'),
    fingerprint: key.fingerprint('md5').toString('hex'),
    fingerprintSha256: key.fingerprint('sha256').toString('base64'),
  };
}

/**
 * A new Ed25519 key pair (node:crypto), the private half in OpenSSH's own format (what
 * `ssh-keygen -t ed25519` writes, which every OpenSSH client reads). `comment` ends the public key's line.
 */
export function generateSshKeyPair(comment: string): SshKeyPair {
  const { privateKey } = generateKeyPairSync('ed25519');
  const key = sshpk().parsePrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 'pem');
  key.comment = comment;
  return pairOf(key, ensureNewline(key.toString('openssh')), comment);
}

function ensureNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

/**
 * A private key as given to the API, checked: PEM-armoured (PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE
 * KEY`, PKCS#8 `PRIVATE KEY`, or OpenSSH's `OPENSSH PRIVATE KEY`), RSA (1024 bits or more), ECDSA or
 * Ed25519, without a passphrase (a job has no one to type it, as in CircleCI). Answers the key as
 * given (its line ends made `\n`, one newline at the end), its public half and fingerprints.
 */
export function parseSshPrivateKey(text: unknown, field = 'private_key'): SshKeyPair {
  if (typeof text !== 'string' || text.trim() === '') throw new InputError(`${field} is required: a private key in PEM form (-----BEGIN … PRIVATE KEY-----)`, field);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_PRIVATE_KEY_BYTES) throw new InputError(`${field} is ${bytes} bytes; a private key may be at most ${MAX_PRIVATE_KEY_BYTES} bytes`, field);
  const normalised = ensureNewline(text.replace(/\r\n?/g, '\n').trim());
  if (!/^-----BEGIN (RSA |EC |OPENSSH |)PRIVATE KEY-----\n[\s\S]+\n-----END (RSA |EC |OPENSSH |)PRIVATE KEY-----\n$/.test(normalised)) {
    if (/^-----BEGIN (ENCRYPTED PRIVATE KEY|DSA PRIVATE KEY)-----/.test(normalised)) {
      throw new InputError(normalised.includes('ENCRYPTED') ? `${field} is encrypted with a passphrase; give it without one (ssh-keygen -p -N '' -f <file>): a job has no one to type it` : `${field} is a DSA key, which OpenSSH no longer uses; give an RSA, ECDSA or Ed25519 key`, field);
    }
    if (/^(ssh-|ecdsa-)/.test(normalised)) throw new InputError(`${field} is a public key; give the private half (the file without .pub)`, field);
    throw new InputError(`${field} is not a private key in PEM form: it must be one block from -----BEGIN … PRIVATE KEY----- to -----END … PRIVATE KEY----- (RSA, EC, PKCS#8 or OPENSSH)`, field);
  }
  if (/^Proc-Type: 4,ENCRYPTED/m.test(normalised)) throw new InputError(`${field} is encrypted with a passphrase; give it without one (ssh-keygen -p -N '' -f <file>): a job has no one to type it`, field);
  let key: Sshpk.PrivateKey;
  try {
    key = sshpk().parsePrivateKey(normalised, 'auto');
  } catch (error) {
    if ((error as Error).name === 'KeyEncryptedError') {
      throw new InputError(`${field} is encrypted with a passphrase; give it without one (ssh-keygen -p -N '' -f <file>): a job has no one to type it`, field);
    }
    // No cause and none of the parser's words: they may quote the key.
    throw new InputError(`${field} could not be read as an RSA, ECDSA or Ed25519 private key (it is damaged, or of another kind)`, field);
  }
  if (!KEY_TYPES.has(key.type)) throw new InputError(`${field} is a ${key.type.toUpperCase()} key; give an RSA, ECDSA or Ed25519 key`, field);
  if (key.type === 'rsa' && key.size < MIN_RSA_BITS) throw new InputError(`${field} is an RSA key of ${key.size} bits; OpenSSH needs ${MIN_RSA_BITS} or more`, field);
  return pairOf(key, normalised, '');
}

/** A fingerprint as a caller may write it: MD5 colon hex (an `MD5:` before it allowed, any case), or `SHA256:` and base64. */
export type FingerprintQuery = { readonly kind: 'md5'; readonly value: string } | { readonly kind: 'sha256'; readonly value: string };

const MD5_FINGERPRINT = /^(?:MD5:)?([0-9a-f]{2}(?::[0-9a-f]{2}){15})$/i;
const SHA256_FINGERPRINT = /^SHA256:([A-Za-z0-9+/]{43})=?$/;

/** Reads a fingerprint in either form; undefined when it is neither. */
export function parseFingerprint(text: string): FingerprintQuery | undefined {
  const md5 = MD5_FINGERPRINT.exec(text.trim());
  if (md5) return { kind: 'md5', value: md5[1].toLowerCase() };
  const sha = SHA256_FINGERPRINT.exec(text.trim());
  if (sha) return { kind: 'sha256', value: `SHA256:${sha[1]}` };
  return undefined;
}

/** Like `parseFingerprint`, refusing what is neither form with a message naming the input. */
export function checkFingerprint(text: unknown, field = 'fingerprint'): FingerprintQuery {
  const parsed = typeof text === 'string' ? parseFingerprint(text) : undefined;
  if (!parsed) {
    const shown = typeof text === 'string' ? JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text) : String(typeof text);
    throw new InputError(`${field} ${shown} is not an SSH key fingerprint: give MD5 colon hex (c9:0b:1c:…, 16 bytes) or SHA256:<base64>, as ssh-keygen -l prints them`, field);
  }
  return parsed;
}

/**
 * A host name as an `~/.ssh/config` `Host` line may hold it: letters, digits, `.`, `-`, `_`, and `*`
 * or `?` patterns, up to 253 characters; '' for every host. Nothing that would end the line or
 * start another option.
 */
export function checkHostname(text: unknown, field = 'hostname'): string {
  if (text === undefined || text === null || text === '') return '';
  if (typeof text !== 'string') throw new InputError(`${field} must be a string`, field);
  if (text.length > 253 || !/^[A-Za-z0-9*?]([A-Za-z0-9.*?_-]*[A-Za-z0-9*?])?$/.test(text)) {
    throw new InputError(`${field} ${JSON.stringify(text.slice(0, 100))} is not a host name: letters, digits, '.', '-', '_' (and '*' or '?' patterns), up to 253 characters`, field);
  }
  return text.toLowerCase();
}
