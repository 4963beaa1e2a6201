import { execFileSync } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nomadAgentJobTemplate } from '../../constructs/kubernetes/control-plane';
import { startNomadStandIn, type NomadStandIn } from '../support/nomad-stand-in';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
function makeCertificates(dir: string) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test nomad ca');
  writeFileSync(join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:server.global.nomad\n');
  for (const [name, cn] of [['server', 'server.global.nomad'], ['client', 'client.global.nomad']]) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', 'san.cnf');
  }
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { ca: read('ca.pem'), serverCert: read('server.pem'), serverKey: read('server-key.pem') };
}

const config = (command: string) => `version: 2.1
jobs:
  work:
    machine: true
    resource_class: acme/nomad-large
    steps:
      - run: ${JSON.stringify(command)}
workflows:
  w:
    jobs: [work]
`;

describe('the Nomad driver against a stand-in of the Nomad HTTP API (mTLS and ACL token)', () => {
  let nomad: NomadStandIn;
  let g: TestGyre;
  const dir = mkdtempSync(join(tmpdir(), 'gyre-nomad-'));
  const agentTmp = join(dir, 'agent-tmp');

  beforeAll(async () => {
    const certs = makeCertificates(dir);
    // The agents' temporary directory is their own: what they leave there can be seen.
    // (like /tmp: build uids pass through it to their task directories)
    chmodSync(dir, 0o711);
    mkdirSync(agentTmp);
    chmodSync(agentTmp, 0o1777);
    nomad = await startNomadStandIn({ aclToken: 'nomad-acl-secret', tls: { key: certs.serverKey, cert: certs.serverCert, ca: certs.ca }, baseEnv: { ...process.env, TMPDIR: agentTmp } });
    // The distribution's own job template, as the scheduler receives it in GYRE_NOMAD_JOB_TEMPLATE.
    writeFileSync(join(dir, 'task-agent.json'), JSON.stringify(nomadAgentJobTemplate('registry.local/gyre/agent:test')));
    g = await startTestGyre({
      env: {
        NOMAD_ADDR: nomad.url,
        NOMAD_TOKEN: 'nomad-acl-secret',
        NOMAD_CACERT: join(dir, 'ca.pem'),
        NOMAD_CLIENT_CERT: join(dir, 'client.pem'),
        NOMAD_CLIENT_KEY: join(dir, 'client-key.pem'),
        GYRE_AGENT_IMAGE: 'registry.local/gyre/agent:test',
        GYRE_NOMAD_JOB_TEMPLATE: join(dir, 'task-agent.json'),
        GYRE_LEASE_TTL_MS: '30000',
      },
    });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/nomad-large', cpu: 2, memory_mb: 4096, driver: 'nomad' });
  });
  afterAll(async () => {
    await g.stop();
    await nomad.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a task as one batch job with the class resources, the agent image and a task token; the job succeeds', async () => {
    await g.addProject('acme/nomad', { '.circleci/config.yml': config('echo "from nomad node $CIRCLE_NODE_INDEX"') });
    const { id } = await g.trigger('acme/nomad');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs.work.status).toBe('success');
    const res = await fetch(`${g.url}/api/v2/project/gh/acme/nomad/job/${jobs.work.job_number}/output?node_index=0&step=0`, { headers: { 'Circle-Token': g.token } });
    expect(await res.text()).toBe('from nomad node 0\n');
    // The agent's process ends and leaves nothing of its own in the temporary directory (its work
    // directory, its step launcher's socket directory, its helper bundle).
    await until('the agent processes to end', async () => !nomad.allocations.some((a) => a.process && a.process.exitCode === null), 30_000);
    expect(readdirSync(agentTmp).filter((name) => name.startsWith('gyre-'))).toEqual([]);
    const [job] = nomad.registered.filter((j) => j.Meta.gyre_resource_class === 'acme/nomad-large');
    expect(job).toMatchObject({ Type: 'batch', ID: expect.stringMatching(/^gyre-task-[0-9a-f-]+-1$/) });
    expect(job.Constraints).toEqual(
      expect.arrayContaining([
        { LTarget: '$${node.class}', Operand: '=', RTarget: 'linux-docker' },
        { LTarget: '${attr.cpu.numcores}', Operand: '>=', RTarget: '2' },
      ]),
    );
    const task = job.TaskGroups[0].Tasks[0];
    expect(task).toMatchObject({ Driver: 'docker', Config: { image: 'registry.local/gyre/agent:test', args: ['agent'] }, Resources: { CPU: 2000, MemoryMB: 4096 } });
    expect(task.Env).toEqual({ GYRE_URL: g.url, GYRE_TASK_TOKEN: expect.stringMatching(/^gyre-task\./) });
    // A `machine` job's agent gets no container engine: no socket mounted, not root.
    expect(task.Config.mount).toBeUndefined();
    expect(task.User).toBeUndefined();
    expect(nomad.requests.every((r) => r.token === 'nomad-acl-secret')).toBe(true);
    expect(nomad.requests.some((r) => /\/allocations\?index=\d+&wait=5s/.test(r.path))).toBe(true);
    // After the agent reported, the job is purged.
    await until('the purge', async () => nomad.requests.some((r) => r.method === 'DELETE' && r.path.includes('purge=true')), 10_000);
  }, 90_000);

  it('stops the Nomad job on cancel; the job ends canceled within seconds (not at the end of its sleep 60)', async () => {
    await g.addProject('acme/nomadcancel', { '.circleci/config.yml': config('echo started; sleep 60; echo never') });
    const { id } = await g.trigger('acme/nomadcancel');
    let workflow: any;
    for (let i = 0; i < 400; i++) {
      [workflow] = (await g.api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
      const running = nomad.allocations.find((a) => a.ClientStatus === 'running');
      const jobs = workflow ? (await g.api('GET', `/api/v2/workflow/${workflow.id}/job`)).items : [];
      if (running && jobs[0]?.job_number) {
        const out = await fetch(`${g.url}/api/v2/project/gh/acme/nomadcancel/job/${jobs[0].job_number}/output?node_index=0&step=0`, { headers: { 'Circle-Token': g.token } });
        if ((await out.text()).includes('started')) break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const asked = Date.now();
    await g.api('POST', `/api/v2/workflow/${workflow.id}/cancel`);
    const { jobs } = await g.waitForPipeline(id, 30_000);
    expect(jobs.work.status).toBe('canceled');
    // About 1 s on an idle machine; the bound leaves room for a loaded one.
    expect(Date.now() - asked).toBeLessThan(10_000);
    expect(nomad.requests.some((r) => r.method === 'DELETE' && !r.path.includes('purge=true'))).toBe(true);
  }, 90_000);

  it('an allocation that fails before the agent reports ends the attempt at once, and the retry runs', async () => {
    nomad.options.failNext = 1;
    await g.addProject('acme/nomadlost', { '.circleci/config.yml': config('echo second attempt') });
    const started = Date.now();
    const { id } = await g.trigger('acme/nomadlost');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs.work.status).toBe('success');
    const [task] = await g.gyre.store.query<{ attempt: number }>(
      `SELECT t.attempt FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN projects p ON p.id = j.project_id WHERE p.slug = 'gh/acme/nomadlost'`,
    );
    expect(task.attempt).toBe(2);
    // Not by waiting out the 30 s lease: the failed allocation ended the attempt.
    expect(Date.now() - started).toBeLessThan(15_000);
  }, 90_000);

  it('the stand-in refuses a wrong ACL token and a caller without a client certificate, as Nomad does', async () => {
    const call = (options: { cert?: boolean; token?: string }) =>
      new Promise<number | string>((resolveCall) => {
        const req = httpsRequest(
          `${nomad.url}/v1/job/x/allocations`,
          {
            ca: readFileSync(join(dir, 'ca.pem')),
            ...(options.cert ? { cert: readFileSync(join(dir, 'client.pem')), key: readFileSync(join(dir, 'client-key.pem')) } : {}),
            headers: options.token ? { 'X-Nomad-Token': options.token } : {},
          },
          (res) => {
            res.resume();
            resolveCall(res.statusCode ?? 0);
          },
        );
        req.on('error', () => resolveCall('tls refused'));
        req.end();
      });
    expect(await call({ cert: true, token: 'nomad-acl-secret' })).toBe(200);
    expect(await call({ cert: true, token: 'wrong' })).toBe(403);
    expect(await call({ cert: false, token: 'nomad-acl-secret' })).toBe('tls refused');
  });
});
