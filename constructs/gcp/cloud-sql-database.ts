import { Construct } from 'constructs';
import { ComputeGlobalAddress } from '@cdktf/provider-google/lib/compute-global-address';
import { ServiceNetworkingConnection } from '@cdktf/provider-google/lib/service-networking-connection';
import { SqlDatabaseInstance } from '@cdktf/provider-google/lib/sql-database-instance';
import { SqlDatabase } from '@cdktf/provider-google/lib/sql-database';
import { SqlUser } from '@cdktf/provider-google/lib/sql-user';
import { Password } from '@cdktf/provider-random/lib/password';
import { IDatabase } from '../types';

/** Where the runtime finds the instance's CA (the gyre-database-ca ConfigMap, mounted). */
export const CLOUD_SQL_CA_PATH = '/etc/gyre/database-ca/ca.pem';

export interface CloudSqlDatabaseProps {
  readonly name: string;
  readonly project: string;
  readonly region: string;
  /** VPC the instance gets its private address in. */
  readonly networkId: string;
  /** @default 'db-custom-2-7680' */
  readonly tier?: string;
  /** @default 100 */
  readonly storageGb?: number;
  /** PostgreSQL major version. @default '16' */
  readonly version?: string;
  /** @default true - a standby in a second zone */
  readonly highAvailability?: boolean;
}

/**
 * Cloud SQL for PostgreSQL on a private address only (VPC peering), TLS required and verified,
 * daily backups with point-in-time recovery, protected from deletion. Storage is encrypted at rest
 * by Google. The server certificate comes from Google's CA service (GOOGLE_MANAGED_CAS_CA), which
 * names the instance's address, so the runtime connects with `sslmode=verify-full` against the
 * instance's CA (`caPem`, mounted at CLOUD_SQL_CA_PATH).
 */
export class CloudSqlDatabase extends Construct implements IDatabase {
  readonly host: string;
  readonly port = 5432;
  readonly url: string;
  /** PEM of the CA chain the instance's server certificate is issued from. */
  readonly caPem: string;
  /** The private range the instance's address is allocated from. */
  readonly cidr: string;

  constructor(scope: Construct, id: string, props: CloudSqlDatabaseProps) {
    super(scope, id);
    const version = props.version ?? '16';
    if (!/^1[4-7]$/.test(version)) throw new Error(`version (${version}) must be a PostgreSQL major version from 14 to 17`);

    const range = new ComputeGlobalAddress(this, 'PeeringRange', {
      name: `${props.name}-sql-peering`,
      project: props.project,
      purpose: 'VPC_PEERING',
      addressType: 'INTERNAL',
      prefixLength: 20,
      network: props.networkId,
    });
    const peering = new ServiceNetworkingConnection(this, 'Peering', {
      network: props.networkId,
      service: 'servicenetworking.googleapis.com',
      reservedPeeringRanges: [range.name],
    });
    const instance = new SqlDatabaseInstance(this, 'Instance', {
      name: `${props.name}-postgres`,
      project: props.project,
      region: props.region,
      databaseVersion: `POSTGRES_${version}`,
      deletionProtection: true,
      dependsOn: [peering],
      settings: {
        // Custom tiers (db-custom-*) exist only in the Enterprise edition; without it the API
        // picks Enterprise Plus for PostgreSQL 16+ and refuses the tier.
        edition: 'ENTERPRISE',
        tier: props.tier ?? 'db-custom-2-7680',
        availabilityType: props.highAvailability === false ? 'ZONAL' : 'REGIONAL',
        diskType: 'PD_SSD',
        diskSize: props.storageGb ?? 100,
        diskAutoresize: true,
        deletionProtectionEnabled: true,
        backupConfiguration: { enabled: true, pointInTimeRecoveryEnabled: true, backupRetentionSettings: { retainedBackups: 14 } },
        ipConfiguration: { ipv4Enabled: false, privateNetwork: props.networkId, sslMode: 'ENCRYPTED_ONLY', serverCaMode: 'GOOGLE_MANAGED_CAS_CA' },
        insightsConfig: { queryInsightsEnabled: true },
      },
    });
    new SqlDatabase(this, 'Database', { name: 'gyre', instance: instance.name, project: props.project });
    const password = new Password(this, 'Password', { length: 40, special: false });
    new SqlUser(this, 'User', { name: 'gyre', instance: instance.name, project: props.project, password: password.result });
    this.host = instance.privateIpAddress;
    this.caPem = instance.serverCaCert.get(0).cert;
    this.cidr = `${range.address}/${range.prefixLength}`;
    this.url = `postgres://gyre:${password.result}@${instance.privateIpAddress}:5432/gyre?sslmode=verify-full&sslrootcert=${CLOUD_SQL_CA_PATH}`;
  }
}
