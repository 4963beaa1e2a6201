import { ECRClient, GetAuthorizationTokenCommand } from '@aws-sdk/client-ecr';

/**
 * Registry credentials for an Amazon ECR image from a job's `aws_auth` (CircleCI's
 * `aws_access_key_id` and `aws_secret_access_key`): ECR's GetAuthorizationToken, through the AWS
 * SDK (which signs it), answers with a password for the user `AWS`.
 */
export interface EcrCredentialsOptions {
  /** The image's registry host, `<account>.dkr.ecr.<region>.amazonaws.com`. */
  readonly registry: string;
  readonly awsAuth: Readonly<Record<string, string>>;
  /** The ECR API endpoint. @default - the SDK's endpoint for the registry's region (https://api.ecr.<region>.amazonaws.com, .com.cn in China) */
  readonly endpoint?: string;
}

/** The region of an ECR registry host, or undefined when the host is not ECR's. */
export function ecrRegion(registry: string): string | undefined {
  return /^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/.exec(registry)?.[1];
}

export async function ecrCredentials(options: EcrCredentialsOptions): Promise<{ username: string; password: string }> {
  const { registry, awsAuth } = options;
  const region = ecrRegion(registry);
  if (!region) throw new Error(`aws_auth is for Amazon ECR images (<account>.dkr.ecr.<region>.amazonaws.com); '${registry}' is not one`);
  const accessKeyId = awsAuth.aws_access_key_id;
  const secretAccessKey = awsAuth.aws_secret_access_key;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error(
      awsAuth.oidc_role_arn
        ? 'aws_auth with oidc_role_arn is not supported (Gyre issues no OIDC tokens); give aws_access_key_id and aws_secret_access_key'
        : 'aws_auth needs aws_access_key_id and aws_secret_access_key',
    );
  }
  // The job's keys only: never the SDK's default chain (the agent's environment, its instance role).
  const client = new ECRClient({
    region,
    endpoint: options.endpoint,
    credentials: { accessKeyId, secretAccessKey },
    maxAttempts: 3,
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 30_000 },
  });
  let token: string | undefined;
  try {
    const answer = await client.send(new GetAuthorizationTokenCommand({}));
    token = answer.authorizationData?.[0]?.authorizationToken;
  } catch (error) {
    const e = error as Error & { $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    throw new Error(`ECR GetAuthorizationToken for ${registry} → ${status ?? 'no answer'}: ${e.message}`);
  } finally {
    client.destroy();
  }
  const decoded = typeof token === 'string' ? Buffer.from(token, 'base64').toString('utf8') : '';
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw new Error(`ECR GetAuthorizationToken for ${registry} gave no token`);
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
