import 'cdktf/lib/testing/adapters/jest';
import { Testing } from 'cdktf';
import { LaunchTemplate } from '@cdktf/provider-aws/lib/launch-template';
import { SecurityGroup } from '@cdktf/provider-aws/lib/security-group';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { ComputeInstanceTemplate } from '@cdktf/provider-google/lib/compute-instance-template';
import { ComputeFirewall } from '@cdktf/provider-google/lib/compute-firewall';
import { ProjectIamMember } from '@cdktf/provider-google/lib/project-iam-member';
import { AwsMachineExecutor, type AwsMachineExecutorProps } from '../../constructs/aws/machine-executor';
import { GcpMachineExecutor, MACHINE_NETWORK_TAG } from '../../constructs/gcp/machine-executor';
import { parseEnvironment } from '../../stacks/environment';
import { addEnvironments } from '../../stacks/app';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';

Testing.setupJest();

const only = (out: string, type: string): any[] => Object.values(JSON.parse(out).resource[type] ?? {});

describe('AwsMachineExecutor', () => {
  const props: AwsMachineExecutorProps = {
    name: 'gyre-t-machines',
    installationId: 'gyre-t',
    region: 'eu-west-1',
    vpcId: 'vpc-1',
    subnetIds: ['subnet-a', 'subnet-b'],
    images: { 'ubuntu-2204:current': 'ami-0123456789abcdef0', default: 'ami-0fedcba9876543210' },
    controlPlaneCidrs: ['10.0.0.0/16'],
  };
  const synth = (extra: Partial<AwsMachineExecutorProps> = {}) =>
    Testing.synthScope((scope) => {
      const m = new AwsMachineExecutor(scope, 'Machines', { ...props, ...extra });
      m.grantLaunch('runtime-role');
    });

  test('a launch template per image, IMDSv2 only with one hop, terminating on shutdown, in the machines group', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(LaunchTemplate, {
      name: 'gyre-t-machines-ubuntu-2204-current',
      image_id: 'ami-0123456789abcdef0',
      instance_initiated_shutdown_behavior: 'terminate',
      metadata_options: { http_endpoint: 'enabled', http_tokens: 'required', http_put_response_hop_limit: 1 },
    });
    expect(out).toHaveResourceWithProperties(LaunchTemplate, { name: 'gyre-t-machines-default', image_id: 'ami-0fedcba9876543210' });
    expect(only(out, 'aws_launch_template')).toHaveLength(2);
  });

  test('machines accept no connection and reach only the control plane over HTTPS, unless the environment allows more', () => {
    const [sg] = only(synth(), 'aws_security_group');
    expect(sg.ingress).toEqual([]);
    expect(sg.egress).toEqual([expect.objectContaining({ protocol: 'tcp', from_port: 443, to_port: 443, cidr_blocks: ['10.0.0.0/16'] })]);
    const [open] = only(synth({ egressCidrs: ['0.0.0.0/0'] }), 'aws_security_group');
    expect(open.egress).toHaveLength(2);
    expect(synth()).toHaveResourceWithProperties(SecurityGroup, { vpc_id: 'vpc-1' });
  });

  test('the runtime may launch and terminate only machines tagged with its installation, and pass only the machine role', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(IamRolePolicy, { role: 'runtime-role', name: 'gyre-machines' });
    const [policy] = only(out, 'aws_iam_role_policy');
    const statements: any[] = JSON.parse(policy.policy).Statement;
    const sid = (s: string) => statements.find((x) => x.Sid === s);
    expect(sid('LaunchTaggedMachines')).toMatchObject({ Action: ['ec2:RunInstances'], Condition: { StringEquals: { 'aws:RequestTag/gyre:installation': 'gyre-t' } } });
    expect(sid('TerminateOnlyOurs')).toMatchObject({ Action: ['ec2:TerminateInstances'], Condition: { StringEquals: { 'ec2:ResourceTag/gyre:installation': 'gyre-t' } } });
    expect(sid('TagOnlyAtLaunch').Condition).toEqual({ StringEquals: { 'ec2:CreateAction': 'RunInstances' } });
    expect(sid('PassTheMachineRole').Resource).toHaveLength(1);
    expect(sid('PassTheMachineRole').Resource[0]).toContain('aws_iam_role.Machines_InstanceRole');
    // Nothing else: no unscoped write.
    for (const s of statements.filter((x) => x.Resource.includes('*'))) expect(s.Action).toEqual(['ec2:DescribeInstances']);
    // The machines themselves get no permissions.
    expect(only(out, 'aws_iam_role_policy_attachment')).toEqual([]);
  });

  test('bad props fail at synth, naming the prop', () => {
    expect(() => synth({ images: {} })).toThrow(/images maps no machine image/);
    expect(() => synth({ images: { x: 'ubuntu' } })).toThrow(/images.x \(ubuntu\) must be an AMI id/);
    expect(() => synth({ controlPlaneCidrs: [] })).toThrow(/controlPlaneCidrs/);
  });
});

describe('GcpMachineExecutor', () => {
  const synth = (egressCidrs: string[] = []) =>
    Testing.synthScope((scope) => {
      const m = new GcpMachineExecutor(scope, 'Machines', {
        name: 'gyre-t-machines',
        project: 'acme-ci',
        zone: 'europe-west1-b',
        networkId: 'net',
        subnetworkId: 'subnet',
        images: { 'ubuntu-2204:current': 'projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts' },
        controlPlaneCidrs: ['10.0.0.0/16'],
        egressCidrs,
      });
      m.grantLaunch('serviceAccount:runtime@acme-ci.iam.gserviceaccount.com');
    });

  test('an instance template per image with no service account, blocked project SSH keys and the machines tag', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(ComputeInstanceTemplate, {
      name: 'gyre-t-machines-ubuntu-2204-current',
      tags: [MACHINE_NETWORK_TAG],
      metadata: { 'block-project-ssh-keys': 'true' },
    });
    const [template] = only(out, 'google_compute_instance_template');
    expect(template.service_account).toBeUndefined();
    expect(template.disk[0].source_image).toBe('projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts');
    expect(template.network_interface[0].access_config).toBeUndefined();
  });

  test('the firewall lets machines reach the control plane over HTTPS and denies every other egress', () => {
    const out = synth();
    expect(out).toHaveResourceWithProperties(ComputeFirewall, { direction: 'EGRESS', priority: 900, target_tags: [MACHINE_NETWORK_TAG], destination_ranges: ['10.0.0.0/16'], allow: [{ protocol: 'tcp', ports: ['443'] }] });
    expect(out).toHaveResourceWithProperties(ComputeFirewall, { direction: 'EGRESS', priority: 1000, target_tags: [MACHINE_NETWORK_TAG], destination_ranges: ['0.0.0.0/0'], deny: [{ protocol: 'all' }] });
    expect(only(out, 'google_compute_firewall')).toHaveLength(2);
    expect(only(synth(['0.0.0.0/0']), 'google_compute_firewall')).toHaveLength(3);
  });

  test('the runtime service account is compute.instanceAdmin.v1 on the project', () => {
    expect(synth()).toHaveResourceWithProperties(ProjectIamMember, { project: 'acme-ci', role: 'roles/compute.instanceAdmin.v1', member: 'serviceAccount:runtime@acme-ci.iam.gserviceaccount.com' });
  });
});

describe('machines: in the environment file', () => {
  const raw = () => parseYaml(fs.readFileSync(path.join(__dirname, '..', '..', 'environments', 'aws-example.yaml'), 'utf8'));
  test('images, instance types and spot are read; a bad image names the field', () => {
    const env = parseEnvironment({ ...raw(), machines: { images: { 'ubuntu-2204:current': 'ami-0123456789abcdef0' }, instanceTypes: { large: 'm6i.xlarge' }, spot: true } }, 'environments/mach.yaml', 'mach');
    expect(env.machines).toEqual({ images: { 'ubuntu-2204:current': 'ami-0123456789abcdef0' }, instanceTypes: { large: 'm6i.xlarge' }, spot: true, egressCidrs: [], diskGb: 100 });
    expect(() => parseEnvironment({ ...raw(), machines: { images: { 'ubuntu-2204:current': 'ubuntu' } } }, 'environments/mach.yaml', 'mach')).toThrow(/machines.images.ubuntu-2204:current \("ubuntu"\) must be an AMI id/);
    expect(() => parseEnvironment({ ...raw(), machines: { imagez: {} } }, 'environments/mach.yaml', 'mach')).toThrow(/machines.imagez is not a machines setting/);
  });
});

describe('the machines role in a cluster install', () => {
  const raw = () => parseYaml(fs.readFileSync(path.join(__dirname, '..', '..', 'environments', 'aws-example.yaml'), 'utf8'));
  const deployment = (server: any) => Object.values<any>(server.resource.kubernetes_deployment_v1).find((d) => d.metadata.name === 'gyre-machines');

  test('with machines: the role runs with its provider, installation id and image map; without, it runs no replicas', () => {
    const env = parseEnvironment({ ...raw(), name: 'mach', machines: { images: { 'ubuntu-2204:current': 'ami-0123456789abcdef0' } } }, 'environments/mach.yaml', 'mach');
    const [stacks] = addEnvironments(Testing.app(), [env]);
    const server = JSON.parse(Testing.synth(stacks.server));
    const d = deployment(server);
    expect(d.spec.replicas).toBe('1');
    const [container] = d.spec.template.spec.container;
    const envOf = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]));
    expect(envOf).toMatchObject({ GYRE_MACHINE_PROVIDER: 'aws', GYRE_INSTALLATION_ID: 'gyre-mach', GYRE_MACHINE_CONFIG: '/etc/gyre/machines/machines.json' });
    expect(Object.values<any>(server.resource.kubernetes_config_map_v1).some((c) => c.metadata.name === 'gyre-machine-config' && c.data['machines.json'].includes('gyre-mach-machines-ubuntu-2204-current'))).toBe(true);
    const infra = JSON.parse(Testing.synth(stacks.infra));
    expect(Object.keys(infra.resource.aws_launch_template)).toEqual(expect.arrayContaining([expect.stringMatching(/Machines_Template-ubuntu-2204-current/)]));

    const [plain] = addEnvironments(Testing.app(), [parseEnvironment({ ...raw(), name: 'plain' }, 'environments/plain.yaml', 'plain')]);
    expect(deployment(JSON.parse(Testing.synth(plain.server))).spec.replicas).toBe('0');
  });
});
