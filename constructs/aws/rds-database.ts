import { Construct } from 'constructs';
import { DbInstance } from '@cdktf/provider-aws/lib/db-instance';
import { DbSubnetGroup } from '@cdktf/provider-aws/lib/db-subnet-group';
import { SecurityGroup } from '@cdktf/provider-aws/lib/security-group';
import { Password } from '@cdktf/provider-random/lib/password';
import { IDatabase } from '../types';
import { RDS_CA_BUNDLE_IMAGE_PATH, RDS_CA_IDENTIFIER, checkRdsBundleCoversRegion } from './rds-ca';

export interface RdsDatabaseProps {
  /** Identifier prefix of the instance. */
  readonly name: string;
  /** Region of the instance; the runtime image's RDS bundle must hold its CA. */
  readonly region: string;
  readonly vpcId: string;
  /** Private subnets, in at least two zones. */
  readonly subnetIds: string[];
  /** CIDRs allowed to connect on 5432 (the VPC). */
  readonly allowedCidrs: string[];
  /** @default 'db.m6g.large' */
  readonly instanceClass?: string;
  /** @default 100 */
  readonly storageGb?: number;
  /** PostgreSQL major version. @default '16' */
  readonly version?: string;
  /** Days of automated backups. @default 7 */
  readonly backupRetentionDays?: number;
  /** @default true */
  readonly multiAz?: boolean;
}

/**
 * PostgreSQL on RDS: private, encrypted at rest, TLS required and verified (the URL names the RDS
 * bundle the runtime image ships, and the instance uses the CA that bundle holds), backups on,
 * protected from deletion.
 */
export class RdsDatabase extends Construct implements IDatabase {
  readonly host: string;
  readonly port = 5432;
  readonly url: string;

  constructor(scope: Construct, id: string, props: RdsDatabaseProps) {
    super(scope, id);
    const backupDays = props.backupRetentionDays ?? 7;
    if (backupDays < 1 || backupDays > 35) {
      throw new Error(`backupRetentionDays (${backupDays}) must be between 1 and 35; backups cannot be turned off`);
    }
    if (props.subnetIds.length < 2) throw new Error(`subnetIds (${props.subnetIds.length}) must list subnets in at least 2 zones`);
    checkRdsBundleCoversRegion(props.region);

    const subnets = new DbSubnetGroup(this, 'Subnets', { namePrefix: `${props.name}-`, subnetIds: props.subnetIds });
    const sg = new SecurityGroup(this, 'SecurityGroup', {
      namePrefix: `${props.name}-db-`,
      vpcId: props.vpcId,
      description: 'Gyre PostgreSQL: 5432 from the VPC only',
      ingress: [{ description: 'PostgreSQL from the VPC', protocol: 'tcp', fromPort: 5432, toPort: 5432, cidrBlocks: props.allowedCidrs }],
      egress: [],
    });
    // No characters that would need escaping in a postgres:// URL.
    const password = new Password(this, 'Password', { length: 40, special: false });
    const db = new DbInstance(this, 'Instance', {
      identifierPrefix: `${props.name}-`,
      engine: 'postgres',
      engineVersion: props.version ?? '16',
      instanceClass: props.instanceClass ?? 'db.m6g.large',
      allocatedStorage: props.storageGb ?? 100,
      maxAllocatedStorage: (props.storageGb ?? 100) * 4,
      storageType: 'gp3',
      storageEncrypted: true,
      dbName: 'gyre',
      username: 'gyre',
      password: password.result,
      dbSubnetGroupName: subnets.name,
      vpcSecurityGroupIds: [sg.id],
      publiclyAccessible: false,
      multiAz: props.multiAz ?? true,
      backupRetentionPeriod: backupDays,
      deletionProtection: true,
      skipFinalSnapshot: false,
      finalSnapshotIdentifier: `${props.name}-final`,
      copyTagsToSnapshot: true,
      autoMinorVersionUpgrade: true,
      performanceInsightsEnabled: true,
      caCertIdentifier: RDS_CA_IDENTIFIER,
      lifecycle: { ignoreChanges: ['final_snapshot_identifier'] },
    });
    this.host = db.address;
    // verify-full: the server's certificate must chain to the bundle and name db.address.
    this.url = `postgres://gyre:${password.result}@${db.address}:5432/gyre?sslmode=verify-full&sslrootcert=${RDS_CA_BUNDLE_IMAGE_PATH}`;
  }
}
