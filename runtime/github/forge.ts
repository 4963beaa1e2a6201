import { NotFoundError } from '../domain/errors';
import type { Forge, Revision } from '../forge/forge';
import type { GitHubApp, RepositoryName } from './app';

/**
 * The forge with a GitHub App: a repository on the app's GitHub that the app is installed on is
 * read through the REST API as its installation (private ones too, with no clone on Gyre's disk:
 * a config is one `contents` call at the commit, which also finds a fork's commits through the
 * pull request's ref). Any other repository (a local path, another host, a public repository the
 * app is not installed on) is read by `fallback`, the plain git forge.
 */
export function createGitHubForge({ app, fallback }: { app: GitHubApp; fallback: Forge }): Forge {
  /** The repository and its installation's client, when the app reads it; undefined hands it to the fallback. */
  const viaApp = async (repoUrl: string) => {
    const repo = app.repositoryOf(repoUrl);
    if (!repo) return undefined;
    const octokit = await app.octokitFor(repo);
    return octokit ? { repo, octokit } : undefined;
  };
  const status = (error: unknown) => (error as { status?: number }).status;

  return {
    async defaultBranch(repoUrl) {
      const at = await viaApp(repoUrl);
      if (!at) return fallback.defaultBranch(repoUrl);
      const { data } = await at.octokit.rest.repos.get({ ...at.repo });
      return data.default_branch;
    },

    async resolve(repoUrl, ref) {
      const at = await viaApp(repoUrl);
      if (!at) return fallback.resolve(repoUrl, ref);
      const { octokit, repo } = at;
      if (ref.branch) {
        try {
          const { data } = await octokit.rest.repos.getBranch({ ...repo, branch: ref.branch });
          return { sha: data.commit.sha, subject: firstLine(data.commit.commit.message) };
        } catch (error) {
          if (status(error) === 404) throw new NotFoundError('branch', ref.branch);
          throw error;
        }
      }
      if (!ref.tag) throw new NotFoundError('branch', '');
      return resolveTag(octokit, repo, ref.tag);
    },

    async readFile(repoUrl, sha, path) {
      const at = await viaApp(repoUrl);
      if (!at) return fallback.readFile(repoUrl, sha, path);
      try {
        // The raw media type: the file's bytes as they are, up to 100 MB (the JSON form stops at 1 MB).
        const { data } = await at.octokit.rest.repos.getContent({ ...at.repo, path, ref: sha, mediaType: { format: 'raw' } });
        return typeof data === 'string' ? data : undefined;
      } catch (error) {
        if (status(error) === 404) return undefined;
        throw error;
      }
    },

    async locate(org, name) {
      const described = await app.repository({ owner: org, repo: name });
      if (described) return described.cloneUrl;
      return fallback.locate?.(org, name);
    },
  };
}

type Octokit = NonNullable<Awaited<ReturnType<GitHubApp['octokitFor']>>>;

/** A tag's commit: the ref, through annotated tags (a tag of a tag too), to the commit and its subject. */
async function resolveTag(octokit: Octokit, repo: RepositoryName, tag: string): Promise<Revision> {
  let object: { type: string; sha: string };
  try {
    object = (await octokit.rest.git.getRef({ ...repo, ref: `tags/${tag}` })).data.object;
  } catch (error) {
    if ((error as { status?: number }).status === 404) throw new NotFoundError('tag', tag);
    throw error;
  }
  for (let depth = 0; object.type === 'tag' && depth < 8; depth++) {
    object = (await octokit.rest.git.getTag({ ...repo, tag_sha: object.sha })).data.object;
  }
  if (object.type !== 'commit') throw new NotFoundError('tag', tag);
  const { data } = await octokit.rest.git.getCommit({ ...repo, commit_sha: object.sha });
  return { sha: data.sha, subject: firstLine(data.message) };
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? '';
}
