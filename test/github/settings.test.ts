import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readGitHubAppSettings } from '../../runtime/github/settings';
import { readSettings } from '../../runtime/settings';

/** The GitHub App's settings: all or none, each checked at start, a bad one named. */
describe('GitHub App settings', () => {
  // Made as the tests are declared: the table below names the key file.
  const dir = mkdtempSync(join(tmpdir(), 'gyre-gh-settings-'));
  const keyFile = join(dir, 'app.pem');
  const secretFile = join(dir, 'secret');
  const secret = 'a-webhook-secret-of-some-length';
  writeFileSync(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string);
  writeFileSync(secretFile, `${secret}\n`);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const app = (more: Record<string, string> = {}) => ({ GYRE_GITHUB_APP_ID: '123456', GYRE_GITHUB_APP_PRIVATE_KEY_FILE: keyFile, GYRE_GITHUB_WEBHOOK_SECRET: secret, ...more });

  test('none set: no GitHub App', () => {
    expect(readGitHubAppSettings({})).toBeUndefined();
    expect(readSettings({ GYRE_DATA_DIR: dir }).github).toBeUndefined();
  });

  test("Gyre's code loads GitHub's clients only when the app is used (they are imported where they are called)", async () => {
    const probe = [
      "const Module = require('node:module');",
      'const seen = new Set();',
      'const load = Module._load;',
      "Module._load = function (request, ...rest) { if (/^@octokit\\/(rest|auth-app|webhooks)$/.test(request)) seen.add(request); return load.call(this, request, ...rest); };",
      "require('tsx/cjs');",
      "require('./runtime/server/gyre.ts');",
      "require('./runtime/cli/main.ts');",
      'console.log(JSON.stringify([...seen]));',
    ].join('\n');
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', probe], { cwd: join(__dirname, '..', '..') });
    expect(JSON.parse(stdout.trim().split('\n').pop()!)).toEqual([]);
  });

  test('github.com by default; GitHub Enterprise Server by its address, with the API under /api/v3', () => {
    expect(readGitHubAppSettings(app())).toMatchObject({ appId: 123456, webhookSecret: secret, webUrl: 'https://github.com', apiUrl: 'https://api.github.com', timeoutMs: 15_000 });
    expect(readGitHubAppSettings(app({ GYRE_GITHUB_URL: 'https://ghe.example.com/' }))).toMatchObject({ webUrl: 'https://ghe.example.com', apiUrl: 'https://ghe.example.com/api/v3' });
    expect(readGitHubAppSettings(app({ GYRE_GITHUB_URL: 'https://ghe.example.com', GYRE_GITHUB_API_URL: 'https://api.ghe.example.com' }))).toMatchObject({ apiUrl: 'https://api.ghe.example.com' });
    const fromFile = app({ GYRE_GITHUB_WEBHOOK_SECRET_FILE: secretFile });
    delete (fromFile as Record<string, string>).GYRE_GITHUB_WEBHOOK_SECRET;
    expect(readGitHubAppSettings(fromFile)?.webhookSecret).toBe(secret);
    expect(readSettings({ GYRE_DATA_DIR: dir, ...app() }).github?.appId).toBe(123456);
  });

  test.each([
    [{ GYRE_GITHUB_APP_ID: '123' }, /GYRE_GITHUB_APP_PRIVATE_KEY_FILE: is required/],
    [{ GYRE_GITHUB_WEBHOOK_SECRET: secret }, /GYRE_GITHUB_WEBHOOK_SECRET: is set but the GitHub App is not/],
    [app({ GYRE_GITHUB_APP_ID: 'Iv23liAbCdEf' }), /GYRE_GITHUB_APP_ID: 'Iv23liAbCdEf' is not an app id/],
    [app({ GYRE_GITHUB_APP_PRIVATE_KEY_FILE: '/nonexistent/key.pem' }), /GYRE_GITHUB_APP_PRIVATE_KEY_FILE: cannot read \/nonexistent\/key.pem: ENOENT/],
    [app({ GYRE_GITHUB_WEBHOOK_SECRET: '' }), /GYRE_GITHUB_WEBHOOK_SECRET: is required with the GitHub App/],
    [app({ GYRE_GITHUB_WEBHOOK_SECRET: 'short' }), /GYRE_GITHUB_WEBHOOK_SECRET: must be at least 16 characters/],
    [app({ GYRE_GITHUB_WEBHOOK_SECRET_FILE: '/etc/hostname' }), /GYRE_GITHUB_WEBHOOK_SECRET_FILE: and GYRE_GITHUB_WEBHOOK_SECRET are both set/],
    [app({ GYRE_GITHUB_URL: 'http://ghe.example.com' }), /GYRE_GITHUB_URL: http:\/\/ is allowed only for a loopback address/],
    [app({ GYRE_GITHUB_API_URL: 'not a url' }), /GYRE_GITHUB_API_URL: 'not a url' is not a URL/],
    [app({ GYRE_GITHUB_TIMEOUT_MS: '10' }), /GYRE_GITHUB_TIMEOUT_MS: '10' is not a whole number of milliseconds/],
  ])('%j is refused, naming the setting', (env, message) => {
    expect(() => readGitHubAppSettings(env)).toThrow(message);
  });

  test('a key that is not an RSA private key is refused, naming the file setting', () => {
    const notKey = join(dir, 'not-a-key.pem');
    writeFileSync(notKey, 'hello\n');
    expect(() => readGitHubAppSettings(app({ GYRE_GITHUB_APP_PRIVATE_KEY_FILE: notKey }))).toThrow(/GYRE_GITHUB_APP_PRIVATE_KEY_FILE: .*not-a-key.pem is not the app's RSA private key/);
    const ecKey = join(dir, 'ec.pem');
    writeFileSync(ecKey, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    expect(() => readGitHubAppSettings(app({ GYRE_GITHUB_APP_PRIVATE_KEY_FILE: ecKey }))).toThrow(/it is an ec key/);
  });
});
