import { connect } from 'node:net';
import { createServer, type Server } from 'node:tls';

/**
 * A TLS front for an engine's unix socket: mutual TLS on a TCP port, each connection piped whole to
 * the socket (so attach, exec and build streams pass as they are). Only clients with a certificate
 * from `ca` get through; the handshake of any other client fails before a byte reaches the engine.
 */
export interface TlsProxy {
  readonly port: number;
  close(): Promise<void>;
}

export async function startTlsProxy(options: { host: string; port?: number; ca: string; cert: string; key: string; socketPath: string }): Promise<TlsProxy> {
  const openSockets = new Set<{ destroy(): void }>();
  const server: Server = createServer({ allowHalfOpen: true, ca: [options.ca], cert: options.cert, key: options.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (client) => {
    const engine = connect(options.socketPath);
    openSockets.add(client);
    openSockets.add(engine);
    // Half-closes pass through: `docker run` without stdin closes its sending side at once (a TLS
    // close_notify) and still reads the container's output (allowHalfOpen below).
    client.pipe(engine).pipe(client);
    const end = () => {
      openSockets.delete(client);
      openSockets.delete(engine);
      client.destroy();
      engine.destroy();
    };
    client.on('error', end).on('close', end);
    // Without allowHalfOpen Node would end the client's side too when it half-closes.
    engine.on('error', end).on('close', end);
  });
  // A failed handshake (no certificate, another CA's) is the client's problem, not the proxy's.
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open connections (a `docker run` the job left attached) end with the engine.
        for (const socket of openSockets) socket.destroy();
      }),
  };
}
