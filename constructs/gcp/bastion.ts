import { Construct } from 'constructs';
import { ComputeInstance } from '@cdktf/provider-google/lib/compute-instance';
import { ComputeFirewall } from '@cdktf/provider-google/lib/compute-firewall';
import { ServiceAccount } from '@cdktf/provider-google/lib/service-account';

/** Source range Identity-Aware Proxy forwards TCP from. */
export const IAP_RANGE = '35.235.240.0/20';

export interface GcpBastionProps {
  readonly name: string;
  readonly project: string;
  readonly zone: string;
  readonly networkId: string;
  readonly subnetworkId: string;
  /** @default 'e2-small' */
  readonly machineType?: string;
}

/**
 * Jump host with no public address: operators reach it with `gcloud compute ssh --tunnel-through-iap`,
 * authenticated by OS Login. SSH is only open to Identity-Aware Proxy's range.
 */
export class GcpBastion extends Construct {
  readonly instanceName: string;

  constructor(scope: Construct, id: string, props: GcpBastionProps) {
    super(scope, id);
    const tag = `${props.name}-bastion`;
    new ComputeFirewall(this, 'IapSsh', {
      name: `${props.name}-bastion-iap-ssh`,
      project: props.project,
      network: props.networkId,
      direction: 'INGRESS',
      sourceRanges: [IAP_RANGE],
      targetTags: [tag],
      allow: [{ protocol: 'tcp', ports: ['22'] }],
    });
    const account = new ServiceAccount(this, 'Account', { accountId: `${props.name}-bastion`.slice(0, 30), project: props.project, displayName: 'Gyre bastion' });
    const instance = new ComputeInstance(this, 'Instance', {
      name: `${props.name}-bastion`,
      project: props.project,
      zone: props.zone,
      machineType: props.machineType ?? 'e2-small',
      tags: [tag],
      bootDisk: { initializeParams: { image: 'debian-cloud/debian-12', size: 20 } },
      networkInterface: [{ subnetwork: props.subnetworkId }],
      serviceAccount: { email: account.email, scopes: ['https://www.googleapis.com/auth/logging.write'] },
      shieldedInstanceConfig: { enableSecureBoot: true, enableVtpm: true, enableIntegrityMonitoring: true },
      metadata: { 'enable-oslogin': 'TRUE', 'block-project-ssh-keys': 'TRUE' },
      allowStoppingForUpdate: true,
    });
    this.instanceName = instance.name;
  }
}
