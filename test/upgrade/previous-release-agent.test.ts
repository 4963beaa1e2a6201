import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_API_VERSION } from '../../runtime/domain/agent-api-version';
import { PIPELINE_CONFIG, RESOURCE_CLASS, type Exchange } from '../fixtures/previous-release/capture-agent';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { runnerClass } from '../support/runner-tasks';

const captured = JSON.parse(readFileSync(join(__dirname, '../fixtures/previous-release/agent-requests.json'), 'utf8')) as { release: string; exchanges: Exchange[] };

/** Pairs the strings of a captured answer with this server's, where they differ (ids, tokens). */
function learn(was: unknown, now: unknown, ids: Map<string, string>): void {
  if (typeof was === 'string' && typeof now === 'string') {
    if (was !== now) ids.set(was, now);
  } else if (Array.isArray(was) && Array.isArray(now)) {
    was.forEach((w, i) => learn(w, now[i], ids));
  } else if (was && now && typeof was === 'object' && typeof now === 'object') {
    for (const key of Object.keys(was)) learn((was as Record<string, unknown>)[key], (now as Record<string, unknown>)[key], ids);
  }
}

function replace(text: string, ids: Map<string, string>): string {
  let out = text;
  for (const [was, now] of ids) out = out.split(was).join(now);
  return out;
}

const json = (buffer: Buffer) => {
  try {
    return JSON.parse(buffer.toString('utf8'));
  } catch {
    return undefined;
  }
};

/**
 * The agent API serves the previous release's agents and runners: what `gyre runner` of
 * that release sent (test/fixtures/previous-release/agent-requests.json, captured by
 * capture-agent.ts) is replayed, byte for byte but for ids and tokens, against this build, which
 * must answer each call as it did then and run the pipeline to the end.
 */
describe(`agents and runners of the previous release (${captured.release})`, () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_RUNNER_SLOTS: '0' } });
  });
  afterAll(() => g.stop());

  it('claim, run and finish a pipeline with every kind of agent call, answered as then', async () => {
    const token = await runnerClass(g, RESOURCE_CLASS);
    await g.addProject('gh/prev/agent', { '.circleci/config.yml': PIPELINE_CONFIG });
    const pipeline = await g.trigger('gh/prev/agent', { branch: 'main' });
    const ids = new Map<string, string>();
    const firstClaim = captured.exchanges.find((e) => e.path === '/api/v2/agent/claim')!;
    ids.set(firstClaim.headers.authorization.replace(/^Bearer /, ''), token);

    const answered: string[] = [];
    for (const e of captured.exchanges) {
      // The previous release sent no version header: it is the one these calls test.
      expect(e.headers['x-gyre-agent-version']).toBeUndefined();
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(e.headers)) if (name !== 'content-length') headers[name] = replace(value, ids);
      const sent = Buffer.from(e.body, 'base64');
      const body = /json/.test(e.headers['content-type'] ?? '') ? replace(sent.toString('utf8'), ids) : sent;
      const res = await fetch(`${g.url}${replace(e.path, ids)}`, { method: e.method, headers, body: e.method === 'GET' ? undefined : body });
      const got = Buffer.from(await res.arrayBuffer());
      const then = Buffer.from(e.response, 'base64');
      answered.push(`${e.method} ${e.path.replace(/[0-9a-f-]{36}/g, '…')} → ${res.status}${res.status === e.status ? '' : ` (was ${e.status}: ${got.toString('utf8').slice(0, 200)})`}`);
      if (res.headers.get('x-gyre-agent-version') !== String(AGENT_API_VERSION)) answered.push(`${e.method} ${e.path} lacks the version header`);
      const wasJson = json(then);
      if (wasJson !== undefined) learn(wasJson, json(got), ids);
      else expect(got.equals(then)).toBe(true);
    }
    expect(answered.filter((a) => a.includes('(was') || a.includes('lacks'))).toEqual([]);

    // THEN the pipeline ran to the end on this server as it did on its own
    const workflows = (await g.api('GET', `/api/v2/pipeline/${pipeline.id}/workflow`)).items;
    expect(workflows.map((w: { status: string }) => w.status)).toEqual(['success']);
    const jobs = (await g.api('GET', `/api/v2/workflow/${workflows[0].id}/job`)).items as { name: string; job_number: number; status: string }[];
    expect(jobs.map((j) => `${j.name}:${j.status}`).sort()).toEqual(['build:success', 'deploy:success']);
    const deploy = jobs.find((j) => j.name === 'deploy')!;
    const output = await g.raw('GET', `/api/v2/project/gh/prev/agent/job/${deploy.job_number}/output?step=1`);
    expect(output.text).toBe('built\n');
  });

  it('refuses an agent API version it does not serve, naming the ones it does, and takes its own', async () => {
    const token = await runnerClass(g, 'prev/versions');
    const claim = (version?: string) =>
      fetch(`${g.url}/api/v2/agent/claim`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(version ? { 'X-Gyre-Agent-Version': version } : {}) },
        body: JSON.stringify({ wait_ms: 0 }),
      });
    const future = await claim(String(AGENT_API_VERSION + 1));
    expect(future.status).toBe(400);
    expect(((await future.json()) as { message: string }).message).toMatch(new RegExp(`agent API version ${AGENT_API_VERSION + 1} is not served here \\(this server serves 1 and 2\\): upgrade the server`));
    expect((await claim('two')).status).toBe(400);
    expect((await claim(String(AGENT_API_VERSION))).status).toBe(204);
    expect((await claim()).status).toBe(204);
  });
});
