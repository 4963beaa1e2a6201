import { createServer } from 'node:net';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { githubResponseCheck, startGitHubStandIn, type GitHubStandIn } from '../support/github-standin';

/**
 * "Sign in with GitHub" as a user goes through it, against a GitHub Enterprise stand-in whose
 * answers are checked against GitHub's OpenAPI description: the button, GitHub, back to Gyre signed
 * in, with project roles that follow the person's repository permission at once (GYRE_GITHUB_TOKEN)
 * and that a role given in Gyre is never overwritten by.
 */

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });

const sessionOf = (res: Response) => res.headers.getSetCookie().find((c) => c.startsWith('gyre_session='))?.split(';')[0];
const stateOf = (res: Response) => res.headers.getSetCookie().find((c) => c.startsWith('gyre_sign_in='))?.split(';')[0];

describe('GitHub sign-in through Gyre', () => {
  let g: TestGyre;
  let gh: GitHubStandIn;

  beforeAll(async () => {
    gh = await startGitHubStandIn({
      accounts: [
        { id: 583231, login: 'octocat', name: 'The Octocat', email: 'octocat@github.example' },
        { id: 9001, login: 'hubot', name: 'Hubot', email: null, emails: [{ email: 'hubot@github.example', primary: true, verified: true }] },
      ],
    });
    gh.addRepository('acme/web');
    gh.addRepository('acme/api');
    gh.grant('acme/web', 'octocat', 'maintain');
    gh.grant('acme/api', 'octocat', 'read');
    const port = await freePort();
    g = await startTestGyre({
      env: {
        GYRE_PORT: String(port),
        GYRE_PUBLIC_URL: `http://127.0.0.1:${port}`,
        GYRE_GITHUB_CLIENT_ID: gh.clientId,
        GYRE_GITHUB_CLIENT_SECRET: gh.clientSecret,
        GYRE_GITHUB_URL: gh.url,
        GYRE_GITHUB_TOKEN: gh.serverToken,
      },
    });
    await g.addProject('gh/acme/web', { 'README.md': 'x' });
    await g.addProject('gh/acme/api', { 'README.md': 'x' });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await gh?.stop();
  });

  /** The whole round trip a browser makes; answers Gyre's last response. */
  const signInWithGitHub = async (login: string) => {
    gh.signInAs(login);
    const start = await fetch(`${g.url}/auth/github/start`, { redirect: 'manual' });
    expect(start.status).toBe(302);
    const state = stateOf(start)!;
    const atGitHub = await fetch(start.headers.get('location')!, { redirect: 'manual' });
    expect(atGitHub.status).toBe(302);
    return fetch(atGitHub.headers.get('location')!, { redirect: 'manual', headers: { Cookie: state } });
  };
  const projectRole = async (slug: string, login: string) => (await g.api('GET', `/api/v2/project/${slug}/members`)).items.find((m: any) => m.login === login)?.role;

  it('signs Octocat in, and their project roles follow their repository permission', async () => {
    const back = await signInWithGitHub('octocat');
    expect(back.status).toBe(302);
    expect(back.headers.get('location')).toBe('/#/');
    const cookie = sessionOf(back);
    const me = (await (await fetch(`${g.url}/api/v2/me`, { headers: { Cookie: cookie! } })).json()) as any;
    expect(me).toMatchObject({ login: 'octocat', name: 'The Octocat' });
    expect(await projectRole('gh/acme/web', 'octocat')).toBe('write');
    expect(await projectRole('gh/acme/api', 'octocat')).toBe('read');
    // Octocat can now see gh/acme/web's pipelines with the session, and nothing they were not given.
    expect((await fetch(`${g.url}/api/v2/project/gh/acme/web/pipeline`, { headers: { Cookie: cookie! } })).status).toBe(200);
    // Every answer the stand-in gave Gyre is one GitHub's API description allows.
    expect(gh.sent.length).toBeGreaterThan(0);
    for (const answer of gh.sent) expect({ operation: answer.operation, problems: githubResponseCheck(answer.operation, answer.status)?.(answer.body) }).toEqual({ operation: answer.operation, problems: [] });
  });

  it('a permission taken away at GitHub is taken away at the next sign-in; a role given in Gyre stays', async () => {
    gh.revoke('acme/api', 'octocat');
    await g.api('PUT', '/api/v2/project/gh/acme/web/members/octocat', { role: 'admin' });
    gh.grant('acme/web', 'octocat', 'read');
    await signInWithGitHub('octocat');
    expect(await projectRole('gh/acme/api', 'octocat')).toBeUndefined();
    expect(await projectRole('gh/acme/web', 'octocat')).toBe('admin');
  });

  it('a GitHub account with a login a Gyre user already has becomes a user of its own', async () => {
    await g.api('POST', '/api/v2/users', { login: 'hubot', admin: true });
    const back = await signInWithGitHub('hubot');
    const me = (await (await fetch(`${g.url}/api/v2/me`, { headers: { Cookie: sessionOf(back)! } })).json()) as any;
    expect(me.login).toBe('hubot-github');
    // Its primary verified address, from /user/emails since /user had none.
    expect((await g.api('GET', '/api/v2/users/hubot-github')).email).toBe('hubot@github.example');
    const audit = await (await fetch(`${g.url}/api/v2/audit?limit=5`, { headers: { Cookie: sessionOf(back)! } })).json();
    expect((audit as any).message).toMatch(/instance:admin/);
  });

  it('GitHub refusing the sign-in sends the browser to the sign-in page with the reason', async () => {
    gh.denyNext();
    const back = await signInWithGitHub('octocat');
    expect(back.headers.get('location')).toMatch(/^\/login#error=/);
    expect(sessionOf(back)).toBeUndefined();
  });
});
