import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { KeyWrapper } from './secret-box';

/**
 * The default key wrapper: a keyring in a file only Gyre's user may read (GYRE_SECRETS_KEY_FILE,
 * default `<GYRE_DATA_DIR>/secrets/keys`). One line per key, `<id> <base64 of 32 bytes>`; the last
 * line is the current key, earlier ones still unwrap what they wrapped. Lines starting with `#`
 * and blank lines are ignored.
 *
 * Gyre creates the file (0600, its directory 0700) with one random key at first use, and refuses
 * a file that group or others could read. `rotateLocalKey` (`gyre secrets rotate-key`) appends a
 * new current key; once `rewrapAll` has moved every row to it, older lines may be deleted. Back the
 * file up with the database: without it no secret opens.
 *
 * Data keys are wrapped with AES-256-GCM: a random 12-byte IV, the 16-byte tag, and the key id as
 * additional data, so a wrapped key does not unwrap under another id.
 */

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const WRAPPED_BYTES = IV_BYTES + TAG_BYTES + KEY_BYTES;
const ID = /^[A-Za-z0-9._-]{1,64}$/;
const LINE = /^(\S+)\s+(\S+)$/;
const HEADER = [
  "# Gyre's secrets keyring: one '<id> <base64 of 32 bytes>' per line; the last line is the current key.",
  '# Keep it 0600 and back it up with the database: without it no secret opens.',
  '',
].join('\n');

/** Where the key file is when GYRE_SECRETS_KEY_FILE is unset. */
export function defaultKeyFile(dataDir: string): string {
  return join(dataDir, 'secrets', 'keys');
}

interface Keyring {
  readonly keys: ReadonlyMap<string, Buffer>;
  readonly current: string;
  /** The text as read, to append to. */
  readonly text: string;
  /** What identifies this version of the file (inode, size, times). */
  readonly stamp: string;
}

function stampOf(s: { ino: number; size: number; mtimeMs: number; ctimeMs: number }): string {
  return `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
}

/** Parses a keyring; errors name the file and the line, never what is on it. */
function parseKeyring(file: string, text: string, stamp: string): Keyring {
  const keys = new Map<string, Buffer>();
  let current: string | undefined;
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const match = LINE.exec(line);
    const key = match ? Buffer.from(match[2], 'base64') : undefined;
    if (!match || !ID.test(match[1]) || !key || key.length !== KEY_BYTES || key.toString('base64') !== match[2]) {
      throw new Error(`the key file ${file}, line ${index + 1}: not '<id> <base64 of ${KEY_BYTES} bytes>' (ids: letters, digits, '.', '_', '-')`);
    }
    if (keys.has(match[1])) throw new Error(`the key file ${file}, line ${index + 1}: key id '${match[1]}' is there twice`);
    keys.set(match[1], key);
    current = match[1];
  });
  if (current === undefined) throw new Error(`the key file ${file} holds no key (one '<id> <base64 of ${KEY_BYTES} bytes>' per line)`);
  return { keys, current, text, stamp };
}

/** Reads the keyring, refusing a file group or others could read or write. */
async function readKeyring(file: string): Promise<Keyring> {
  const handle = await open(file, constants.O_RDONLY);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new Error(`the key file ${file} is not a file`);
    if (info.mode & 0o077) {
      throw new Error(`the key file ${file} is open to group or others (mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}); only Gyre's user may read it: run chmod 600 ${file}`);
    }
    return parseKeyring(file, await handle.readFile('utf8'), stampOf(info));
  } finally {
    await handle.close();
  }
}

function newKeyLine(id: string): string {
  return `${id} ${randomBytes(KEY_BYTES).toString('base64')}\n`;
}

/** Writes `text` to a new 0600 file beside `file`, flushed; answers its path. */
async function writeTemp(file: string, text: string): Promise<string> {
  const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', 0o600);
  try {
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  return temp;
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY).catch(() => undefined);
  await handle?.sync().catch(() => undefined);
  await handle?.close();
}

/** Creates the key file with one key unless it exists (another process may be doing the same). */
async function createKeyring(file: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const temp = await writeTemp(file, HEADER + newKeyLine('1'));
  try {
    await link(temp, file); // fails if the file appeared meanwhile: that one wins
    await syncDir(dirname(file));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/**
 * Adds a new current key to the key file (written to a temporary file and renamed over it, so a
 * reader sees the old keyring or the new one, never half of one). Answers the new key's id
 * (`local:<id>`). Running Gyre processes pick it up at their next wrap. The file must exist: a
 * missing one more likely means a wrong path than a keyring to start afresh.
 */
export async function rotateLocalKey(file: string): Promise<string> {
  let ring: Keyring;
  try {
    ring = await readKeyring(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`there is no key file at ${file} to rotate (Gyre creates it at first start; check GYRE_SECRETS_KEY_FILE)`);
    throw error;
  }
  let n = ring.keys.size + 1;
  while (ring.keys.has(String(n))) n += 1;
  const id = String(n);
  const temp = await writeTemp(file, (ring.text === '' || ring.text.endsWith('\n') ? ring.text : `${ring.text}\n`) + newKeyLine(id));
  try {
    await rename(temp, file);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  await syncDir(dirname(file));
  return `local:${id}`;
}

export interface LocalKeyWrapperOptions {
  /** The key file; created with one key at first use when missing. */
  readonly file: string;
}

/** A KeyWrapper over a local keyring file (see the file's header). Key ids are `local:<id>`. */
export function createLocalKeyWrapper(options: LocalKeyWrapperOptions): KeyWrapper {
  const { file } = options;
  let ring: Keyring | undefined;
  let loading: Promise<Keyring> | undefined;

  /** The keyring, read again when the file changed since (a rotation by another process). */
  const keyring = (): Promise<Keyring> => {
    loading ??= (async () => {
      try {
        const info = await stat(file).catch(async (error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT') throw error;
          await createKeyring(file);
          return stat(file);
        });
        if (!ring || ring.stamp !== stampOf(info)) ring = await readKeyring(file);
        return ring;
      } finally {
        loading = undefined;
      }
    })();
    return loading;
  };

  const aad = (keyId: string) => Buffer.from(`gyre data key ${keyId}`, 'utf8');

  return {
    kind: 'local',
    async wrap(dataKey) {
      if (dataKey.length !== KEY_BYTES) throw new Error(`a data key is ${KEY_BYTES} bytes, not ${dataKey.length}`);
      const { keys, current } = await keyring();
      const keyId = `local:${current}`;
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', keys.get(current)!, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(keyId));
      const wrapped = Buffer.concat([cipher.update(dataKey), cipher.final()]);
      return { wrappedKey: Buffer.concat([iv, cipher.getAuthTag(), wrapped]), keyId };
    },
    async unwrap(wrappedKey, keyId) {
      if (!keyId.startsWith('local:')) {
        throw new Error(`key id '${keyId}' is not a local key: this Gyre unwraps with the key file ${file} (was GYRE_SECRETS_KEY_WRAPPER changed?)`);
      }
      const { keys } = await keyring();
      const key = keys.get(keyId.slice('local:'.length));
      if (!key) {
        const held = [...keys.keys()].map((id) => `local:${id}`).join(', ');
        throw new Error(`key ${keyId} is not in the key file ${file} (it holds ${held}); restore the file from a backup`);
      }
      if (wrappedKey.length !== WRAPPED_BYTES) throw new Error(`a data key wrapped by ${keyId} is ${WRAPPED_BYTES} bytes, not ${wrappedKey.length}`);
      const decipher = createDecipheriv('aes-256-gcm', key, wrappedKey.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
      decipher.setAAD(aad(keyId));
      decipher.setAuthTag(wrappedKey.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      try {
        return Buffer.concat([decipher.update(wrappedKey.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
      } catch {
        throw new Error(`the data key does not unwrap with ${keyId} from ${file}: the wrapped key was changed, or that line of the file is not the key it was wrapped with`);
      }
    },
    async currentKeyId() {
      return `local:${(await keyring()).current}`;
    },
  };
}
