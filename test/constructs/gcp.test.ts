import 'cdktf/lib/testing/adapters/jest';
import { Testing } from 'cdktf';
import { ComputeSubnetwork } from '@cdktf/provider-google/lib/compute-subnetwork';
import { ComputeRouterNat } from '@cdktf/provider-google/lib/compute-router-nat';
import { ContainerCluster } from '@cdktf/provider-google/lib/container-cluster';
import { ContainerNodePool } from '@cdktf/provider-google/lib/container-node-pool';
import { ServiceAccountIamMember } from '@cdktf/provider-google/lib/service-account-iam-member';
import { StorageBucket } from '@cdktf/provider-google/lib/storage-bucket';
import { StorageBucketIamMember } from '@cdktf/provider-google/lib/storage-bucket-iam-member';
import { SqlDatabaseInstance } from '@cdktf/provider-google/lib/sql-database-instance';
import { ComputeFirewall } from '@cdktf/provider-google/lib/compute-firewall';
import { ComputeInstanceTemplate } from '@cdktf/provider-google/lib/compute-instance-template';
import { ComputeRegionAutoscaler } from '@cdktf/provider-google/lib/compute-region-autoscaler';
import { ProjectIamMember } from '@cdktf/provider-google/lib/project-iam-member';
import { ProjectIamCustomRole } from '@cdktf/provider-google/lib/project-iam-custom-role';
import { ComputeInstance } from '@cdktf/provider-google/lib/compute-instance';
import { GcpNetwork } from '../../constructs/gcp/network';
import { GkeCluster } from '../../constructs/gcp/gke-cluster';
import { GcsObjectStore } from '../../constructs/gcp/gcs-object-store';
import { GcpSecretsKey } from '../../constructs/gcp/secrets-key';
import { KmsKeyRing } from '@cdktf/provider-google/lib/kms-key-ring';
import { KmsCryptoKey } from '@cdktf/provider-google/lib/kms-crypto-key';
import { KmsCryptoKeyIamMember } from '@cdktf/provider-google/lib/kms-crypto-key-iam-member';
import { KmsKeyRingIamMember } from '@cdktf/provider-google/lib/kms-key-ring-iam-member';
import { CloudSqlDatabase, CLOUD_SQL_CA_PATH } from '../../constructs/gcp/cloud-sql-database';
import { DATABASE_CA_MOUNT } from '../../constructs/kubernetes/control-plane';
import { containerMayReach } from '../images/container-firewall';
import { GcpNomadClients } from '../../constructs/gcp/nomad-clients';
import { GcpBastion, IAP_RANGE } from '../../constructs/gcp/bastion';
import { NomadTls } from '../../constructs/nomad-tls';

Testing.setupJest();

const resources = (out: string, type: string): any[] => Object.values(JSON.parse(out).resource[type] ?? {});

describe('GcpNetwork', () => {
  test('one subnet with pod and service ranges, private Google access, and Cloud NAT', () => {
    const out = Testing.synthScope((s) => new GcpNetwork(s, 'Network', { name: 'gyre-t', region: 'europe-west1' }));
    expect(out).toHaveResourceWithProperties(ComputeSubnetwork, {
      ip_cidr_range: '10.0.0.0/16',
      private_ip_google_access: true,
      secondary_ip_range: [{ range_name: 'pods', ip_cidr_range: '10.64.0.0/14' }, { range_name: 'services', ip_cidr_range: '10.68.0.0/20' }],
    });
    expect(out).toHaveResourceWithProperties(ComputeRouterNat, { source_subnetwork_ip_ranges_to_nat: 'ALL_SUBNETWORKS_ALL_IP_RANGES' });
  });
});

describe('GkeCluster', () => {
  const synth = (apiAllowedCidrs?: string[]) => Testing.synthScope((s) => {
    const cluster = new GkeCluster(s, 'Cluster', {
      clusterName: 'gyre-t', project: 'p', region: 'europe-west1', zones: ['europe-west1-b', 'europe-west1-c'],
      networkId: 'net', subnetworkId: 'sub', podsRangeName: 'pods', servicesRangeName: 'services', version: '1.31', apiAllowedCidrs,
    });
    cluster.serviceAccountIdentity('Runtime', 'gyre', 'gyre-runtime', 'gyre-t-runtime');
  });

  test('private nodes and Workload Identity', () => {
    expect(synth(['198.51.100.0/24'])).toHaveResourceWithProperties(ContainerCluster, {
      private_cluster_config: expect.objectContaining({ enable_private_nodes: true, enable_private_endpoint: false }),
      workload_identity_config: { workload_pool: 'p.svc.id.goog' },
      master_authorized_networks_config: { cidr_blocks: [{ cidr_block: '198.51.100.0/24', display_name: 'operator' }] },
      remove_default_node_pool: true,
    });
  });

  test('enforces NetworkPolicies (Dataplane V2)', () => {
    expect(synth()).toHaveResourceWithProperties(ContainerCluster, { datapath_provider: 'ADVANCED_DATAPATH' });
  });

  test('without allowed CIDRs the control plane has no public endpoint', () => {
    expect(synth()).toHaveResourceWithProperties(ContainerCluster, {
      private_cluster_config: expect.objectContaining({ enable_private_endpoint: true }),
    });
  });

  test('nodes use the GKE metadata server, shielded boot and a dedicated service account', () => {
    expect(synth()).toHaveResourceWithProperties(ContainerNodePool, {
      node_config: expect.objectContaining({
        workload_metadata_config: { mode: 'GKE_METADATA' },
        shielded_instance_config: { enable_secure_boot: true, enable_integrity_monitoring: true },
        service_account: expect.stringContaining('google_service_account.Cluster_NodeAccount'),
      }),
    });
  });

  test('a workload identity is usable only by its Kubernetes service account', () => {
    expect(synth()).toHaveResourceWithProperties(ServiceAccountIamMember, {
      role: 'roles/iam.workloadIdentityUser',
      member: 'serviceAccount:p.svc.id.goog[gyre/gyre-runtime]',
    });
  });
});

describe('GcsObjectStore', () => {
  const synth = () => Testing.synthScope((s) => {
    const store = new GcsObjectStore(s, 'Store', { bucketName: 'b', project: 'p', location: 'europe-west1', expireAfterDays: 10, corsOrigins: ['https://gyre.example.net'] });
    store.grantReadWrite('serviceAccount:r@p.iam.gserviceaccount.com');
  });

  test('uniform access, public access prevented, versioned, expiring', () => {
    expect(synth()).toHaveResourceWithProperties(StorageBucket, {
      uniform_bucket_level_access: true,
      public_access_prevention: 'enforced',
      versioning: { enabled: true },
      lifecycle_rule: expect.arrayContaining([{ action: { type: 'Delete' }, condition: { age: 10 } }]),
      cors: [expect.objectContaining({ origin: ['https://gyre.example.net'], method: ['GET', 'HEAD'] })],
    });
  });

  test('grants object access on this bucket, not the project', () => {
    expect(synth()).toHaveResourceWithProperties(StorageBucketIamMember, { role: 'roles/storage.objectUser', member: 'serviceAccount:r@p.iam.gserviceaccount.com' });
    expect(synth()).not.toHaveResource(ProjectIamMember);
  });
});

describe('GcpSecretsKey', () => {
  const base = { project: 'p', location: 'europe-west1', keyRingName: 'gyre-prod' };
  const synth = (props: Partial<ConstructorParameters<typeof GcpSecretsKey>[2]> = {}) => Testing.synthScope((s) => {
    new GcpSecretsKey(s, 'SecretsKey', { ...base, ...props }).grantEncryptDecrypt('serviceAccount:r@p.iam.gserviceaccount.com');
  });

  test('a key ring of its own and a symmetric key rotated on a schedule, its versions destroyed only after 30 days', () => {
    const out = synth({ rotationDays: 90 });
    expect(out).toHaveResourceWithProperties(KmsKeyRing, { name: 'gyre-prod', project: 'p', location: 'europe-west1' });
    expect(out).toHaveResourceWithProperties(KmsCryptoKey, {
      name: 'secrets', key_ring: expect.stringMatching(/^\$\{google_kms_key_ring\.SecretsKey_KeyRing_\w+\.id\}$/), purpose: 'ENCRYPT_DECRYPT', rotation_period: '7776000s', destroy_scheduled_duration: '2592000s',
    });
  });

  test('the service account may encrypt and decrypt with this key, not the ring or the project', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(KmsCryptoKeyIamMember, {
      crypto_key_id: expect.stringMatching(/^\$\{google_kms_crypto_key\.SecretsKey_\w+\.id\}$/), role: 'roles/cloudkms.cryptoKeyEncrypterDecrypter', member: 'serviceAccount:r@p.iam.gserviceaccount.com',
    });
    expect(out).not.toHaveResource(KmsKeyRingIamMember);
    expect(out).not.toHaveResource(ProjectIamMember);
  });

  test('an existing key is granted on, and nothing is made', () => {
    const name = 'projects/sec/locations/global/keyRings/ops/cryptoKeys/gyre';
    const out = synth({ cryptoKeyName: name });
    expect(out).not.toHaveResource(KmsKeyRing);
    expect(out).not.toHaveResource(KmsCryptoKey);
    expect(out).toHaveResourceWithProperties(KmsCryptoKeyIamMember, { crypto_key_id: name, role: 'roles/cloudkms.cryptoKeyEncrypterDecrypter' });
    Testing.synthScope((scope) => {
      expect(new GcpSecretsKey(scope, 'K', { ...base, cryptoKeyName: name }).runtimeEnvironment).toEqual({ GYRE_SECRETS_KEY_WRAPPER: 'gcp-kms', GYRE_SECRETS_GCP_KMS_KEY: name });
    });
  });

  test.each([
    [{ cryptoKeyName: 'projects/p/keyRings/r/cryptoKeys/k' }, /cryptoKeyName \(projects\/p\/keyRings\/r\/cryptoKeys\/k\) must be projects\/<project>\/locations/],
    [{ cryptoKeyName: 'projects/p/locations/l/keyRings/r/cryptoKeys/k', rotationDays: 90 }, /rotationDays applies only to a key this construct makes/],
    [{ rotationDays: 0 }, /rotationDays \(0\) must be a whole number of days/],
    [{ keyRingName: 'gyre prod' }, /keyRingName \(gyre prod\) must be 1 to 63 letters/],
  ])('refuses %j', (props, message) => {
    expect(() => synth(props)).toThrow(message);
  });
});

describe('CloudSqlDatabase', () => {
  test('private address only, TLS required, backups with point-in-time recovery, deletion protected', () => {
    const out = Testing.synthScope((s) => new CloudSqlDatabase(s, 'Db', { name: 'gyre-t', project: 'p', region: 'europe-west1', networkId: 'net' }));
    expect(out).toHaveResourceWithProperties(SqlDatabaseInstance, {
      database_version: 'POSTGRES_16',
      deletion_protection: true,
      settings: expect.objectContaining({
        availability_type: 'REGIONAL',
        backup_configuration: expect.objectContaining({ enabled: true, point_in_time_recovery_enabled: true }),
        ip_configuration: expect.objectContaining({ ipv4_enabled: false, ssl_mode: 'ENCRYPTED_ONLY' }),
      }),
    });
  });

  test('a custom tier is in the Enterprise edition, and the runtime verifies the server against the instance\'s CA', () => {
    let db: CloudSqlDatabase | undefined;
    const out = Testing.synthScope((s) => { db = new CloudSqlDatabase(s, 'Db', { name: 'gyre-t', project: 'p', region: 'europe-west1', networkId: 'net', tier: 'db-custom-4-15360' }); });
    expect(out).toHaveResourceWithProperties(SqlDatabaseInstance, {
      settings: expect.objectContaining({
        tier: 'db-custom-4-15360',
        edition: 'ENTERPRISE',
        ip_configuration: expect.objectContaining({ server_ca_mode: 'GOOGLE_MANAGED_CAS_CA' }),
      }),
    });
    const query = new URLSearchParams(db!.url.split('?')[1]);
    expect(query.get('sslmode')).toBe('verify-full');
    expect(query.get('sslrootcert')).toBe(CLOUD_SQL_CA_PATH);
    expect(CLOUD_SQL_CA_PATH).toBe(`${DATABASE_CA_MOUNT}/ca.pem`);
    expect(db!.caPem).toMatch(/^\$\{TfToken/);
  });

  test('rejects an unsupported version', () => {
    expect(() => Testing.synthScope((s) => new CloudSqlDatabase(s, 'D', { name: 'x', project: 'p', region: 'r', networkId: 'n', version: '9' })))
      .toThrow('version (9) must be a PostgreSQL major version from 14 to 17');
  });
});

describe('GcpNomadClients', () => {
  const synth = (cloudAutoscaler = false) => Testing.synthScope((s) => {
    const clients = new GcpNomadClients(s, 'Clients', {
      name: 'gyre-t', project: 'p', region: 'europe-west1', zones: ['europe-west1-b', 'europe-west1-c'], networkId: 'net', subnetworkId: 'sub',
      internalCidrs: ['10.0.0.0/16'], tls: new NomadTls(s, 'Tls'), serverAddress: 'gyre.example.net:4647',
      packageMirror: 'https://mirror.example.net', nomadVersion: '1.9.7', sshRerunCidrs: ['198.51.100.0/24'], cloudAutoscaler,
    });
    clients.grantAutoscaling('serviceAccount:a@p.iam.gserviceaccount.com');
  });

  test('firewalls: Nomad ports from inside the VPC, rerun ports from the rerun CIDRs', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(ComputeFirewall, {
      source_ranges: ['10.0.0.0/16'], allow: [{ protocol: 'tcp', ports: ['4646-4648'] }, { protocol: 'udp', ports: ['4648'] }],
    });
    expect(out).toHaveResourceWithProperties(ComputeFirewall, { source_ranges: ['198.51.100.0/24'], allow: [{ protocol: 'tcp', ports: ['64535-65535'] }] });
  });

  test('instances have no public address, shielded boot, OS Login, and the bootstrap script', () => {
    const template = resources(synth(), ComputeInstanceTemplate.tfResourceType)[0];
    expect(template.network_interface).toEqual([{ subnetwork: 'sub' }]);
    expect(template.shielded_instance_config.enable_secure_boot).toBe(true);
    expect(template.metadata['enable-oslogin']).toBe('TRUE');
    expect(template.metadata['startup-script']).toContain('servers    = ["gyre.example.net:4647"]');
  });

  test('build containers resolve names through GCE\'s resolver (the metadata address) and reach nothing else of it', () => {
    const script: string = resources(synth(), ComputeInstanceTemplate.tfResourceType)[0].metadata['startup-script'];
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'udp', port: 53 })).toBe(true);
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'tcp', port: 80 })).toBe(false);
  });

  test('the autoscaler role is bound with a condition naming this group', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(ProjectIamCustomRole, { permissions: expect.arrayContaining(['compute.instanceGroupManagers.update']) });
    const binding = resources(out, ProjectIamMember.tfResourceType)[0];
    expect(binding.condition.expression).toContain('instanceGroupManagers/${google_compute_region_instance_group_manager.Clients_Group');
    expect(binding.condition.expression).toContain('startsWith("gyre-t-nomad-")');
  });

  test('a Compute Engine autoscaler only when asked', () => {
    expect(synth()).not.toHaveResource(ComputeRegionAutoscaler);
    expect(synth(true)).toHaveResourceWithProperties(ComputeRegionAutoscaler, {
      autoscaling_policy: expect.objectContaining({ min_replicas: 1, max_replicas: 10 }),
    });
  });
});

describe('GcpBastion', () => {
  test('SSH only from Identity-Aware Proxy, no public address, OS Login', () => {
    const out = Testing.synthScope((s) => new GcpBastion(s, 'Bastion', { name: 'gyre-t', project: 'p', zone: 'europe-west1-b', networkId: 'net', subnetworkId: 'sub' }));
    expect(out).toHaveResourceWithProperties(ComputeFirewall, { source_ranges: [IAP_RANGE], allow: [{ protocol: 'tcp', ports: ['22'] }] });
    const instance = resources(out, ComputeInstance.tfResourceType)[0];
    expect(instance.network_interface).toEqual([{ subnetwork: 'sub' }]);
    expect(instance.metadata['enable-oslogin']).toBe('TRUE');
  });
});
