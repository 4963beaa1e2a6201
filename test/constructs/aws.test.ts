import 'cdktf/lib/testing/adapters/jest';
import { Testing } from 'cdktf';
import { Vpc } from '@cdktf/provider-aws/lib/vpc';
import { Subnet } from '@cdktf/provider-aws/lib/subnet';
import { NatGateway } from '@cdktf/provider-aws/lib/nat-gateway';
import { EksCluster as CfnEksCluster } from '@cdktf/provider-aws/lib/eks-cluster';
import { EksAddon } from '@cdktf/provider-aws/lib/eks-addon';
import { IamOpenidConnectProvider } from '@cdktf/provider-aws/lib/iam-openid-connect-provider';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { LaunchTemplate } from '@cdktf/provider-aws/lib/launch-template';
import { AutoscalingGroup } from '@cdktf/provider-aws/lib/autoscaling-group';
import { SecurityGroup } from '@cdktf/provider-aws/lib/security-group';
import { S3BucketVersioningA } from '@cdktf/provider-aws/lib/s3-bucket-versioning';
import { S3BucketServerSideEncryptionConfigurationA } from '@cdktf/provider-aws/lib/s3-bucket-server-side-encryption-configuration';
import { S3BucketPublicAccessBlock } from '@cdktf/provider-aws/lib/s3-bucket-public-access-block';
import { S3BucketLifecycleConfiguration } from '@cdktf/provider-aws/lib/s3-bucket-lifecycle-configuration';
import { S3BucketCorsConfiguration } from '@cdktf/provider-aws/lib/s3-bucket-cors-configuration';
import { DbInstance } from '@cdktf/provider-aws/lib/db-instance';
import { Instance } from '@cdktf/provider-aws/lib/instance';
import { AwsNetwork } from '../../constructs/aws/network';
import { EksCluster } from '../../constructs/aws/eks-cluster';
import { S3ObjectStore } from '../../constructs/aws/s3-object-store';
import { AwsSecretsKey } from '../../constructs/aws/secrets-key';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import { KmsAlias } from '@cdktf/provider-aws/lib/kms-alias';
import { RdsDatabase } from '../../constructs/aws/rds-database';
import { AwsNomadClients } from '../../constructs/aws/nomad-clients';
import { AwsBastion } from '../../constructs/aws/bastion';
import { NomadTls } from '../../constructs/nomad-tls';
import { RDS_CA_BUNDLE_FILE, RDS_CA_BUNDLE_IMAGE_PATH } from '../../constructs/aws/rds-ca';
import { EksAccessEntry } from '@cdktf/provider-aws/lib/eks-access-entry';
import { EksAccessPolicyAssociation } from '@cdktf/provider-aws/lib/eks-access-policy-association';
import { VpcSecurityGroupIngressRule } from '@cdktf/provider-aws/lib/vpc-security-group-ingress-rule';
import { IamRolePolicyAttachment } from '@cdktf/provider-aws/lib/iam-role-policy-attachment';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { containerMayReach } from '../images/container-firewall';

Testing.setupJest();

type Tf = { resource: Record<string, Record<string, any>>; locals?: Record<string, string> };
const parse = (out: string): Tf => JSON.parse(out);
const only = (out: string, type: string): any[] => Object.values(parse(out).resource[type] ?? {});

describe('AwsNetwork', () => {
  const synth = (natPerZone = false) => Testing.synthScope((scope) => {
    new AwsNetwork(scope, 'Network', { name: 'gyre-t', zones: ['us-east-1a', 'us-east-1b', 'us-east-1c'], cidr: '10.20.0.0/16', natPerZone });
  });

  test('public subnets are tagged for internet-facing load balancers, private for internal ones', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(Subnet, { cidr_block: '10.20.0.0/20', tags: expect.objectContaining({ 'kubernetes.io/role/elb': '1' }) });
    expect(out).toHaveResourceWithProperties(Subnet, { cidr_block: '10.20.64.0/19', tags: expect.objectContaining({ 'kubernetes.io/role/internal-elb': '1' }) });
    expect(out).toHaveResourceWithProperties(Vpc, { cidr_block: '10.20.0.0/16', enable_dns_hostnames: true });
  });

  test('subnets do not overlap and cover every zone', () => {
    const cidrs = only(synth(), 'aws_subnet').map((s) => s.cidr_block);
    expect(new Set(cidrs).size).toBe(6);
    expect(only(synth(), 'aws_subnet').map((s) => s.availability_zone).sort()).toEqual(
      ['us-east-1a', 'us-east-1a', 'us-east-1b', 'us-east-1b', 'us-east-1c', 'us-east-1c'],
    );
  });

  test('one NAT gateway by default, one per zone when asked', () => {
    expect(only(synth(), NatGateway.tfResourceType)).toHaveLength(1);
    expect(only(synth(true), NatGateway.tfResourceType)).toHaveLength(3);
  });

  test('rejects a single zone', () => {
    expect(() => Testing.synthScope((s) => new AwsNetwork(s, 'N', { name: 'x', zones: ['us-east-1a'] }))).toThrow(/zones \(1\) must list 2 or 3/);
  });
});

describe('EksCluster', () => {
  const synth = (apiAllowedCidrs?: string[]) => Testing.synthScope((scope) => {
    const cluster = new EksCluster(scope, 'Cluster', { clusterName: 'gyre-t', version: '1.31', subnetIds: ['subnet-a', 'subnet-b'], apiAllowedCidrs });
    cluster.serviceAccountRole('Runtime', 'gyre', 'gyre-runtime', 'gyre-t-runtime');
  });

  test('secrets are envelope-encrypted with a KMS key and the public endpoint is limited to the allowed CIDRs', () => {
    expect(synth(['203.0.113.0/24'])).toHaveResourceWithProperties(CfnEksCluster, {
      version: '1.31',
      encryption_config: expect.objectContaining({ resources: ['secrets'] }),
      vpc_config: expect.objectContaining({ endpoint_private_access: true, endpoint_public_access: true, public_access_cidrs: ['203.0.113.0/24'] }),
    });
  });

  test('without allowed CIDRs the API endpoint is private only', () => {
    expect(synth()).toHaveResourceWithProperties(CfnEksCluster, {
      vpc_config: expect.objectContaining({ endpoint_public_access: false }),
    });
  });

  test('enforces NetworkPolicies: the VPC CNI add-on runs its network policy agent', () => {
    const addon = only(synth(), EksAddon.tfResourceType).find((a) => a.addon_name === 'vpc-cni');
    expect(JSON.parse(addon.configuration_values)).toEqual({ enableNetworkPolicy: 'true' });
  });

  test('has an OIDC provider for IRSA and the EBS CSI add-on with its own role', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(IamOpenidConnectProvider, { client_id_list: ['sts.amazonaws.com'] });
    expect(out).toHaveResourceWithProperties(EksAddon, { addon_name: 'aws-ebs-csi-driver' });
  });

  test('nodes require IMDSv2 with one hop, so pods cannot borrow the node role', () => {
    expect(synth()).toHaveResourceWithProperties(LaunchTemplate, {
      metadata_options: expect.objectContaining({ http_tokens: 'required', http_put_response_hop_limit: 1 }),
    });
  });

  test('a service-account role trusts exactly that namespace and service account', () => {
    const role = only(synth(), IamRole.tfResourceType).find((r) => r.name === 'gyre-t-runtime');
    // Terraform interpolations hold HCL quotes; stand them in before reading the JSON around them.
    const trust = JSON.parse(role.assume_role_policy.replace(/\$\{[^}]*\}/g, 'ISSUER'));
    expect(trust.Statement[0].Action).toBe('sts:AssumeRoleWithWebIdentity');
    expect(trust.Statement[0].Condition.StringEquals).toEqual({ 'ISSUER:sub': 'system:serviceaccount:gyre:gyre-runtime', 'ISSUER:aud': 'sts.amazonaws.com' });
  });

  test('rejects desired nodes outside min..max', () => {
    expect(() => Testing.synthScope((s) => new EksCluster(s, 'C', { clusterName: 'x', version: '1.31', subnetIds: [], minNodes: 3, desiredNodes: 9, maxNodes: 6 })))
      .toThrow('desiredNodes (9) must be between minNodes (3) and maxNodes (6)');
  });
});

describe('S3ObjectStore', () => {
  const synth = () => Testing.synthScope((scope) => {
    const store = new S3ObjectStore(scope, 'Store', { region: 'us-east-1', expireAfterDays: 14, corsOrigins: ['https://gyre.example.com'] });
    store.grantReadWrite('runtime-role');
  });

  test('is versioned, encrypted and blocks every kind of public access', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(S3BucketVersioningA, { versioning_configuration: { status: 'Enabled' } });
    expect(out).toHaveResourceWithProperties(S3BucketServerSideEncryptionConfigurationA, {
      rule: [expect.objectContaining({ apply_server_side_encryption_by_default: expect.objectContaining({ sse_algorithm: 'AES256' }) })],
    });
    expect(out).toHaveResourceWithProperties(S3BucketPublicAccessBlock, {
      block_public_acls: true, block_public_policy: true, ignore_public_acls: true, restrict_public_buckets: true,
    });
  });

  test('expires build output after the configured days, and old versions after 7', () => {
    expect(synth()).toHaveResourceWithProperties(S3BucketLifecycleConfiguration, {
      rule: [expect.objectContaining({ status: 'Enabled', expiration: [{ days: 14 }], noncurrent_version_expiration: [{ noncurrent_days: 7 }] })],
    });
  });

  test('allows artifact downloads (GET/HEAD) from the UI origin only', () => {
    expect(synth()).toHaveResourceWithProperties(S3BucketCorsConfiguration, {
      cors_rule: [expect.objectContaining({ allowed_methods: ['GET', 'HEAD'], allowed_origins: ['https://gyre.example.com'] })],
    });
  });

  test('grantReadWrite scopes object actions to this bucket', () => {
    const policy = JSON.parse(only(synth(), IamRolePolicy.tfResourceType)[0].policy);
    const resources = policy.Statement.flatMap((s: any) => s.Resource);
    expect(resources).not.toContain('*');
    expect(resources.every((r: string) => r.includes('aws_s3_bucket.Store_Bucket'))).toBe(true);
  });

  test('rejects a zero-day expiry', () => {
    expect(() => Testing.synthScope((s) => new S3ObjectStore(s, 'S', { region: 'r', expireAfterDays: 0 }))).toThrow(/expireAfterDays \(0\)/);
  });
});

describe('AwsSecretsKey', () => {
  const synth = (props: ConstructorParameters<typeof AwsSecretsKey>[2] = { alias: 'alias/gyre-prod-secrets' }) => Testing.synthScope((scope) => {
    new AwsSecretsKey(scope, 'SecretsKey', props).grantEncryptDecrypt('runtime-role');
  });

  test('a symmetric key that rotates itself, with an alias and the longest deletion window', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(KmsKey, {
      key_usage: 'ENCRYPT_DECRYPT', customer_master_key_spec: 'SYMMETRIC_DEFAULT', enable_key_rotation: true, rotation_period_in_days: 365, deletion_window_in_days: 30,
    });
    expect(out).toHaveResourceWithProperties(KmsAlias, { name: 'alias/gyre-prod-secrets', target_key_id: expect.stringMatching(/^\$\{aws_kms_key\.SecretsKey_\w+\.key_id\}$/) });
  });

  test('the role may wrap and unwrap data keys with this key only, with Gyre\'s encryption context', () => {
    const [grant] = only(synth(), IamRolePolicy.tfResourceType);
    expect(grant.role).toBe('runtime-role');
    const policy = JSON.parse(grant.policy);
    expect(policy.Statement.flatMap((s: any) => s.Action).sort()).toEqual(['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey']);
    const keyArn = expect.stringMatching(/^\$\{aws_kms_key\.SecretsKey_\w+\.arn\}$/);
    expect(policy.Statement.flatMap((s: any) => s.Resource)).toEqual([keyArn, keyArn]);
    expect(policy.Statement.find((s: any) => s.Action.includes('kms:Decrypt')).Condition).toEqual({ StringEquals: { 'kms:EncryptionContext:service': 'gyre' } });
  });

  test('the runtime is pointed at the key by its ARN', () => {
    Testing.synthScope((scope) => {
      const key = new AwsSecretsKey(scope, 'K', {});
      expect(key.runtimeEnvironment).toEqual({ GYRE_SECRETS_KEY_WRAPPER: 'aws-kms', GYRE_SECRETS_AWS_KMS_KEY_ID: key.keyArn });
      expect(key.keyArn).toMatch(/TfToken/);
    });
  });

  test('an existing key is granted on, and nothing is made', () => {
    const arn = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const out = synth({ keyArn: arn });
    expect(out).not.toHaveResource(KmsKey);
    expect(out).not.toHaveResource(KmsAlias);
    expect(JSON.parse(only(out, IamRolePolicy.tfResourceType)[0].policy).Statement.flatMap((s: any) => s.Resource)).toEqual([arn, arn]);
  });

  test.each([
    [{ keyArn: 'alias/gyre' }, /keyArn \(alias\/gyre\) must be a KMS key ARN/],
    [{ keyArn: 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab', alias: 'alias/x' }, /alias applies only to a key this construct makes/],
    [{ rotationDays: 30 }, /rotationDays \(30\) must be a whole number of days from 90 to 2560/],
    [{ deletionWindowDays: 3 }, /deletionWindowDays \(3\) must be a whole number of days from 7 to 30/],
    [{ alias: 'alias/aws/s3' }, /alias \(alias\/aws\/s3\) must be alias\/<name>/],
  ])('refuses %j', (props, message) => {
    expect(() => synth(props)).toThrow(message);
  });
});

describe('RdsDatabase', () => {
  test('is encrypted, private, backed up, multi-AZ and protected from deletion', () => {
    const out = Testing.synthScope((scope) => {
      new RdsDatabase(scope, 'Db', { name: 'gyre-t', region: 'us-east-1', vpcId: 'vpc-1', subnetIds: ['a', 'b'], allowedCidrs: ['10.0.0.0/16'] });
    });
    expect(out).toHaveResourceWithProperties(DbInstance, {
      engine: 'postgres', storage_encrypted: true, publicly_accessible: false, backup_retention_period: 7, deletion_protection: true, multi_az: true,
    });
    expect(out).toHaveResourceWithProperties(SecurityGroup, {
      ingress: [expect.objectContaining({ from_port: 5432, to_port: 5432, cidr_blocks: ['10.0.0.0/16'] })],
    });
  });

  test('refuses to turn backups off', () => {
    expect(() => Testing.synthScope((s) => new RdsDatabase(s, 'D', { name: 'x', region: 'us-east-1', vpcId: 'v', subnetIds: ['a', 'b'], allowedCidrs: [], backupRetentionDays: 0 })))
      .toThrow(/backupRetentionDays \(0\) must be between 1 and 35/);
  });

  test('the runtime verifies the server: verify-full against the RDS bundle in the image, whose CA the instance uses', () => {
    let url = '';
    const out = Testing.synthScope((scope) => {
      url = new RdsDatabase(scope, 'Db', { name: 'gyre-t', region: 'eu-west-1', vpcId: 'vpc-1', subnetIds: ['a', 'b'], allowedCidrs: ['10.0.0.0/16'] }).url;
    });
    const query = new URLSearchParams(url.split('?')[1]);
    expect(query.get('sslmode')).toBe('verify-full');
    expect(query.get('sslrootcert')).toBe(RDS_CA_BUNDLE_IMAGE_PATH);
    expect(out).toHaveResourceWithProperties(DbInstance, { ca_cert_identifier: 'rds-ca-rsa2048-g1' });
    // The Dockerfile copies images/ca to the directory the URL names.
    const dockerfile = fs.readFileSync(path.join(__dirname, '..', '..', 'images', 'runtime.Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^COPY images\/ca \.\/ca$/m);
    expect(dockerfile).toMatch(/^WORKDIR \/opt\/gyre$/m);
    expect(RDS_CA_BUNDLE_IMAGE_PATH).toBe(`/opt/gyre/ca/${path.basename(RDS_CA_BUNDLE_FILE)}`);
  });

  test('refuses a region whose CA the shipped bundle lacks', () => {
    expect(() => Testing.synthScope((s) => new RdsDatabase(s, 'D', { name: 'x', region: 'xx-nowhere-9', vpcId: 'v', subnetIds: ['a', 'b'], allowedCidrs: [] })))
      .toThrow(/region \(xx-nowhere-9\): rds-global-bundle.pem holds no "Amazon RDS xx-nowhere-9 Root CA RSA2048 G1" certificate/);
  });
});

describe('AwsNomadClients', () => {
  const synth = () => Testing.synthScope((scope) => {
    const tls = new NomadTls(scope, 'Tls');
    const clients = new AwsNomadClients(scope, 'Clients', {
      name: 'gyre-t-nomad', vpcId: 'vpc-1', vpcCidr: '10.20.0.0/16', subnetIds: ['a', 'b'], tls,
      serverAddress: 'gyre.example.com:4647', packageMirror: 'https://mirror.example.com/pkgs', nomadVersion: '1.9.7',
      minClients: 2, maxClients: 8, sshRerunCidrs: ['203.0.113.0/24'], blockedCidrs: ['10.20.0.0/16'],
    });
    clients.grantAutoscaling('autoscaler-role');
  });

  test('instances require IMDSv2, one hop, and encrypted disks', () => {
    expect(synth()).toHaveResourceWithProperties(LaunchTemplate, {
      metadata_options: expect.objectContaining({ http_tokens: 'required', http_put_response_hop_limit: 1 }),
      block_device_mappings: [expect.objectContaining({ ebs: expect.objectContaining({ encrypted: 'true' }) })],
    });
  });

  test('opens Nomad ports to the VPC and SSH-rerun ports to the rerun CIDRs only', () => {
    expect(synth()).toHaveResourceWithProperties(SecurityGroup, {
      ingress: expect.arrayContaining([
        expect.objectContaining({ protocol: 'tcp', from_port: 4646, to_port: 4648, cidr_blocks: ['10.20.0.0/16'] }),
        expect.objectContaining({ protocol: 'tcp', from_port: 64535, to_port: 65535, cidr_blocks: ['203.0.113.0/24'] }),
      ]),
    });
  });

  test('user data installs from the mirror, configures mutual TLS and blocks metadata for containers', () => {
    const script: string = Object.values(parse(synth()).locals ?? {})[0];
    expect(script).toContain("MIRROR='https://mirror.example.com/pkgs'");
    expect(script).toContain('servers    = ["gyre.example.com:4647"]');
    expect(script).toContain('verify_server_hostname = true');
    expect(script).toContain('gyre-docker-gc.timer');
    expect(script).toContain('${tls_private_key.Tls_ClientKey');
    expect(script).not.toMatch(/@@[A-Z_]+@@/);
  });

  test('build containers resolve names through the VPC resolver and reach nothing else in the VPC or the metadata service', () => {
    const script: string = Object.values(parse(synth()).locals ?? {})[0];
    for (const proto of ['udp', 'tcp'] as const) {
      expect(containerMayReach(script, { dst: '10.20.0.2', proto, port: 53 })).toBe(true);
      expect(containerMayReach(script, { dst: '169.254.169.253', proto, port: 53 })).toBe(true);
    }
    expect(containerMayReach(script, { dst: '10.20.0.2', proto: 'tcp', port: 80 })).toBe(false);
    expect(containerMayReach(script, { dst: '10.20.64.17', proto: 'tcp', port: 5432 })).toBe(false);
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'tcp', port: 80 })).toBe(false);
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'udp', port: 53 })).toBe(false);
    expect(containerMayReach(script, { dst: '140.82.112.3', proto: 'tcp', port: 443 })).toBe(true);
  });

  test('a terminating instance is held by a lifecycle hook while Nomad drains it', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(AutoscalingGroup, {
      initial_lifecycle_hook: [expect.objectContaining({ lifecycle_transition: 'autoscaling:EC2_INSTANCE_TERMINATING', default_result: 'CONTINUE', heartbeat_timeout: 15 * 60 + 300 })],
    });
    const script: string = Object.values(parse(out).locals ?? {})[0];
    // The watcher stops Nomad when the group terminates the instance; stopping drains first.
    expect(script).toContain('meta-data/autoscaling/target-lifecycle-state');
    expect(script).toMatch(/if \[ "\$state" = Terminated \]; then\n\s+systemctl stop nomad/);
    expect(script).toMatch(/drain_on_shutdown \{\n\s+deadline\s+= "15m"/);
    expect(script).toContain('leave_on_terminate = true');
    expect(script).toContain('TimeoutStopSec=1020');
    expect(script).toMatch(/systemctl enable --now .*gyre-lifecycle-watch.service/);
  });

  test('with the agent image in ECR, clients pull with the instance role through ecr-login', () => {
    const out = Testing.synthScope((scope) => {
      new AwsNomadClients(scope, 'Clients', {
        name: 'gyre-t-nomad', vpcId: 'vpc-1', vpcCidr: '10.20.0.0/16', subnetIds: ['a', 'b'], tls: new NomadTls(scope, 'Tls'),
        serverAddress: 'g:4647', packageMirror: 'https://m', nomadVersion: '1.9.7',
        registryAuth: { kind: 'ecr', registryHost: '123456789012.dkr.ecr.us-east-1.amazonaws.com' },
      });
    });
    expect(out).toHaveResourceWithProperties(IamRolePolicyAttachment, { policy_arn: 'arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly' });
    const script: string = Object.values(parse(out).locals ?? {})[0];
    expect(script).toContain('amazon-ecr-credential-helper');
    expect(script).toContain('{"credHelpers":{"123456789012.dkr.ecr.us-east-1.amazonaws.com":"ecr-login"}}');
    expect(script).toMatch(/auth \{\n\s+config = "\/etc\/nomad.d\/docker-auth.json"/);
    expect(synth()).not.toHaveResourceWithProperties(IamRolePolicyAttachment, { policy_arn: 'arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly' });
  });

  test('the engine pulls Docker Hub images through the pull-through cache, and the docker plugin lets the agent mount the engine socket', () => {
    const out = Testing.synthScope((scope) => {
      new AwsNomadClients(scope, 'Clients', {
        name: 'gyre-t-nomad', vpcId: 'vpc-1', vpcCidr: '10.20.0.0/16', subnetIds: ['a', 'b'], tls: new NomadTls(scope, 'Tls'),
        serverAddress: 'g:4647', packageMirror: 'https://m', nomadVersion: '1.9.7', registryMirrors: ['https://hub-cache.example.com'],
        registryAuth: { kind: 'docker-config', configJson: '{"auths":{"registry.example.com":{"auth":"dTpw"}}}' },
      });
    });
    const script: string = Object.values(parse(out).locals ?? {})[0];
    // daemon.json is written before Docker is installed, so the engine starts with it.
    const daemon = /cat > \/etc\/docker\/daemon.json <<'JSON'\n([\s\S]*?)\nJSON\n/.exec(script);
    expect(JSON.parse(daemon![1])).toMatchObject({ 'registry-mirrors': ['https://hub-cache.example.com'] });
    expect(script.indexOf('/etc/docker/daemon.json')).toBeLessThan(script.indexOf('apt-get install'));
    expect(script).toMatch(/plugin "docker" \{\n\s+config \{[\s\S]*volumes \{\n\s+enabled = true\n\s+\}[\s\S]*auth \{\n\s+config = "\/etc\/nomad.d\/docker-auth.json"/);
    expect(script).toContain('allow_privileged = false');
    expect(script).toContain('{"auths":{"registry.example.com":{"auth":"dTpw"}}}');
    // Without a cache, Docker Hub is pulled from directly.
    const plain: string = Object.values(parse(synth()).locals ?? {})[0];
    expect(JSON.parse(/cat > \/etc\/docker\/daemon.json <<'JSON'\n([\s\S]*?)\nJSON\n/.exec(plain)![1])).not.toHaveProperty('registry-mirrors');
  });

  test('rejects a registry mirror Docker would not take', () => {
    expect(() => Testing.synthScope((s) => new AwsNomadClients(s, 'C', {
      name: 'x', vpcId: 'v', vpcCidr: '10.0.0.0/16', subnetIds: [], tls: new NomadTls(s, 'T'), serverAddress: 'a:4647',
      packageMirror: 'https://m', nomadVersion: '1.9.7', registryMirrors: ['http://hub-cache.example.com'],
    }))).toThrow('registryMirrors[0] (http://hub-cache.example.com) must be an https:// URL of a host with no path');
  });

  test('the group is sized from the props and its desired count is left to the autoscaler', () => {
    expect(synth()).toHaveResourceWithProperties(AutoscalingGroup, {
      min_size: 2, max_size: 8, lifecycle: expect.objectContaining({ ignore_changes: ['desired_capacity'] }),
    });
  });

  test('the autoscaler may only write to this group', () => {
    const policy = JSON.parse(only(synth(), IamRolePolicy.tfResourceType)[0].policy);
    const write = policy.Statement.find((s: any) => s.Sid === 'ScaleThisGroup');
    expect(write.Resource).toHaveLength(1);
    expect(write.Resource[0]).toMatch(/^\$\{aws_autoscaling_group\.Clients_Group_[0-9A-F]+\.arn\}$/);
    const unscoped = policy.Statement.filter((s: any) => s.Resource.includes('*')).flatMap((s: any) => s.Action);
    expect(unscoped.every((a: string) => /:Describe/.test(a))).toBe(true);
  });

  test('rejects max below min', () => {
    expect(() => Testing.synthScope((s) => new AwsNomadClients(s, 'C', {
      name: 'x', vpcId: 'v', vpcCidr: '10.0.0.0/16', subnetIds: [], tls: new NomadTls(s, 'T'), serverAddress: 'a:4647',
      packageMirror: 'https://m', nomadVersion: '1.9.7', minClients: 5, maxClients: 2,
    }))).toThrow('maxClients (2) must be at least 1 and at least minClients (5)');
  });
});

describe('AwsBastion', () => {
  test('SSH only from the allowed CIDRs, IMDSv2, encrypted disk, SSM role', () => {
    const out = Testing.synthScope((scope) => {
      new AwsBastion(scope, 'Bastion', { name: 'gyre-t', vpcId: 'vpc-1', subnetId: 'subnet-1', sshAllowedCidrs: ['203.0.113.0/24'] });
    });
    expect(out).toHaveResourceWithProperties(SecurityGroup, {
      ingress: [expect.objectContaining({ from_port: 22, to_port: 22, cidr_blocks: ['203.0.113.0/24'] })],
    });
    expect(out).toHaveResourceWithProperties(Instance, {
      metadata_options: expect.objectContaining({ http_tokens: 'required' }),
      root_block_device: expect.objectContaining({ encrypted: true }),
    });
    expect(out).toContain('AmazonSSMManagedInstanceCore');
  });

  test('the bastion reaches the private Kubernetes API and may administer the cluster', () => {
    const out = Testing.synthScope((scope) => {
      const cluster = new EksCluster(scope, 'Cluster', { clusterName: 'gyre-t', version: '1.31', subnetIds: ['a', 'b'] });
      const bastion = new AwsBastion(scope, 'Bastion', { name: 'gyre-t', vpcId: 'vpc-1', subnetId: 'subnet-1' });
      cluster.allowApiAccessFrom('BastionApi', bastion.securityGroupId);
      cluster.grantClusterAdmin('BastionAccess', bastion.roleArn);
    });
    expect(out).toHaveResourceWithProperties(VpcSecurityGroupIngressRule, {
      security_group_id: expect.stringContaining('aws_eks_cluster.Cluster_'),
      referenced_security_group_id: expect.stringContaining('aws_security_group.Bastion_SecurityGroup'),
      from_port: 443, to_port: 443, ip_protocol: 'tcp',
    });
    expect(out).toHaveResourceWithProperties(EksAccessEntry, { principal_arn: expect.stringContaining('aws_iam_role.Bastion_Role'), type: 'STANDARD' });
    expect(out).toHaveResourceWithProperties(EksAccessPolicyAssociation, {
      policy_arn: 'arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy', access_scope: { type: 'cluster' },
    });
    expect(out).toContain('eks:DescribeCluster');
  });

  test('refuses SSH from the whole internet', () => {
    expect(() => Testing.synthScope((s) => new AwsBastion(s, 'B', { name: 'x', vpcId: 'v', subnetId: 's', sshAllowedCidrs: ['0.0.0.0/0'] })))
      .toThrow(/sshAllowedCidrs \(0.0.0.0\/0\)/);
  });
});
