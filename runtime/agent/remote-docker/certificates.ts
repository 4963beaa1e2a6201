import { generateKeyPair, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import type Forge from 'node-forge';
import type { ClientTlsFiles } from './provider';

/** What one remote engine's TLS needs: its own CA, the engine's server certificate, the job's client certificate. */
export interface EngineCertificates {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  /** What the job gets: the CA and its client certificate and key, never the CA's key or the server's. */
  readonly client: ClientTlsFiles;
}

const newKey = async () => (await promisify(generateKeyPair)('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })) as { publicKey: string; privateKey: string };

/** How long the certificates are good for: a job's lifetime, with room (CircleCI's jobs end within 5 h by default). */
const VALID_MS = 2 * 24 * 3600 * 1000;

/**
 * A CA of its own for one engine (its key is dropped once both certificates are signed, so nothing
 * else is ever signed by it), a server certificate for `serverIp` and a client certificate. Keys
 * come from Node's crypto; node-forge writes the X.509 certificates. RSA 2048, SHA-256.
 */
export async function makeEngineCertificates(serverIp: string, name = 'gyre-remote-docker'): Promise<EngineCertificates> {
  const [caKeys, serverKeys, clientKeys] = await Promise.all([newKey(), newKey(), newKey()]);
  // node-forge loads here, on an engine's first certificates, not with the agent (issue #19).
  const forge = require('node-forge') as typeof Forge;
  const caKey = forge.pki.privateKeyFromPem(caKeys.privateKey);
  const now = Date.now();
  const make = (subjectCn: string, publicKeyPem: string, extensions: object[]) => {
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.publicKeyFromPem(publicKeyPem);
    // Positive, 16 random bytes.
    cert.serialNumber = `01${randomBytes(15).toString('hex')}`;
    cert.validity.notBefore = new Date(now - 60_000);
    cert.validity.notAfter = new Date(now + VALID_MS);
    cert.setSubject([{ name: 'commonName', value: subjectCn }]);
    cert.setIssuer([{ name: 'commonName', value: `${name} CA` }]);
    cert.setExtensions(extensions);
    cert.sign(caKey, forge.md.sha256.create());
    return forge.pki.certificateToPem(cert);
  };
  const ca = make(`${name} CA`, caKeys.publicKey, [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  const serverCert = make(serverIp, serverKeys.publicKey, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 7, ip: serverIp }] },
  ]);
  const clientCert = make(`${name} client`, clientKeys.publicKey, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', clientAuth: true },
  ]);
  return { ca, serverCert, serverKey: serverKeys.privateKey, client: { 'ca.pem': ca, 'cert.pem': clientCert, 'key.pem': clientKeys.privateKey } };
}
