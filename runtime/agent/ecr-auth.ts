import { ECRClient, GetAuthorizationTokenCommand } from '@aws-sdk/client-ecr';
import { AssumeRoleWithWebIdentityCommand, STSClient } from '@aws-sdk/client-sts';

/**
 * Registry credentials for an Amazon ECR image from a job's `aws_auth`: ECR's
 * GetAuthorizationToken, through the AWS SDK (which signs it), answers with a password for the
 * user `AWS`. It is signed with the job's keys (CircleCI's `aws_access_key_id` and
 * `aws_secret_access_key`), or with a role the job assumes with its OIDC token (`oidc_role_arn`:
 * STS AssumeRoleWithWebIdentity with CIRCLE_OIDC_TOKEN, whose audience is the organisation id, so
 * the role's trust policy names Gyre's issuer for the organisation). Never with the agent's own
 * credentials (its environment, its instance role).
 */
export interface EcrCredentialsOptions {
  /** The image's registry host, `<account>.dkr.ecr.<region>.amazonaws.com`. */
  readonly registry: string;
  /** The image's `aws_auth`, references already expanded (runtime/agent/image-credentials.ts). */
  readonly awsAuth: Readonly<Record<string, string>>;
  /** The ECR API endpoint. @default - the SDK's endpoint for the registry's region (https://api.ecr.<region>.amazonaws.com, .com.cn in China) */
  readonly endpoint?: string;
  /** The job's CIRCLE_OIDC_TOKEN, which `oidc_role_arn` needs. @default - none: aws_auth with oidc_role_arn is refused */
  readonly webIdentityToken?: string;
  /** The STS API endpoint for `oidc_role_arn`. @default - the SDK's endpoint for the registry's region (https://sts.<region>.amazonaws.com) */
  readonly stsEndpoint?: string;
  /** The role session's name (AWS's `[\w+=,.@-]`, 2 to 64 characters; CloudTrail shows it). @default gyre-job */
  readonly sessionName?: string;
}

/** The region of an ECR registry host, or undefined when the host is not ECR's. */
export function ecrRegion(registry: string): string | undefined {
  return /^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/.exec(registry)?.[1];
}

interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

const REQUEST_HANDLER = { connectionTimeout: 10_000, requestTimeout: 30_000 };

/** A failed SDK call as one line: what was asked, the HTTP status, the service's message. */
function callFailed(what: string, error: unknown): Error {
  const e = error as Error & { $metadata?: { httpStatusCode?: number } };
  return new Error(`${what} → ${e.$metadata?.httpStatusCode ?? 'no answer'}: ${e.message}`);
}

/** Temporary credentials of the role, for the job's OIDC token (the call is unsigned: the token is the proof). */
async function assumeRole(region: string, roleArn: string, options: EcrCredentialsOptions): Promise<AwsCredentials> {
  const token = options.webIdentityToken;
  if (!token) throw new Error(`aws_auth with oidc_role_arn needs the job's OIDC token (CIRCLE_OIDC_TOKEN), and this job has none`);
  const client = new STSClient({
    region,
    endpoint: options.stsEndpoint,
    // AssumeRoleWithWebIdentity is not signed; were the SDK ever to want keys, it gets none rather than the agent's.
    credentials: () => Promise.reject(new Error('AssumeRoleWithWebIdentity is not signed')),
    maxAttempts: 3,
    requestHandler: REQUEST_HANDLER,
  });
  let answer;
  try {
    answer = await client.send(new AssumeRoleWithWebIdentityCommand({ RoleArn: roleArn, RoleSessionName: options.sessionName ?? 'gyre-job', WebIdentityToken: token, DurationSeconds: 900 }));
  } catch (error) {
    throw callFailed(`STS AssumeRoleWithWebIdentity for ${roleArn}`, error);
  } finally {
    client.destroy();
  }
  const c = answer.Credentials;
  if (!c?.AccessKeyId || !c.SecretAccessKey) throw new Error(`STS AssumeRoleWithWebIdentity for ${roleArn} gave no credentials`);
  return { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken };
}

export async function ecrCredentials(options: EcrCredentialsOptions): Promise<{ username: string; password: string }> {
  const { registry, awsAuth } = options;
  const region = ecrRegion(registry);
  if (!region) throw new Error(`aws_auth is for Amazon ECR images (<account>.dkr.ecr.<region>.amazonaws.com); '${registry}' is not one`);
  let credentials: AwsCredentials;
  if (awsAuth.aws_access_key_id && awsAuth.aws_secret_access_key) {
    credentials = { accessKeyId: awsAuth.aws_access_key_id, secretAccessKey: awsAuth.aws_secret_access_key };
  } else if (awsAuth.oidc_role_arn) {
    credentials = await assumeRole(region, awsAuth.oidc_role_arn, options);
  } else {
    throw new Error('aws_auth needs aws_access_key_id and aws_secret_access_key, or oidc_role_arn');
  }
  // The job's credentials only: never the SDK's default chain (the agent's environment, its instance role).
  const client = new ECRClient({ region, endpoint: options.endpoint, credentials, maxAttempts: 3, requestHandler: REQUEST_HANDLER });
  let token: string | undefined;
  try {
    const answer = await client.send(new GetAuthorizationTokenCommand({}));
    token = answer.authorizationData?.[0]?.authorizationToken;
  } catch (error) {
    throw callFailed(`ECR GetAuthorizationToken for ${registry}`, error);
  } finally {
    client.destroy();
  }
  const decoded = typeof token === 'string' ? Buffer.from(token, 'base64').toString('utf8') : '';
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw new Error(`ECR GetAuthorizationToken for ${registry} gave no token`);
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
