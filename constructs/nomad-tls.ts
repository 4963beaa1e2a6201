import { Construct } from 'constructs';
import { PrivateKey } from '@cdktf/provider-tls/lib/private-key';
import { SelfSignedCert } from '@cdktf/provider-tls/lib/self-signed-cert';
import { CertRequest } from '@cdktf/provider-tls/lib/cert-request';
import { LocallySignedCert } from '@cdktf/provider-tls/lib/locally-signed-cert';
import { Id } from '@cdktf/provider-random/lib/id';

export interface NomadTlsProps {
  /** Nomad region; certificates name `server.<region>.nomad` and `client.<region>.nomad`. @default 'global' */
  readonly region?: string;
  /** Extra DNS names servers answer on (the load balancer's host name). @default - none */
  readonly serverDnsNames?: string[];
  /** Certificate lifetime in hours. @default 8760 (one year; `cdktf deploy` renews 30 days early) */
  readonly validityHours?: number;
}

/** A PEM certificate and its key. */
export interface KeyPair {
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * Mutual TLS for Nomad: a private CA, a server certificate, a client certificate, and the gossip
 * encryption key. Servers and clients verify each other's role by the certificate's name, as Nomad
 * does with `verify_server_hostname`.
 */
export class NomadTls extends Construct {
  readonly caPem: string;
  readonly server: KeyPair;
  readonly client: KeyPair;
  /** Base64 32-byte key for Nomad gossip encryption. */
  readonly gossipKey: string;
  readonly region: string;

  constructor(scope: Construct, id: string, props: NomadTlsProps = {}) {
    super(scope, id);
    this.region = props.region ?? 'global';
    const validity = props.validityHours ?? 8760;
    if (validity < 24 * 31) throw new Error(`validityHours (${validity}) must be at least 744 (31 days) so early renewal has room`);

    const caKey = new PrivateKey(this, 'CaKey', { algorithm: 'ECDSA', ecdsaCurve: 'P384' });
    const ca = new SelfSignedCert(this, 'Ca', {
      privateKeyPem: caKey.privateKeyPem,
      isCaCertificate: true,
      validityPeriodHours: validity * 5,
      earlyRenewalHours: 24 * 90,
      allowedUses: ['cert_signing', 'crl_signing', 'digital_signature'],
      subject: [{ commonName: 'Gyre Nomad CA', organization: 'Gyre' }],
    });
    this.caPem = ca.certPem;

    const issue = (name: 'Server' | 'Client', dnsNames: string[]): KeyPair => {
      const key = new PrivateKey(this, `${name}Key`, { algorithm: 'ECDSA', ecdsaCurve: 'P384' });
      const request = new CertRequest(this, `${name}Request`, {
        privateKeyPem: key.privateKeyPem,
        dnsNames,
        ipAddresses: ['127.0.0.1'],
        subject: [{ commonName: dnsNames[0], organization: 'Gyre' }],
      });
      const cert = new LocallySignedCert(this, `${name}Cert`, {
        certRequestPem: request.certRequestPem,
        caPrivateKeyPem: caKey.privateKeyPem,
        caCertPem: ca.certPem,
        validityPeriodHours: validity,
        earlyRenewalHours: 24 * 30,
        allowedUses: ['digital_signature', 'key_encipherment', 'server_auth', 'client_auth'],
      });
      return { certPem: cert.certPem, keyPem: key.privateKeyPem };
    };
    this.server = issue('Server', [`server.${this.region}.nomad`, 'localhost', ...(props.serverDnsNames ?? [])]);
    this.client = issue('Client', [`client.${this.region}.nomad`, 'localhost']);

    this.gossipKey = new Id(this, 'GossipKey', { byteLength: 32 }).b64Std;
  }
}

import type { ClientRegistryAuth } from './nomad-client-bootstrap';

/** What every cloud's Nomad client group takes, whatever machines it runs on. */
export interface NomadClientGroupProps {
  /** Name of the group and prefix of its resources. */
  readonly name: string;
  /** The mTLS material the clients present to the Nomad servers. */
  readonly tls: NomadTls;
  /** `host:port` of the Nomad servers' RPC endpoint. */
  readonly serverAddress: string;
  /** The apt repository Docker and Nomad are installed from (clients never use the internet). */
  readonly packageMirror: string;
  readonly nomadVersion: string;
  /** @default 1 */
  readonly minClients?: number;
  /** @default 10 */
  readonly maxClients?: number;
  /** CIDRs allowed to SSH into rerun jobs (ports 64535–65535). @default - SSH reruns are closed */
  readonly sshRerunCidrs?: string[];
  /** CIDRs build containers must not reach. @default - only the metadata address is blocked */
  readonly blockedCidrs?: string[];
  /** Root volume size in GiB (images and workspaces live here). @default 200 */
  readonly diskGb?: number;
  /** How clients pull the agent image from the operator's registry. @default - anonymous pulls */
  readonly registryAuth?: ClientRegistryAuth;
  /** Pull-through caches of Docker Hub the clients' engines pull through. @default - pulls go to Docker Hub */
  readonly registryMirrors?: string[];
  /** Minutes a client being replaced or scaled in gives running tasks. @default 15 */
  readonly drainDeadlineMinutes?: number;
}
