import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { checkServerIdentity, connect, rootCertificates, type PeerCertificate } from 'node:tls';

/**
 * How `gyre doctor` talks to an install: plain HTTP(S) requests that trust the system's CAs, plus
 * a CA file when the operator gives one (`--ca-file`, e.g. for `tls.mode: self-signed`), so every
 * request (API, ops ports, artifact downloads) trusts the same certificates the TLS check did.
 */
export interface DoctorHttp {
  request(method: string, url: string, options?: { headers?: Record<string, string>; body?: unknown; timeoutMs?: number }): Promise<HttpAnswer>;
}

export interface HttpAnswer {
  readonly status: number;
  readonly contentType: string;
  readonly text: string;
  /** The body as JSON, or undefined when it is not JSON. */
  readonly json: any;
}

/** A request that got no HTTP answer: refused, timed out, TLS refused, unknown host. `code` is Node's (ECONNREFUSED, …). */
export class UnreachableError extends Error {
  constructor(
    readonly url: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Largest answer read (step output and artifacts the canary writes are a line each). */
const MAX_ANSWER_BYTES = 8 * 1024 * 1024;

export function createDoctorHttp(options: { caPem?: string; timeoutMs?: number } = {}): DoctorHttp {
  const ca = options.caPem ? [...rootCertificates, options.caPem] : undefined;
  return {
    request(method, url, { headers = {}, body, timeoutMs = options.timeoutMs ?? 10_000 } = {}) {
      return new Promise<HttpAnswer>((resolve, reject) => {
        let target: URL;
        try {
          target = new URL(url);
        } catch {
          reject(new UnreachableError(url, 'EINVAL', `${url} is not a URL`));
          return;
        }
        const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
        const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
        const req = send(
          target,
          {
            method,
            headers: { Accept: 'application/json', ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) } : {}), ...headers },
            ...(ca && target.protocol === 'https:' ? { ca } : {}),
            timeout: timeoutMs,
          },
          (res) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on('data', (c: Buffer) => {
              size += c.length;
              if (size > MAX_ANSWER_BYTES) {
                req.destroy(new Error(`the answer is larger than ${MAX_ANSWER_BYTES} bytes`));
                return;
              }
              chunks.push(c);
            });
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let json: unknown;
              try {
                json = text ? JSON.parse(text) : undefined;
              } catch {
                json = undefined;
              }
              resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text, json });
            });
            res.on('error', (error) => reject(unreachable(url, error)));
          },
        );
        req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })));
        req.on('error', (error) => reject(unreachable(url, error)));
        req.end(payload);
      });
    },
  };
}

function unreachable(url: string, error: Error): UnreachableError {
  const code = (error as { code?: string }).code ?? 'EUNKNOWN';
  return new UnreachableError(url, code, `${error.message}${code && !error.message.includes(code) ? ` (${code})` : ''}`);
}

export interface TlsReport {
  /** The chain verifies against the trusted CAs and the certificate names the host. */
  readonly trusted: boolean;
  /** Why not: Node's verification error (SELF_SIGNED_CERT_IN_CHAIN, CERT_HAS_EXPIRED, …) or the name mismatch. */
  readonly problem?: string;
  readonly subject: string;
  readonly issuer: string;
  readonly altNames: string;
  readonly validTo: Date;
  readonly daysLeft: number;
}

/** Opens a TLS connection to `url`'s host and reports on the certificate it presents, whether or not it is trusted. */
export function inspectTls(url: string, options: { caPem?: string; timeoutMs?: number; now?: Date } = {}): Promise<TlsReport> {
  const target = new URL(url);
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const port = Number(target.port || 443);
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      // SNI is for names only; an address is checked against the certificate's IP entries.
      servername: /^[\d.]+$|:/.test(host) ? undefined : host,
      ca: options.caPem ? [...rootCertificates, options.caPem] : undefined,
      rejectUnauthorized: false,
    });
    socket.setTimeout(timeoutMs, () => socket.destroy(Object.assign(new Error(`no TLS handshake within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })));
    socket.once('error', (error) => reject(unreachable(url, error)));
    socket.once('secureConnect', () => {
      const cert: PeerCertificate = socket.getPeerCertificate();
      const chainError = socket.authorized ? undefined : String(socket.authorizationError ?? 'not trusted');
      const nameError = cert && Object.keys(cert).length ? checkServerIdentity(host, cert) : new Error('the server presented no certificate');
      socket.end();
      const validTo = new Date(cert.valid_to);
      const now = options.now ?? new Date();
      resolve({
        trusted: !chainError && !nameError,
        // Node names a host mismatch only by its code; checkServerIdentity says which names the certificate has.
        problem: [chainError === 'ERR_TLS_CERT_ALTNAME_INVALID' && nameError ? undefined : chainError, nameError?.message].filter(Boolean).join('; ') || undefined,
        subject: cert.subject?.CN ? `CN=${cert.subject.CN}` : JSON.stringify(cert.subject ?? {}),
        issuer: cert.issuer?.CN ? `CN=${cert.issuer.CN}` : JSON.stringify(cert.issuer ?? {}),
        altNames: cert.subjectaltname ?? '',
        validTo,
        daysLeft: Math.floor((validTo.getTime() - now.getTime()) / 86_400_000),
      });
    });
  });
}
