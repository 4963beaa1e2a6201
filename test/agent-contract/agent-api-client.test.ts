import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { AgentAnswerError } from '../../runtime/agent-contract';
import { AgentApiClient } from '../../runtime/agent/agent-api-client';
import { createAgentClient } from '../../runtime/agent/http-reporter';

/**
 * A server that answers each call with the body the test sets: the agent's client checks every
 * answer against the contract and refuses one not of its shape with an error naming the call and
 * the field, instead of failing later on an undefined.
 */
describe("the agent's API client with a server that answers out of contract", () => {
  let server: Server;
  let url: string;
  let answer: { status?: number; body: string; type?: string };
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      seen.push(`${req.method} ${req.url}`);
      req.resume();
      req.on('end', () => {
        res.writeHead(answer.status ?? 200, { 'Content-Type': answer.type ?? 'application/json' });
        res.end(answer.body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
  beforeEach(() => {
    seen.length = 0;
  });

  const token = 'gyre-task.t1.l1.1.sig';
  const client = () => new AgentApiClient({ url, token });
  const json = (value: unknown) => ({ body: JSON.stringify(value) });
  const task = {
    taskId: 't1', nodeIndex: 0, parallelism: 1, jobId: 'j', jobName: 'build', jobNumber: 1, spec: { executor: { kind: 'shell' }, steps: [] },
    workflowId: 'w', workflowName: 'main', pipelineId: 'p', pipelineNumber: 1, projectSlug: 'gh/o/r', projectOrg: 'o', projectName: 'r', repoUrl: '/r', revision: 'abc',
  };

  it('reads a heartbeat answer of the contract', async () => {
    answer = json({ lease_expires_at: '2030-01-01T00:00:00.000Z', cancel_requested: true });
    const beat = await createAgentClient({ url, token }).reporter().heartbeat();
    expect(beat).toEqual({ leaseExpiresAt: new Date('2030-01-01T00:00:00.000Z'), cancelRequested: true });
    expect(seen).toEqual(['POST /api/v2/agent/task/t1/heartbeat']);
  });

  it('refuses a heartbeat answer whose expiry is not a time, naming the path and the field', async () => {
    answer = json({ lease_expires_at: 1234, cancel_requested: false });
    const error = await createAgentClient({ url, token }).reporter().heartbeat().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentAnswerError);
    expect(error).toMatchObject({ call: 'POST /api/v2/agent/task/t1/heartbeat', field: 'lease_expires_at' });
    expect((error as Error).message).toMatch(/^POST \/api\/v2\/agent\/task\/t1\/heartbeat: .*lease_expires_at: expected string, got number 1234/);
    answer = json({ lease_expires_at: 'soon', cancel_requested: false });
    await expect(createAgentClient({ url, token }).reporter().heartbeat()).rejects.toMatchObject({ field: 'lease_expires_at' });
  });

  it('refuses a task without its steps at once, without retrying it as a passing fault', async () => {
    answer = json({ task: { ...task, spec: { executor: { kind: 'shell' } } }, lease_expires_at: '2030-01-01T00:00:00Z', cancel_requested: false });
    await expect(createAgentClient({ url, token }).fetchTask()).rejects.toThrow(/GET \/api\/v2\/agent\/task\/t1: .*task\.spec\.steps: expected required property/);
    expect(seen).toHaveLength(1);
  });

  it('refuses a page a proxy answered with 200 as not JSON', async () => {
    answer = { body: '<html>Service Unavailable</html>', type: 'text/html' };
    await expect(client().cacheExists('deps-v1')).rejects.toThrow("GET /api/v2/agent/task/t1/cache: the server's answer is not what this agent understands: it is not JSON (it begins '<html>Service Unavailable</html>')");
  });

  it('refuses an empty answer where one is needed, and names the element of a list', async () => {
    answer = { body: '' };
    await expect(client().workspaceLayers()).rejects.toThrow(/GET \/api\/v2\/agent\/task\/t1\/workspace\/layers: .*it is empty/);
    answer = json({ items: [{ id: 'a', job_name: 'build' }, { id: 7, job_name: 'test' }] });
    await expect(client().workspaceLayers()).rejects.toMatchObject({ field: 'items[1].id' });
  });

  it('tells a refusal of the secrets apart from secrets of the wrong shape', async () => {
    answer = json({ refused: 'the project passes no secrets to forks' });
    await expect(createAgentClient({ url, token }).reporter().secrets!()).resolves.toEqual({ refused: 'the project passes no secrets to forks' });
    answer = json({ env: { TOKEN: 42 } });
    await expect(createAgentClient({ url, token }).reporter().secrets!()).rejects.toMatchObject({ call: 'GET /api/v2/agent/task/t1/secrets', field: 'env.TOKEN' });
  });

  it('refuses a cache the file steps could not name', async () => {
    answer = json({ cache: { id: 'c1', key: 'deps-v1' } });
    await expect(createAgentClient({ url, token }).output().findCache(task as never, ['deps-v1'])).rejects.toThrow(/POST \/api\/v2\/agent\/task\/t1\/cache\/find: .*cache/);
  });

  it('refuses a claim answer without a task token', async () => {
    answer = json({ lease_expires_at: '2030-01-01T00:00:00Z', task });
    await expect(new AgentApiClient({ url, token: 'runner-token' }).claim({ runner_id: 'r1', wait_ms: 0 })).rejects.toMatchObject({ call: 'POST /api/v2/agent/claim', field: 'token' });
  });
});

describe('the answer schemas', () => {
  it('can all be checked by the agent (no schema kind its checker does not know)', async () => {
    const wire = await import('../../runtime/agent-contract/wire');
    const { checkAnswer } = await import('../../runtime/agent-contract/validate');
    const answers = Object.entries(wire).filter(([name]) => name.endsWith('Answer'));
    expect(answers.length).toBeGreaterThan(10);
    for (const [name, schema] of answers) {
      expect(() => checkAnswer(schema as never, { not: 'an answer' }, name)).toThrow(AgentAnswerError);
    }
  });
});
