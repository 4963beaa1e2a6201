import type { DockerImage } from '../config/plan';

/**
 * `$NAME` and `${NAME}` in a docker image's `auth` and `aws_auth` (CircleCI's way of keeping a
 * registry password out of the config): the plan, the job spec and the config endpoint keep the
 * reference, and the agent holding the lease expands it from the task's secrets (its project's
 * variables, its contexts' and its OIDC tokens) just before it pulls.
 *
 * A value is a reference only when it is one whole: `$DOCKER_PASS` or `${DOCKER_PASS}`. Anything
 * else is used as written, so a plaintext password in the config (which CircleCI allows) keeps
 * working even when it holds a `$`.
 */

const REFERENCE = /^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$/;

/** The variable a credential value names, or undefined when it is a value as written. */
export function credentialReference(value: string): string | undefined {
  const m = REFERENCE.exec(value);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** A reference that names no variable the task has. The message names the variable, the field and the image; it never holds a value. */
export class MissingCredentialVariableError extends Error {
  constructor(
    readonly variable: string,
    readonly field: string,
    readonly image: string,
  ) {
    super(
      `cannot pull ${image}: ${field} is $${variable}, and this job has no variable ${variable} ` +
        '(set it as a project environment variable or in a context the job names; pipelines of forked pull requests get none unless the project allows it)',
    );
    this.name = 'MissingCredentialVariableError';
  }
}

/**
 * The image with every reference in its `auth` and `aws_auth` replaced by the value of the
 * variable it names in `env`. Throws MissingCredentialVariableError for a name `env` lacks.
 */
export function expandImageCredentials(image: DockerImage, env: Readonly<Record<string, string>>): DockerImage {
  if (!image.auth && !image.awsAuth) return image;
  const expand = (value: string, field: string): string => {
    const name = credentialReference(value);
    if (name === undefined) return value;
    // Own properties only: `$constructor` names no variable.
    const found = Object.prototype.hasOwnProperty.call(env, name) ? env[name] : undefined;
    if (typeof found !== 'string') throw new MissingCredentialVariableError(name, field, image.image);
    return found;
  };
  return {
    ...image,
    ...(image.auth ? { auth: { username: expand(image.auth.username, 'auth.username'), password: expand(image.auth.password, 'auth.password') } } : {}),
    ...(image.awsAuth ? { awsAuth: Object.fromEntries(Object.entries(image.awsAuth).map(([key, value]) => [key, expand(value, `aws_auth.${key}`)])) } : {}),
  };
}
