import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { DeliveryRefused } from '../outbox/outbox';
import type { DestinationPolicy } from './settings';

/**
 * Where webhooks and chat messages may be posted, and the one HTTP client that posts them
 * (docs/notifications.md, "Where deliveries may go"). A project admin chooses the URL and a
 * build's author may be the project admin of a fork's copy, so a URL is hostile input: it must not
 * make the notifier reach the clouds' metadata service, the database, Nomad or Gyre's own ports.
 *
 * The rule is checked twice: on the URL when it is saved (scheme, and an address written in it),
 * and on every address its host name resolves to at the moment of sending, by the lookup the
 * connection itself uses, so a name that resolves to a public address when saved and to
 * 127.0.0.1 when sent (DNS rebinding) is refused, and nothing connects to an address not checked.
 * Redirects are not followed.
 */

/** A destination the rule refuses: final for a delivery (never tried again), a 400 for an API request. */
export class DestinationRefused extends DeliveryRefused {}

/** Address ranges (ipaddr.js names) allowed always, and with `allowPrivate`. All others are refused. */
const PUBLIC_RANGES = new Set(['unicast']);
const PRIVATE_RANGES = new Set(['private', 'loopback', 'carrierGradeNat', 'uniqueLocal']);
/** Cloud metadata services outside the link-local range (AWS's IPv6 one, Alibaba's): refused even with `allowPrivate`. */
const METADATA_ADDRESSES = new Set(['fd00:ec2::254', '100.100.100.200']);

/** Why an address is refused, or undefined when the rule allows it. */
export function refusalOf(address: string, policy: Pick<DestinationPolicy, 'allowPrivate'>): string | undefined {
  if (!ipaddr.isValid(address)) return `'${address}' is not an IP address`;
  // An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 address it is.
  const parsed = ipaddr.process(address);
  const range = parsed.range();
  if (METADATA_ADDRESSES.has(parsed.toString())) return `${parsed.toString()} is a cloud metadata service, which deliveries never go to`;
  if (PUBLIC_RANGES.has(range)) return undefined;
  if (PRIVATE_RANGES.has(range)) {
    return policy.allowPrivate ? undefined : `${parsed.toString()} is a ${range} address; deliveries go to public addresses only unless GYRE_WEBHOOKS_ALLOW_PRIVATE=true`;
  }
  return `${parsed.toString()} is a ${range} address, which deliveries never go to (link-local and metadata, unspecified, multicast, reserved and translated ranges are always refused)`;
}

/** The longest URL a webhook or Slack setting may hold. */
export const MAX_URL_LENGTH = 2048;

/**
 * Checks a URL against the rule as far as it can be without resolving: the scheme, no fragment,
 * and an address written as the host. Answers the parsed URL; throws DestinationRefused naming
 * the URL's host and what is allowed. `field` names the input in the message.
 */
export function checkDestinationUrl(raw: string, policy: Pick<DestinationPolicy, 'allowPrivate' | 'allowHttp'>, field = 'url'): URL {
  if (raw.length > MAX_URL_LENGTH) throw new DestinationRefused(`${field} is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new DestinationRefused(`${field} '${raw.slice(0, 200)}' is not a URL (allowed: https://host/path${policy.allowHttp ? ' or http://…' : ''})`);
  }
  const schemes = policy.allowHttp ? ['https:', 'http:'] : ['https:'];
  if (!schemes.includes(url.protocol)) {
    throw new DestinationRefused(`${field} must be an https:// URL${policy.allowHttp ? ' or http://' : ''}, not ${url.protocol}//… (plain http:// needs GYRE_WEBHOOKS_ALLOW_HTTP=true)`);
  }
  if (!url.hostname) throw new DestinationRefused(`${field} names no host`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) {
    const refusal = refusalOf(host, policy);
    if (refusal) throw new DestinationRefused(`${field} is refused: ${refusal}`);
  }
  return url;
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http(s).request that resolves the host and refuses it when any address it
 * resolves to is refused (a name with a public and a private address could otherwise be steered).
 * `resolve` is injectable so tests can play a rebinding DNS.
 */
export function guardedLookup(policy: Pick<DestinationPolicy, 'allowPrivate'>, resolve: typeof dnsLookup = dnsLookup) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolve(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '');
      const list = addresses as unknown as LookupAddress[];
      if (list.length === 0) return callback(Object.assign(new Error(`${hostname} resolves to no address`), { code: 'ENOTFOUND' }), '');
      for (const { address } of list) {
        const refusal = refusalOf(address, policy);
        if (refusal) return callback(new DestinationRefused(`${hostname} is refused: ${refusal}`), '');
      }
      if (options.all) callback(null, list);
      else callback(null, list[0].address, list[0].family);
    });
  };
}

/** What a receiver answered. */
export interface PostAnswer {
  readonly status: number;
  /** The first characters of the answer's body, control characters replaced. */
  readonly excerpt: string;
  readonly durationMs: number;
}

export interface PostOptions {
  readonly body: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly policy: DestinationPolicy;
  /** Check the receiver's TLS certificate (CircleCI's `verify-tls`). @default true */
  readonly verifyTls?: boolean;
  /** For tests: the DNS a rebinding attacker controls. */
  readonly resolve?: typeof dnsLookup;
}

/** Bytes of an answer's body read (the rest is not waited for); characters kept of them. */
const ANSWER_BYTES = 4096;
export const EXCERPT_CHARS = 500;

/** A readable excerpt of a receiver's answer. */
export function excerptOf(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '�').slice(0, EXCERPT_CHARS);
}

/**
 * POSTs a body to a URL the rule allows and answers the status and an excerpt of the answer;
 * throws DestinationRefused for a refused destination, and an Error naming what happened when
 * there is no answer within the policy's timeout. Never follows a redirect.
 */
export async function postToDestination(rawUrl: string, options: PostOptions): Promise<PostAnswer> {
  const url = checkDestinationUrl(rawUrl, options.policy);
  const started = Date.now();
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<PostAnswer>((resolvePost, rejectPost) => {
    let settled = false;
    const finish = (error: Error | undefined, answer?: PostAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (error) rejectPost(error);
      else resolvePost(answer!);
    };
    const req = send(
      url,
      {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(options.body)), ...options.headers },
        lookup: guardedLookup(options.policy, options.resolve) as never,
        rejectUnauthorized: options.verifyTls !== false,
        // A connection of its own: no pooled socket to an address checked for another request.
        agent: false,
      },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const done = () => finish(undefined, { status: res.statusCode ?? 0, excerpt: excerptOf(Buffer.concat(chunks).toString('utf8')), durationMs: Date.now() - started });
        res.on('data', (chunk: Buffer) => {
          if (size >= ANSWER_BYTES) return;
          chunks.push(chunk.subarray(0, ANSWER_BYTES - size));
          size += chunk.length;
          // Enough read: the rest of a large answer is not waited for.
          if (size >= ANSWER_BYTES) {
            done();
            res.destroy();
          }
        });
        res.on('end', done);
        res.on('error', (error) => finish(error));
        res.on('close', done);
      },
    );
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${options.policy.timeoutMs} ms`)), options.policy.timeoutMs);
    req.on('error', (error) => finish(error instanceof DestinationRefused ? error : new Error(`${url.host}: ${error.message}`)));
    req.end(options.body);
  });
}
