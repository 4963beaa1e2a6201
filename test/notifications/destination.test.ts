import { createHmac } from 'node:crypto';
import type { LookupAddress } from 'node:dns';
import { checkDestinationUrl, DestinationRefused, postToDestination, refusalOf } from '../../runtime/notifications/destination';
import { readNotificationSettings, type DestinationPolicy } from '../../runtime/notifications/settings';
import { emailOf, signatureOf, slackMessageOf, type WorkflowFacts } from '../../runtime/notifications/payloads';
import { startHttpReceiver, type HttpReceiver } from './receivers';

/**
 * Where webhooks and chat messages may go (the SSRF rule, docs/notifications.md): a project admin
 * or a hostile build's author chooses the URL, so the notifier must never be made to reach
 * loopback, the metadata service or private addresses unless the operator allows them, whatever
 * the URL says or its name resolves to when the delivery is sent.
 */

const STRICT: DestinationPolicy = { allowPrivate: false, allowHttp: true, timeoutMs: 2000 };
const PRIVATE_OK: DestinationPolicy = { allowPrivate: true, allowHttp: true, timeoutMs: 2000 };

/** A DNS an attacker controls: every name resolves to `address`. */
const dnsAnswering =
  (address: string) =>
  (_host: string, _options: unknown, callback: (error: Error | null, addresses: LookupAddress[]) => void): void =>
    callback(null, [{ address, family: address.includes(':') ? 6 : 4 }]);

describe('the SSRF rule', () => {
  let receiver: HttpReceiver;
  beforeAll(async () => {
    receiver = await startHttpReceiver();
  });
  afterAll(() => receiver.stop());

  test('refuses loopback, private and metadata addresses, in every spelling, unless private ones are allowed', () => {
    const refusedByDefault = ['127.0.0.1', '::1', '::ffff:127.0.0.1', '10.1.2.3', '192.168.0.10', '172.16.5.4', '100.64.1.1', 'fd12::1'];
    for (const address of refusedByDefault) {
      expect({ address, refusal: refusalOf(address, STRICT) }).toEqual({ address, refusal: expect.stringMatching(/GYRE_WEBHOOKS_ALLOW_PRIVATE=true/) });
      expect({ address, refusal: refusalOf(address, PRIVATE_OK) }).toEqual({ address, refusal: undefined });
    }
    // Never allowed, whatever the setting: the metadata services, link-local, unspecified (0.0.0.0 reaches localhost on Linux), multicast.
    for (const address of ['169.254.169.254', 'fe80::1', 'fd00:ec2::254', '100.100.100.200', '0.0.0.0', '::', '224.0.0.1', '255.255.255.255', '::ffff:169.254.169.254']) {
      expect({ address, refusal: refusalOf(address, PRIVATE_OK) }).toEqual({ address, refusal: expect.any(String) });
    }
    for (const address of ['8.8.8.8', '2606:4700:4700::1111']) expect(refusalOf(address, STRICT)).toBeUndefined();
  });

  test('checks the address written in a URL, however it is written, and the scheme', () => {
    // The URL parser turns each of these into 127.0.0.1 (decimal, short and hex forms).
    for (const url of ['http://127.0.0.1:9/x', 'http://2130706433/', 'http://127.1/', 'http://0x7f000001/', 'http://[::1]/', 'http://[::ffff:7f00:1]/']) {
      expect(() => checkDestinationUrl(url, STRICT)).toThrow(DestinationRefused);
    }
    expect(() => checkDestinationUrl('http://169.254.169.254/latest/meta-data/', PRIVATE_OK)).toThrow(/169\.254\.169\.254 is a linkLocal address/);
    expect(() => checkDestinationUrl('http://example.com/hook', { ...STRICT, allowHttp: false })).toThrow(/must be an https:\/\/ URL.*GYRE_WEBHOOKS_ALLOW_HTTP=true/);
    expect(() => checkDestinationUrl('file:///etc/passwd', STRICT)).toThrow(/not file:/);
    expect(() => checkDestinationUrl('gopher://example.com/', STRICT)).toThrow(DestinationRefused);
    expect(() => checkDestinationUrl('not a url', STRICT)).toThrow(/is not a URL/);
    expect(checkDestinationUrl('https://hooks.example.com/services/T0/B0/x', STRICT).host).toBe('hooks.example.com');
  });

  test('refuses at sending time a name that resolves to a refused address (DNS rebinding), and nothing reaches the receiver', async () => {
    const port = new URL(receiver.url).port;
    const before = receiver.received.length;
    // The name looked public when the webhook was saved; now it resolves to the loopback receiver.
    const sent = postToDestination(`http://hooks.rebind.test:${port}/hook`, { body: '{}', headers: {}, policy: STRICT, resolve: dnsAnswering('127.0.0.1') as never });
    await expect(sent).rejects.toThrow(DestinationRefused);
    await expect(sent).rejects.toThrow(/hooks\.rebind\.test is refused: 127\.0\.0\.1 is a loopback address/);
    // `localhost` through the real resolver, and an address written in the URL.
    await expect(postToDestination(`http://localhost:${port}/hook`, { body: '{}', headers: {}, policy: STRICT })).rejects.toThrow(DestinationRefused);
    await expect(postToDestination(`${receiver.url}/hook`, { body: '{}', headers: {}, policy: STRICT })).rejects.toThrow(DestinationRefused);
    expect(receiver.received.length).toBe(before);
    // With private addresses allowed, the same name is delivered to.
    const answer = await postToDestination(`http://hooks.rebind.test:${port}/hook`, { body: '{"a":1}', headers: {}, policy: PRIVATE_OK, resolve: dnsAnswering('127.0.0.1') as never });
    expect(answer.status).toBe(200);
    expect(receiver.received.at(-1)).toMatchObject({ path: '/hook', body: '{"a":1}' });
  });

  test('does not follow a redirect, and keeps only the start of a long answer', async () => {
    receiver.answer('/moved', { status: 302, body: 'gone', headers: { Location: 'http://169.254.169.254/latest/meta-data/' } });
    receiver.answer('/long', { status: 500, body: `${'x'.repeat(100_000)}` });
    const moved = await postToDestination(`${receiver.url}/moved`, { body: '{}', headers: {}, policy: PRIVATE_OK });
    expect(moved).toMatchObject({ status: 302, excerpt: 'gone' });
    expect(receiver.received.filter((r) => r.path !== '/moved' && r.path !== '/hook')).toEqual([]);
    const long = await postToDestination(`${receiver.url}/long`, { body: '{}', headers: {}, policy: PRIVATE_OK });
    expect(long.status).toBe(500);
    expect(long.excerpt.length).toBe(500);
  });

  test('gives up on a receiver that does not answer within the timeout', async () => {
    const { createServer } = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    const started = Date.now();
    await expect(postToDestination(`http://127.0.0.1:${port}/`, { body: '{}', headers: {}, policy: { ...PRIVATE_OK, timeoutMs: 300 } })).rejects.toThrow(/^127\.0\.0\.1:\d+: no answer within 300 ms$/);
    expect(Date.now() - started).toBeLessThan(10_000); // not a hang; room for a loaded machine
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  }, 10_000);
});

describe('settings', () => {
  test('defaults refuse private addresses and plain http; bad values name the setting', () => {
    expect(readNotificationSettings({})).toEqual({ smtp: undefined, destinations: { allowPrivate: false, allowHttp: false, timeoutMs: 10_000 }, keepDays: 14 });
    expect(readNotificationSettings({ GYRE_SMTP_URL: 'smtps://u:p@mail.example.com:465', GYRE_SMTP_FROM: 'CI <ci@example.com>' }).smtp).toEqual({ url: 'smtps://u:p@mail.example.com:465', from: 'CI <ci@example.com>' });
    expect(() => readNotificationSettings({ GYRE_SMTP_URL: 'http://u:hunter2@mail.example.com' })).toThrow(/^GYRE_SMTP_URL: 'http:\/\/u:\*\*\*@mail\.example\.com' must start with smtp:\/\/ or smtps:\/\//);
    expect(() => readNotificationSettings({ GYRE_SMTP_FROM: 'ci@example.com' })).toThrow(/^GYRE_SMTP_FROM: is set but GYRE_SMTP_URL is not/);
    expect(() => readNotificationSettings({ GYRE_SMTP_URL: 'smtp://mail', GYRE_SMTP_FROM: 'a@b\r\nBcc: x@evil' })).toThrow(/^GYRE_SMTP_FROM:/);
    expect(() => readNotificationSettings({ GYRE_WEBHOOKS_ALLOW_PRIVATE: 'sure' })).toThrow(/^GYRE_WEBHOOKS_ALLOW_PRIVATE: 'sure' is not a boolean/);
    expect(() => readNotificationSettings({ GYRE_WEBHOOK_TIMEOUT_MS: '5' })).toThrow(/^GYRE_WEBHOOK_TIMEOUT_MS: 5 is out of range/);
  });
});

describe('what is sent', () => {
  const facts: WorkflowFacts = {
    workflow: { id: 'w', name: 'build', status: 'failed', created_at: '2026-01-01T00:00:00.000Z', stopped_at: '2026-01-01T00:01:00.000Z' },
    pipeline: { id: 'p', number: 7, created_at: '2026-01-01T00:00:00.000Z', trigger_type: 'api', branch: 'fix<!channel>', tag: null, revision: 'abcdef0123456789', commit_subject: 'Say <@U123> & <https://evil.example|click>\r\nBcc: x@evil.example' },
    project: { id: 'pr', slug: 'gh/acme/app', name: 'app', repo_url: '/repo' },
    organization: { id: 'o', name: 'acme' },
    url: 'http://gyre.example/#/pipeline/p/workflows/w',
  };

  test('the signature is CircleCI’s v1: the hex HMAC-SHA256 of the body with the secret', () => {
    expect(signatureOf('{"a":1}', 's3cret')).toBe(`v1=${createHmac('sha256', 's3cret').update('{"a":1}').digest('hex')}`);
  });

  test('a Slack message cannot mention, ping or link through a branch name or commit subject', () => {
    const { text } = slackMessageOf('failed', facts, ['compile']);
    expect(text).toContain('fix&lt;!channel&gt;');
    expect(text).toContain('Say &lt;@U123&gt; &amp; &lt;https://evil.example|click&gt;');
    expect(text).not.toMatch(/<!channel>|<@U123>|<https:\/\/evil/);
    // The one link is Gyre's own.
    expect(text.match(/<[^&]/g)).toEqual(['<h']);
    expect(text).toContain('<http://gyre.example/#/pipeline/p/workflows/w|open in Gyre>');
  });

  test('an email is text on one subject line, whatever the commit subject holds', () => {
    const mail = emailOf('failed', facts, ['compile']);
    expect(mail.subject).toBe('[gh/acme/app] Failed: workflow build on branch fix<!channel> (pipeline 7)');
    expect(mail.text).not.toMatch(/\r|\nBcc:/);
    expect(mail.text).toContain('Failed jobs: compile');
    expect(emailOf('fixed', { ...facts, workflow: { ...facts.workflow, status: 'success' } }, []).subject).toMatch(/^\[gh\/acme\/app\] Fixed: workflow build/);
  });
});
