import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../support/database';
import { startEc2StandIn, type Ec2StandIn } from '../support/ec2-stand-in';
import { startGceStandIn, type GceStandIn } from '../support/gce-stand-in';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';
import { parseStartupScript } from '../../runtime/machines/startup-script';

// The EC2 SDK signs with these (the stand-in only checks that a SigV4 signature is there); no IMDS lookups.
process.env.AWS_ACCESS_KEY_ID = 'AKIDSTANDIN';
process.env.AWS_SECRET_ACCESS_KEY = 'stand-in-secret';
process.env.AWS_EC2_METADATA_DISABLED = 'true';

const INSTALLATION = 'gyre-test-install';
const dir = mkdtempSync(join(tmpdir(), 'gyre-machines-'));

const machineConfig = (steps: string, image = 'ubuntu-2204:current', resourceClass = 'large') => `version: 2.1
jobs:
  build:
    machine:
      image: ${image}
    resource_class: ${resourceClass}
    steps:
      - run: ${JSON.stringify(steps)}
workflows:
  w:
    jobs: [build]
`;

function writeConfig(name: string, config: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(config));
  return path;
}

async function stepOutput(g: TestGyre, jobNumber: number, slug: string): Promise<string> {
  const job = await g.api('GET', `/api/v1.1/project/gh/${slug}/${jobNumber}`);
  const action = job.steps[0].actions[0];
  const out = await g.api('GET', `/api/v1.1/project/gh/${slug}/${jobNumber}/output/${action.step}/${action.index}`);
  return out.map((o: { message: string }) => o.message).join('');
}

describe('the machine executor on EC2 (a stand-in of the EC2 Query API, only the endpoint overridden)', () => {
  let ec2: Ec2StandIn;
  let g: TestGyre;
  beforeAll(async () => {
    ec2 = await startEc2StandIn({ launchTemplates: { 'gyre-ubuntu-2204': 'ami-0ubuntu2204', 'gyre-ubuntu-2004': 'ami-0ubuntu2004' }, boot: true });
    g = await startTestGyre({
      env: {
        GYRE_MACHINE_PROVIDER: 'aws',
        GYRE_INSTALLATION_ID: INSTALLATION,
        GYRE_MACHINE_SWEEP_MS: '300',
        GYRE_MACHINE_CONFIG: writeConfig('ec2.json', {
          images: { 'ubuntu-2204:current': 'gyre-ubuntu-2204', 'ubuntu-2004:current': 'gyre-ubuntu-2004' },
          instanceTypes: { large: 'm6i.xlarge' },
          spot: true,
          aws: { region: 'eu-west-1', endpoint: ec2.url },
        }),
      },
    });
  });
  afterAll(async () => {
    await g?.stop();
    await ec2?.close();
  });

  it('runs a machine job on exactly one instance of the mapped image, IMDSv2 only, tagged, and terminates it after the task', async () => {
    // WHEN
    await g.addProject('acme/vm', { '.circleci/config.yml': machineConfig('echo "machine says $((6*7)), token:${GYRE_TASK_TOKEN:-none}"') });
    const before = ec2.instances.length;
    const { id } = await g.trigger('acme/vm');
    const { jobs } = await g.waitForPipeline(id, 30_000);
    // THEN
    expect(jobs.build.status).toBe('success');
    const launched = ec2.instances.slice(before);
    expect(launched).toHaveLength(1);
    const [vm] = launched;
    expect(vm.imageId).toBe('ami-0ubuntu2204');
    expect(vm.params['LaunchTemplate.LaunchTemplateName']).toBe('gyre-ubuntu-2204');
    expect(vm.instanceType).toBe('m6i.xlarge');
    expect(vm.params['MetadataOptions.HttpTokens']).toBe('required');
    expect(vm.params['InstanceMarketOptions.MarketType']).toBe('spot');
    expect(vm.params.InstanceInitiatedShutdownBehavior).toBe('terminate');
    const [task] = await g.gyre.store.query<{ id: string; attempt: number }>(`SELECT t.id::text AS id, t.attempt FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.number = $1 AND j.project_id = (SELECT id FROM projects WHERE slug = 'gh/acme/vm')`, [jobs.build.job_number]);
    expect(vm.tags).toMatchObject({ 'gyre:installation': INSTALLATION, 'gyre:task': task.id, 'gyre:attempt': String(task.attempt) });
    // The step ran on the "machine" (the user data's agent), and its output reached the job.
    expect(await stepOutput(g, jobs.build.job_number, 'acme/vm')).toContain("machine says 42, token:none");
    await until('the instance is terminated', async () => vm.state === 'terminated', 10_000);
  });

  it('fails a job whose machine image is not configured, naming it and the configured images, and launches nothing', async () => {
    await g.addProject('acme/unmapped', { '.circleci/config.yml': machineConfig('echo never', 'android:2024.01.1') });
    const before = ec2.instances.length;
    const { id } = await g.trigger('acme/unmapped');
    const { jobs } = await g.waitForPipeline(id, 20_000);
    expect(jobs.build.status).toBe('failed');
    expect(ec2.instances.length).toBe(before);
    const output = await stepOutput(g, jobs.build.job_number, 'acme/unmapped');
    expect(output).toContain("'android:2024.01.1' is not configured");
    expect(output).toContain('ubuntu-2004:current, ubuntu-2204:current');
  });

  it('gives the machine a token for its own task only: another task is refused', async () => {
    ec2.options.boot = false;
    try {
      await g.addProject('acme/one', { '.circleci/config.yml': machineConfig('sleep 30') });
      await g.addProject('acme/two', { '.circleci/config.yml': machineConfig('sleep 30', 'ubuntu-2004:current') });
      const before = ec2.instances.length;
      const p1 = await g.trigger('acme/one');
      const p2 = await g.trigger('acme/two');
      await until('two instances', async () => ec2.instances.length >= before + 2, 10_000);
      const [a, b] = ec2.instances.slice(before);
      const tokenA = parseStartupScript(a.userData).token!;
      expect(tokenA).toMatch(/^gyre-task\./);
      // No long-lived credential in the user data: only the task's own token and the address.
      expect(a.userData).not.toMatch(/AKID|Circle-Token|test-token-/);
      const get = (taskId: string) => fetch(`${g.url}/api/v2/agent/task/${taskId}`, { headers: { Authorization: `Bearer ${tokenA}`, 'X-Gyre-Agent-Version': '2' } });
      expect((await get(a.tags['gyre:task'])).status).toBe(200);
      expect((await get(b.tags['gyre:task'])).status).toBe(403);
      await g.api('POST', `/api/v2/workflow/${(await g.api('GET', `/api/v2/pipeline/${p1.id}/workflow`)).items[0].id}/cancel`);
      await g.api('POST', `/api/v2/workflow/${(await g.api('GET', `/api/v2/pipeline/${p2.id}/workflow`)).items[0].id}/cancel`);
      // Canceled while booting: no agent to tell, so the driver ends the attempts and destroys both.
      await until('both instances terminated', async () => a.state === 'terminated' && b.state === 'terminated', 10_000);
    } finally {
      ec2.options.boot = true;
    }
  });
});

describe('the machine executor on Compute Engine (a stand-in of the Compute REST API, only the endpoint overridden)', () => {
  let gce: GceStandIn;
  let g: TestGyre;
  beforeAll(async () => {
    gce = await startGceStandIn({ project: 'acme-ci', zone: 'europe-west1-b', instanceTemplates: { 'gyre-ubuntu-2204': 'projects/ubuntu-os-cloud/global/images/ubuntu-2204' }, boot: true });
    g = await startTestGyre({
      env: {
        GYRE_MACHINE_PROVIDER: 'gcp',
        GYRE_INSTALLATION_ID: INSTALLATION,
        GYRE_MACHINE_SWEEP_MS: '300',
        GYRE_MACHINE_CONFIG: writeConfig('gce.json', {
          images: { 'ubuntu-2204:current': 'gyre-ubuntu-2204' },
          instanceTypes: { large: 'n2-standard-4' },
          gcp: { project: 'acme-ci', zone: 'europe-west1-b', apiEndpoint: gce.url },
        }),
      },
    });
  });
  afterAll(async () => {
    await g?.stop();
    await gce?.close();
  });

  it('runs a machine job on one labelled instance from the mapped template, deletes it after, and sends no Google credentials', async () => {
    await g.addProject('acme/gce', { '.circleci/config.yml': machineConfig('echo "hello from gce"') });
    const { id } = await g.trigger('acme/gce');
    const { jobs } = await g.waitForPipeline(id, 30_000);
    expect(jobs.build.status).toBe('success');
    expect(gce.instances).toHaveLength(1);
    const [vm] = gce.instances;
    expect(vm.sourceImage).toBe('projects/ubuntu-os-cloud/global/images/ubuntu-2204');
    expect(vm.body.machineType).toBe('zones/europe-west1-b/machineTypes/n2-standard-4');
    expect(vm.labels).toMatchObject({ 'gyre-installation': INSTALLATION, 'gyre-attempt': '1' });
    expect(vm.labels['gyre-task']).toMatch(/^[0-9a-f-]{36}$/);
    expect(await stepOutput(g, jobs.build.job_number, 'acme/gce')).toContain('hello from gce');
    await until('the instance is deleted', async () => vm.deleted, 10_000);
    expect(gce.authorizations).toEqual([]);
  });

  it('sweeps an instance of this installation whose task is unknown, and leaves other installations alone', async () => {
    const insert = (name: string, installation: string) =>
      fetch(`${gce.url}/compute/v1/projects/acme-ci/zones/europe-west1-b/instances?sourceInstanceTemplate=global/instanceTemplates/gyre-ubuntu-2204`, {
        method: 'POST',
        body: JSON.stringify({ name, labels: { 'gyre-installation': installation, 'gyre-task': '00000000-0000-4000-8000-000000000000', 'gyre-attempt': '1' } }),
      });
    await insert('orphan', INSTALLATION);
    await insert('someone-else', 'another-install');
    const orphan = gce.instances.find((i) => i.name === 'orphan')!;
    await until('the orphan is swept', async () => orphan.deleted, 5_000);
    expect(gce.instances.find((i) => i.name === 'someone-else')!.deleted).toBe(false);
  });
});

const onPostgres = process.env.DATABASE_URL ? describe : describe.skip;

onPostgres('the machine executor across a control-plane restart', () => {
  it('terminates the machine of a task that ended while no machine driver watched it', async () => {
    const ec2 = await startEc2StandIn({ launchTemplates: { 'gyre-ubuntu-2204': 'ami-0ubuntu2204' } });
    const database = await createTestDatabase();
    const env = {
      DATABASE_URL: database.url,
      GYRE_MACHINE_PROVIDER: 'aws',
      GYRE_INSTALLATION_ID: INSTALLATION,
      GYRE_MACHINE_SWEEP_MS: '200',
      // Long enough that the first server's renewals keep it until it stops on a loaded machine
      // (with 1 s it sometimes lapsed first, and the first server ended the machine itself).
      GYRE_LEASE_TTL_MS: '5000',
      GYRE_MAX_ATTEMPTS: '1',
      GYRE_MACHINE_CONFIG: writeConfig('restart.json', { images: { 'ubuntu-2204:current': 'gyre-ubuntu-2204' }, aws: { region: 'eu-west-1', endpoint: ec2.url } }),
    };
    let second: TestGyre | undefined;
    try {
      const first = await startTestGyre({ env });
      await first.addProject('acme/restart', { '.circleci/config.yml': machineConfig('sleep 60') });
      const { id } = await first.trigger('acme/restart');
      // The machine never boots (its agent never reports), as when the control plane dies mid-boot.
      await until('an instance', async () => ec2.instances.length === 1, 10_000);
      await first.stop();
      const [vm] = ec2.instances;
      expect(vm.state).toBe('pending');
      // WHEN the control plane comes back
      second = await startTestGyre({ env });
      // THEN the attempt ends (its lease ran out) and the sweep terminates the orphan.
      await until('the orphan is terminated', async () => vm.state === 'terminated', 30_000);
      const { jobs } = await second.waitForPipeline(id, 30_000);
      expect(jobs.build.status).toBe('infrastructure_fail');
      expect(ec2.instances).toHaveLength(1);
    } finally {
      await second?.stop();
      await ec2.close();
      await database.drop();
    }
  }, 120_000);
});

// The local provider needs a rootful container engine (Podman here).
const withEngine = process.env.GYRE_TEST_DOCKER_SOCKET && process.getuid?.() === 0 ? describe : describe.skip;

withEngine('the local machine provider (development only: a privileged Podman container per task)', () => {
  it('starts one privileged container on the host network running the startup script, lists it by its tags, and removes it', async () => {
    const { execFileSync } = await import('node:child_process');
    const { createLocalProvider } = await import('../../runtime/machines/local-provider');
    const { createLogger } = await import('../../runtime/logger');
    const provider = createLocalProvider({ log: createLogger({ level: 'silent' }) });
    const installationId = `${INSTALLATION}-local`;
    const taskId = '11111111-2222-4333-8444-555555555555';
    const instance = await provider.launch({ installationId, taskId, attempt: 2, template: 'localhost/gyre-busybox:latest', spot: false, startupScript: 'echo booted; sleep 30' });
    try {
      const [info] = JSON.parse(execFileSync('podman', ['inspect', instance.id], { encoding: 'utf8' }));
      expect(info.HostConfig.Privileged).toBe(true);
      expect(info.HostConfig.NetworkMode).toBe('host');
      expect(await provider.list(installationId)).toEqual([{ id: instance.id, taskId, attempt: 2 }]);
      expect(await provider.list('another-install')).toEqual([]);
      await until('the script ran', async () => execFileSync('podman', ['logs', instance.id], { encoding: 'utf8' }).includes('booted'), 5_000);
      await provider.destroy(instance);
      expect(await provider.list(installationId)).toEqual([]);
      await provider.destroy(instance); // already gone: not an error
    } finally {
      execFileSync('podman', ['rm', '--force', '--ignore', '--time', '0', instance.id]);
    }
  });
});

describe('machine executor settings', () => {
  const { readMachineSettings } = require('../../runtime/machines/machine-settings') as typeof import('../../runtime/machines/machine-settings');
  it('is off unless GYRE_MACHINE_PROVIDER is set, and a bad setting stops start-up naming it', () => {
    expect(readMachineSettings({})).toBeUndefined();
    expect(() => readMachineSettings({ GYRE_MACHINE_PROVIDER: 'azure' })).toThrow(/GYRE_MACHINE_PROVIDER: 'azure' is not allowed \(allowed: aws, gcp, local\)/);
    expect(() => readMachineSettings({ GYRE_MACHINE_PROVIDER: 'aws' })).toThrow(/GYRE_MACHINE_CONFIG: is needed with GYRE_MACHINE_PROVIDER=aws/);
    expect(() => readMachineSettings({ GYRE_MACHINE_PROVIDER: 'aws', GYRE_MACHINE_CONFIG: writeConfig('noregion.json', { images: { x: 'lt' } }) })).toThrow(/aws.region/);
    expect(() => readMachineSettings({ GYRE_MACHINE_PROVIDER: 'gcp', GYRE_MACHINE_CONFIG: writeConfig('empty.json', { images: {} }) })).toThrow(/images maps no machine image/);
    expect(readMachineSettings({ GYRE_MACHINE_PROVIDER: 'local' })).toMatchObject({ provider: 'local', images: {}, spot: false });
  });
});
