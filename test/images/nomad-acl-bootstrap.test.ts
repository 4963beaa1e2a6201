import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { promisify } from 'node:util';
import { ACL_BOOTSTRAP_SCRIPT, SCHEDULER_POLICY_RULES } from '../../constructs/kubernetes/nomad-acl';

/**
 * images/nomad-acl-bootstrap.js against stand-ins of the two HTTP APIs it uses: Nomad's ACL
 * endpoints (as its API documentation describes them) and the Kubernetes core/v1 Secrets API.
 */
const run = promisify(execFile);

interface Stand {
  server: Server;
  url: string;
}

async function listen(handler: (req: IncomingMessage, body: any, res: ServerResponse) => void): Promise<Stand> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => handler(req, chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as any).port}` };
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
};

/** A Nomad whose ACL state lives in memory: bootstrap once, policies, tokens. */
function fakeNomad(state: { bootstrapped?: string; policies: Map<string, any>; tokens: Map<string, any>; leaderAfter: number }) {
  let polls = 0;
  let issued = 0;
  return (req: IncomingMessage, body: any, res: ServerResponse) => {
    const token = req.headers['x-nomad-token'] as string | undefined;
    const url = req.url!;
    if (url === '/v1/status/leader') return json(res, 200, ++polls > state.leaderAfter ? '"10.0.0.1:4647"' : '""');
    if (url === '/v1/acl/bootstrap' && req.method === 'POST') {
      if (state.bootstrapped) return json(res, 400, 'ACL bootstrap already done (reset index: 7)');
      state.bootstrapped = body.BootstrapSecret;
      state.tokens.set(body.BootstrapSecret, { Type: 'management', Policies: [] });
      return json(res, 200, { SecretID: body.BootstrapSecret });
    }
    const caller = token ? state.tokens.get(token) : undefined;
    if (!caller) return json(res, 403, 'Permission denied');
    if (url === '/v1/acl/token/self') return json(res, 200, caller);
    if (caller.Type !== 'management') return json(res, 403, 'Permission denied');
    const policy = /^\/v1\/acl\/policy\/([\w-]+)$/.exec(url);
    if (policy && req.method === 'POST') {
      state.policies.set(policy[1], body);
      return json(res, 200, {});
    }
    if (url === '/v1/acl/token' && req.method === 'POST') {
      if (body.Policies.some((p: string) => !state.policies.has(p))) return json(res, 400, 'policy not found');
      issued += 1;
      const secret = `secret-${issued}`;
      state.tokens.set(secret, { Type: body.Type, Policies: body.Policies, Name: body.Name });
      return json(res, 200, { SecretID: secret, AccessorID: `accessor-${issued}` });
    }
    return json(res, 404, 'not found');
  };
}

/** The Secrets of one namespace, behind the service account's bearer token. */
function fakeKubernetes(secrets: Map<string, any>) {
  let version = 1;
  return (req: IncomingMessage, body: any, res: ServerResponse) => {
    if (req.headers.authorization !== 'Bearer sa-token') return json(res, 401, { message: 'Unauthorized' });
    const one = /^\/api\/v1\/namespaces\/gyre\/secrets\/([\w-]+)$/.exec(req.url!);
    if (one && req.method === 'GET') return secrets.has(one[1]) ? json(res, 200, secrets.get(one[1])) : json(res, 404, { reason: 'NotFound' });
    if (one && req.method === 'PUT') {
      if (body.metadata.resourceVersion !== secrets.get(one[1])?.metadata.resourceVersion) return json(res, 409, { reason: 'Conflict' });
      secrets.set(one[1], { ...body, metadata: { ...body.metadata, resourceVersion: String(++version) } });
      return json(res, 200, secrets.get(one[1]));
    }
    if (req.url === '/api/v1/namespaces/gyre/secrets' && req.method === 'POST') {
      if (secrets.has(body.metadata.name)) return json(res, 409, { reason: 'AlreadyExists' });
      secrets.set(body.metadata.name, { ...body, metadata: { ...body.metadata, resourceVersion: String(++version) } });
      return json(res, 201, secrets.get(body.metadata.name));
    }
    return json(res, 404, { reason: 'NotFound' });
  };
}

describe('Nomad ACL bootstrap script', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-acl-'));
  fs.writeFileSync(path.join(dir, 'token'), 'sa-token\n');
  fs.writeFileSync(path.join(dir, 'policies.json'), JSON.stringify([
    { name: 'gyre-scheduler', description: 'scheduler', rules: SCHEDULER_POLICY_RULES, secret: 'gyre-nomad-scheduler-token' },
    { name: 'nomad-autoscaler', description: 'autoscaler', rules: 'node { policy = "write" }', secret: 'nomad-autoscaler-token' },
  ]));
  const stands: Stand[] = [];
  afterAll(() => stands.forEach((s) => s.server.close()));

  const runScript = async (nomad: Stand, kube: Stand, managementToken = 'operator-management-token') => run(process.execPath, [ACL_BOOTSTRAP_SCRIPT], {
    env: {
      PATH: process.env.PATH, NOMAD_ADDR: nomad.url, NOMAD_BOOTSTRAP_TOKEN: managementToken, POD_NAMESPACE: 'gyre',
      POLICIES_FILE: path.join(dir, 'policies.json'), KUBERNETES_API_URL: kube.url, KUBERNETES_TOKEN_FILE: path.join(dir, 'token'),
    },
    timeout: 30_000,
  });

  test('bootstraps with the operator token, writes each policy, and hands each component a token of its policy only', async () => {
    const state = { policies: new Map(), tokens: new Map(), leaderAfter: 1 } as any;
    const secrets = new Map<string, any>();
    const nomad = await listen(fakeNomad(state));
    const kube = await listen(fakeKubernetes(secrets));
    stands.push(nomad, kube);

    const first = await runScript(nomad, kube);
    expect(first.stdout).toContain('ACLs bootstrapped with the operator management token');
    expect(state.bootstrapped).toBe('operator-management-token');
    expect([...state.policies.keys()]).toEqual(['gyre-scheduler', 'nomad-autoscaler']);
    expect(state.policies.get('gyre-scheduler').Rules).toBe(SCHEDULER_POLICY_RULES);
    for (const [secret, policy] of [['gyre-nomad-scheduler-token', 'gyre-scheduler'], ['nomad-autoscaler-token', 'nomad-autoscaler']]) {
      const stored = Buffer.from(secrets.get(secret).data.token, 'base64').toString();
      expect(state.tokens.get(stored)).toMatchObject({ Type: 'client', Policies: [policy] });
    }

    // Again: nothing changes, the stored tokens still work.
    const tokensBefore = state.tokens.size;
    const again = await runScript(nomad, kube);
    expect(again.stdout).toContain('ACLs already bootstrapped with the operator management token');
    expect(again.stdout).toContain('Secret gyre-nomad-scheduler-token already holds a working gyre-scheduler token');
    expect(state.tokens.size).toBe(tokensBefore);

    // A token Nomad no longer knows (its state was lost) is replaced in place.
    const lost = Buffer.from(secrets.get('gyre-nomad-scheduler-token').data.token, 'base64').toString();
    state.tokens.delete(lost);
    await runScript(nomad, kube);
    const replaced = Buffer.from(secrets.get('gyre-nomad-scheduler-token').data.token, 'base64').toString();
    expect(replaced).not.toBe(lost);
    expect(state.tokens.get(replaced)).toMatchObject({ Policies: ['gyre-scheduler'] });
  }, 60_000);

  test('refuses a cluster bootstrapped with another token, and says what to do', async () => {
    const state = { bootstrapped: 'someone-else', policies: new Map(), tokens: new Map([['someone-else', { Type: 'management' }]]), leaderAfter: 0 } as any;
    const nomad = await listen(fakeNomad(state));
    const kube = await listen(fakeKubernetes(new Map()));
    stands.push(nomad, kube);
    await expect(runScript(nomad, kube)).rejects.toThrow(/ACLs were bootstrapped with another token; put that management token in the nomad-acl-bootstrap Secret/);
  }, 60_000);

  test('holds no Terraform interpolation sequences (it travels in a ConfigMap)', () => {
    expect(fs.readFileSync(ACL_BOOTSTRAP_SCRIPT, 'utf8')).not.toMatch(/\$\{|%\{/);
  });
});
