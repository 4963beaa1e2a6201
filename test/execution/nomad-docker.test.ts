import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nomadAgentJobTemplate } from '../../constructs/kubernetes/control-plane';
import { readSettings } from '../../runtime/settings';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { startNomadStandIn, type NomadStandIn } from '../support/nomad-stand-in';

/**
 * Docker jobs on Nomad, end to end: Gyre submits a task's Nomad job to the stand-in, whose client
 * runs it with Podman as a Nomad client's docker driver would: the agent image (the runtime image
 * .ci/run builds) with the client's engine socket mounted; the agent then runs the job's primary
 * and service containers beside itself on that engine.
 */
const IMAGE = process.env.GYRE_TEST_RUNTIME_IMAGE ?? 'localhost/gyre-runtime:ci';
/** .ci/run builds the image in the background and writes the build's exit status here when it ends. */
const BUILD_STATUS = process.env.GYRE_TEST_RUNTIME_IMAGE_BUILD;
const socket = containerSocket();

function imagePresent(): boolean {
  try {
    execFileSync('podman', ['image', 'exists', IMAGE], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Waits for this run's build when there is one: an image of an earlier run would be an older agent. */
async function imageBuilt(): Promise<void> {
  if (!BUILD_STATUS) return;
  const deadline = Date.now() + 15 * 60_000;
  while (!existsSync(BUILD_STATUS)) {
    if (Date.now() > deadline) throw new Error('the runtime image build (.ci/run) did not end within 15 minutes');
    await new Promise((r) => setTimeout(r, 2000));
  }
  const status = readFileSync(BUILD_STATUS, 'utf8').trim();
  if (status !== '0') throw new Error(`the runtime image build (.ci/run) failed with status ${status}; see ${BUILD_STATUS}.log`);
}

const runnable = socket !== undefined && (BUILD_STATUS !== undefined || imagePresent());
if (!runnable) console.warn(`skipping Docker jobs on Nomad: ${socket ? `${IMAGE} is not built (bash .ci/run builds it; see .ci/runtime-image.sh)` : 'no container engine socket'}`);
const describeRunnable = runnable ? describe : describe.skip;

const MEMORY_MB = 512;

const pipeline = (image: string) => `version: 2.1
jobs:
  build:
    docker:
      - image: ${image}
      - image: ${BUSYBOX_IMAGE}
        name: svc
        entrypoint: ["/bin/sh", "-c"]
        command: ["mkdir -p /www && echo served-by-service > /www/x && exec httpd -f -p 8080 -h /www"]
    resource_class: acme/nomad-docker
    steps:
      - run:
          name: in the job image
          command: wc -l < /etc/passwd; grep nobody /etc/passwd
      - run:
          name: the service answers by name
          command: for i in $(seq 1 20); do wget -q -O - http://svc:8080/x && exit 0; sleep 0.25; done; exit 1
      - run:
          name: limits
          command: |
            echo "memory $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
            echo "cpu $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max)"
      - run:
          name: no engine in reach
          command: |
            echo "sockets: $(find / \\( -path /proc -o -path /sys \\) -prune -o -type s -print 2>/dev/null | wc -l)"
            echo "token: $(env | grep -c GYRE_TASK_TOKEN)"
workflows:
  w:
    jobs: [build]
`;

describeRunnable('docker jobs on Nomad, run by the stand-in client with Podman', () => {
  let nomad: NomadStandIn;
  let g: TestGyre;
  const dir = mkdtempSync(join(tmpdir(), 'gyre-nomad-docker-'));

  beforeAll(async () => {
    await imageBuilt();
    nomad = await startNomadStandIn({ client: 'podman' });
    // The distribution's own template. The test's Gyre listens on this host's loopback only, so the
    // agent shares the host's network here; on a real client it reaches GYRE_URL from Nomad's
    // default bridge network.
    const template = nomadAgentJobTemplate(IMAGE) as { Job: any };
    template.Job.TaskGroups[0].Tasks[0].Config.network_mode = 'host';
    writeFileSync(join(dir, 'task-agent.json'), JSON.stringify(template));
    g = await startTestGyre({
      env: {
        NOMAD_ADDR: nomad.url,
        GYRE_AGENT_IMAGE: IMAGE,
        GYRE_NOMAD_JOB_TEMPLATE: join(dir, 'task-agent.json'),
        GYRE_NOMAD_DOCKER_SOCKET: socket!,
      },
    });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/nomad-docker', cpu: 1, memory_mb: MEMORY_MB, driver: 'nomad' });
  }, 16 * 60_000);
  afterAll(async () => {
    await g?.stop();
    await nomad?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const output = async (project: string, job: number, step: number) => {
    const res = await fetch(`${g.url}/api/v2/project/gh/acme/${project}/job/${job}/output?node_index=0&step=${step}`, { headers: { 'Circle-Token': g.token } });
    return res.text();
  };

  it('runs the job in its image with a service, within the class limits, and no step reaches the engine; a missing image fails naming it', async () => {
    await g.addProject('acme/onnomad', { '.circleci/config.yml': pipeline(BUSYBOX_IMAGE) });
    await g.addProject('acme/missing', { '.circleci/config.yml': pipeline('localhost/gyre-no-such-image:1') });
    const [ok, missing] = await Promise.all([g.trigger('acme/onnomad'), g.trigger('acme/missing')]);
    const [{ jobs }, { jobs: failedJobs }] = await Promise.all([g.waitForPipeline(ok.id, 50_000), g.waitForPipeline(missing.id, 50_000)]);

    // The job image's own /etc/passwd (two lines), not the agent image's.
    expect(await output('onnomad', jobs.build.job_number, 0)).toBe('2\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n');
    expect(await output('onnomad', jobs.build.job_number, 1)).toBe('served-by-service\n');
    expect(await output('onnomad', jobs.build.job_number, 2)).toBe(`memory ${MEMORY_MB * 1024 * 1024}\ncpu 100000\n`);
    // The attack: a step finds no socket of any engine anywhere, and not the agent's token.
    expect(await output('onnomad', jobs.build.job_number, 3)).toBe('sockets: 0\ntoken: 0\n');
    expect(jobs.build.status).toBe('success');

    expect(failedJobs.build.status).toBe('failed');
    expect(await output('missing', failedJobs.build.job_number, 0)).toMatch(/environment could not be made: .*localhost\/gyre-no-such-image:1/);

    // The jobs as Nomad received them: the class's resources, the client's engine for the agent.
    expect(nomad.registered).toHaveLength(2);
    for (const job of nomad.registered) {
      const task = job.TaskGroups[0].Tasks[0];
      expect(task).toMatchObject({
        User: 'root',
        Config: { image: IMAGE, args: ['agent'], network_mode: 'host', mount: [{ type: 'bind', source: socket, target: '/var/run/docker.sock', readonly: false }] },
        Env: { GYRE_DOCKER_SOCKET: '/var/run/docker.sock' },
        Resources: { CPU: 1000, MemoryMB: MEMORY_MB },
      });
    }
    expect(nomad.configErrors).toEqual([]);
    if (nomad.schemaChecked) expect(nomad.schemaErrors).toEqual([]);
    // Both agents reported and exited 0: their allocations completed (followed past the purge
    // that comes once an agent reported).
    const allocations = nomad.allAllocations;
    expect(allocations).toHaveLength(2);
    for (let i = 0; i < 100 && allocations.some((a) => a.ClientStatus === 'running'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(allocations.map((a) => a.ClientStatus)).toEqual(['complete', 'complete']);
  }, 60_000);
});

test('GYRE_NOMAD_DOCKER_SOCKET names the clients\' engine socket; `none` keeps docker jobs in the agent\'s container; anything else stops start-up', () => {
  expect(readSettings({}).nomadEngineSocket).toBe('/var/run/docker.sock');
  expect(readSettings({ GYRE_NOMAD_DOCKER_SOCKET: '/run/podman/podman.sock' }).nomadEngineSocket).toBe('/run/podman/podman.sock');
  expect(readSettings({ GYRE_NOMAD_DOCKER_SOCKET: 'none' }).nomadEngineSocket).toBeUndefined();
  expect(() => readSettings({ GYRE_NOMAD_DOCKER_SOCKET: 'docker.sock' })).toThrow("GYRE_NOMAD_DOCKER_SOCKET: 'docker.sock' must be an absolute path on the Nomad clients, or none");
});

describe('the stand-in Nomad client checks the docker driver config as Nomad does', () => {
  it('fails an allocation whose config has a key the docker driver does not define', async () => {
    const nomad = await startNomadStandIn({ client: 'podman' });
    try {
      const job = {
        ID: 'misspelt',
        Name: 'misspelt',
        Type: 'batch',
        Datacenters: ['default'],
        TaskGroups: [{ Name: 'task', Count: 1, Tasks: [{ Name: 'agent', Driver: 'docker', Config: { image: BUSYBOX_IMAGE, volume: ['/var/run/docker.sock:/var/run/docker.sock'], args: 'agent' } }] }],
      };
      const res = await fetch(`${nomad.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ Job: job }) });
      expect(res.status).toBe(200);
      let alloc = nomad.allocations[0];
      for (let i = 0; i < 50 && alloc.ClientStatus === 'pending'; i++) await new Promise((r) => setTimeout(r, 20));
      alloc = nomad.allocations[0];
      expect(alloc.ClientStatus).toBe('failed');
      const [event] = alloc.TaskStates!.agent.Events;
      expect(event.Type).toBe('Failed Validation');
      expect(event.DisplayMessage).toContain('No argument or block type is named "volume".');
      expect(event.DisplayMessage).toContain('Inappropriate value for attribute "args": list of string required.');
    } finally {
      await nomad.close();
    }
  });

  (socket ? it : it.skip)('refuses the engine socket mount on a client whose docker plugin does not enable volumes', async () => {
    const nomad = await startNomadStandIn({ client: 'podman', dockerPlugin: { volumesEnabled: false } });
    try {
      const mount = [{ type: 'bind', source: '/var/run/docker.sock', target: '/var/run/docker.sock', readonly: false }];
      const job = { ID: 'no-volumes', Name: 'no-volumes', Type: 'batch', Datacenters: ['default'], TaskGroups: [{ Name: 'task', Count: 1, Tasks: [{ Name: 'agent', Driver: 'docker', Config: { image: BUSYBOX_IMAGE, mount } }] }] };
      expect((await fetch(`${nomad.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ Job: job }) })).status).toBe(200);
      for (let i = 0; i < 100 && nomad.allocations[0].ClientStatus === 'pending'; i++) await new Promise((r) => setTimeout(r, 20));
      expect(nomad.allocations[0].ClientStatus).toBe('failed');
      expect(nomad.allocations[0].TaskStates!.agent.Events[0].DisplayMessage).toBe('failed to create container: volumes are not enabled; cannot mount host path: "/var/run/docker.sock"');
    } finally {
      await nomad.close();
    }
  });
});
