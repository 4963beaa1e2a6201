import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

/** Stand-ins for what Gyre's notifier posts to: an HTTP receiver (webhooks, Slack) and an SMTP server. */

export interface Received {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The raw body, as the signature was computed over it. */
  readonly body: string;
}

export interface HttpReceiver {
  readonly url: string;
  readonly received: Received[];
  /** Answers for a path, taken in order; after the last one, 200 `ok`. */
  answer(path: string, ...answers: { status: number; body?: string; headers?: Record<string, string> }[]): void;
  stop(): Promise<void>;
}

export async function startHttpReceiver(): Promise<HttpReceiver> {
  const received: Received[] = [];
  const scripted = new Map<string, { status: number; body?: string; headers?: Record<string, string> }[]>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const next = scripted.get(path)?.shift() ?? { status: 200, body: 'ok' };
      res.writeHead(next.status, { 'Content-Type': 'text/plain', ...next.headers });
      res.end(next.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    answer(path, ...answers) {
      scripted.set(path, answers);
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface Mail {
  /** The envelope's sender and recipients. */
  readonly from: string;
  readonly to: string[];
  /** The message as a mail client reads it (`mailparser`): headers unfolded and decoded. */
  readonly subject: string;
  readonly fromHeader: string;
  readonly text: string;
  readonly html: string | false;
  /** The whole message as the server received it. */
  readonly raw: string;
}

export interface SmtpStandIn {
  readonly url: string;
  readonly mails: Mail[];
  stop(): Promise<void>;
}

/** A local SMTP server (the `smtp-server` package) that keeps every message it accepts. */
export async function startSmtpServer(): Promise<SmtpStandIn> {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', async () => {
        const raw = Buffer.concat(chunks);
        const parsed = await simpleParser(raw);
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          subject: parsed.subject ?? '',
          fromHeader: parsed.from?.text ?? '',
          text: parsed.text ?? '',
          html: parsed.html ?? false,
          raw: raw.toString('utf8'),
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.server.address() as AddressInfo;
  return { url: `smtp://127.0.0.1:${port}`, mails, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Waits until `probe` answers something truthy. */
export async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
