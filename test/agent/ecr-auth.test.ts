import { ecrCredentials } from '../../runtime/agent/ecr-auth';
import { startEcrStandIn, type EcrStandIn } from '../support/ecr-stand-in';
import { startStsStandIn, type StsStandIn } from '../support/sts-stand-in';

/**
 * ECR's GetAuthorizationToken through the AWS SDK, against a stand-in held to AWS's API model for
 * ECR and the awsJson1_1 protocol (nothing here reaches AWS).
 */
describe('ECR registry credentials from aws_auth', () => {
  const registry = '123456789012.dkr.ecr.eu-central-1.amazonaws.com';
  const awsAuth = { aws_access_key_id: 'AKIATESTKEY', aws_secret_access_key: 'test/secret+key' };
  const token = (user: string, password: string) => ({ status: 200, body: { authorizationData: [{ authorizationToken: Buffer.from(`${user}:${password}`).toString('base64'), expiresAt: 1_900_000_000, proxyEndpoint: `https://${registry}` }] } });
  let ecr: EcrStandIn | undefined;
  afterEach(async () => {
    await ecr?.close();
    ecr = undefined;
  });

  test("asks GetAuthorizationToken as AWS's model says, signed with the job's keys for the registry's region, and gives the registry password", async () => {
    ecr = await startEcrStandIn(token('AWS', 'pass:with:colons'));
    expect(await ecrCredentials({ registry, awsAuth, endpoint: ecr.url })).toEqual({ username: 'AWS', password: 'pass:with:colons' });
    expect(ecr.problems).toEqual([]);
    expect(ecr.requests).toHaveLength(1);
    const [asked] = ecr.requests;
    expect({ target: asked.headers['x-amz-target'], body: asked.body }).toEqual({ target: 'AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken', body: '{}' });
    expect(String(asked.headers.authorization)).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIATESTKEY\/\d{8}\/eu-central-1\/ecr\/aws4_request, /);
    // The secret signs; it is never sent.
    expect(JSON.stringify(asked)).not.toContain(awsAuth.aws_secret_access_key);
  });

  test("says ECR's own message when it refuses, and retries a server error before giving up", async () => {
    ecr = await startEcrStandIn({ status: 400, body: { __type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' } });
    await expect(ecrCredentials({ registry, awsAuth, endpoint: ecr.url })).rejects.toThrow(`ECR GetAuthorizationToken for ${registry} → 400: The security token included in the request is invalid.`);
    expect(ecr.requests).toHaveLength(1);
    await ecr.close();
    ecr = await startEcrStandIn({ status: 500, body: { __type: 'ServerException', message: 'internal' } });
    await expect(ecrCredentials({ registry, awsAuth, endpoint: ecr.url })).rejects.toThrow(`ECR GetAuthorizationToken for ${registry} → 500: internal`);
    expect(ecr.requests).toHaveLength(3);
  });

  test('an answer without a token, and aws_auth ECR cannot use, are refused with what is wrong', async () => {
    ecr = await startEcrStandIn({ status: 200, body: { authorizationData: [] } });
    await expect(ecrCredentials({ registry, awsAuth, endpoint: ecr.url })).rejects.toThrow(/gave no token/);
    await expect(ecrCredentials({ registry, awsAuth: { oidc_role_arn: 'arn:aws:iam::123456789012:role/ci' }, endpoint: ecr.url })).rejects.toThrow(/oidc_role_arn needs the job's OIDC token \(CIRCLE_OIDC_TOKEN\)/);
    await expect(ecrCredentials({ registry, awsAuth: { aws_access_key_id: 'AKIATESTKEY' }, endpoint: ecr.url })).rejects.toThrow(/aws_auth needs aws_access_key_id and aws_secret_access_key, or oidc_role_arn/);
    await expect(ecrCredentials({ registry: 'registry.corp:5000', awsAuth, endpoint: ecr.url })).rejects.toThrow(/aws_auth is for Amazon ECR images.*registry\.corp:5000/);
    expect(ecr.requests).toHaveLength(1);
  });
});

/**
 * `aws_auth: { oidc_role_arn }`: the role's credentials from STS AssumeRoleWithWebIdentity with the
 * job's OIDC token, through the AWS SDK, against a stand-in held to AWS's API model for STS and the
 * awsQuery protocol; then GetAuthorizationToken signed with them. Neither call uses the agent's
 * own AWS keys, which are set in its environment here to show it.
 */
describe('ECR registry credentials from aws_auth with oidc_role_arn', () => {
  const registry = '123456789012.dkr.ecr.eu-central-1.amazonaws.com';
  const roleArn = 'arn:aws:iam::123456789012:role/gyre-ecr-pull';
  const oidcToken = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJvcmcvYWNtZSJ9.c2lnbmF0dXJl';
  const session = { AccessKeyId: 'ASIAROLESESSION00001', SecretAccessKey: 'role/secret+key', SessionToken: 'FwoGZXIvYXdzEXAMPLEsessionToken', Expiration: '2030-01-01T00:00:00Z' };
  const assumed = { Credentials: session, AssumedRoleUser: { Arn: `arn:aws:sts::123456789012:assumed-role/gyre-ecr-pull/gyre-job`, AssumedRoleId: 'AROAEXAMPLEID:gyre-job' }, SubjectFromWebIdentityToken: 'org/acme/project/app', Provider: 'http://127.0.0.1/org/acme', Audience: 'acme' };
  let sts: StsStandIn | undefined;
  let ecr: EcrStandIn | undefined;
  const ambient = { AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY };
  beforeAll(() => {
    process.env.AWS_ACCESS_KEY_ID = 'AKIAAGENTOWNKEY00000';
    process.env.AWS_SECRET_ACCESS_KEY = 'the-agent-own-secret';
  });
  afterAll(() => {
    for (const [k, v] of Object.entries(ambient)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  });
  afterEach(async () => {
    await sts?.close();
    await ecr?.close();
    sts = ecr = undefined;
  });

  test("assumes the role with the job's OIDC token, unsigned, and signs GetAuthorizationToken with the role's session", async () => {
    sts = await startStsStandIn({ output: assumed });
    ecr = await startEcrStandIn({ status: 200, body: { authorizationData: [{ authorizationToken: Buffer.from('AWS:from-the-role').toString('base64'), expiresAt: 1_900_000_000 }] } });
    const got = await ecrCredentials({ registry, awsAuth: { oidc_role_arn: roleArn }, endpoint: ecr.url, stsEndpoint: sts.url, webIdentityToken: oidcToken, sessionName: 'gyre-task-1' });
    expect(got).toEqual({ username: 'AWS', password: 'from-the-role' });

    expect(sts.problems).toEqual([]);
    expect(sts.requests).toHaveLength(1);
    expect(sts.requests[0].params).toMatchObject({ Action: 'AssumeRoleWithWebIdentity', RoleArn: roleArn, RoleSessionName: 'gyre-task-1', WebIdentityToken: oidcToken });
    expect(ecr.problems).toEqual([]);
    expect(ecr.requests).toHaveLength(1);
    const [asked] = ecr.requests;
    expect(String(asked.headers.authorization)).toMatch(/^AWS4-HMAC-SHA256 Credential=ASIAROLESESSION00001\/\d{8}\/eu-central-1\/ecr\/aws4_request, /);
    expect(asked.headers['x-amz-security-token']).toBe(session.SessionToken);
    // The agent's own keys were not used for either call.
    expect(JSON.stringify([sts.requests, ecr.requests])).not.toContain('AKIAAGENTOWNKEY00000');
  });

  test("says STS's own message when it refuses the token, and never asks ECR", async () => {
    sts = await startStsStandIn({ error: { code: 'InvalidIdentityToken', message: 'No OpenIDConnect provider found in your account for http://127.0.0.1/org/acme' } });
    ecr = await startEcrStandIn({ status: 200, body: { authorizationData: [] } });
    await expect(ecrCredentials({ registry, awsAuth: { oidc_role_arn: roleArn }, endpoint: ecr.url, stsEndpoint: sts.url, webIdentityToken: oidcToken })).rejects.toThrow(
      `STS AssumeRoleWithWebIdentity for ${roleArn} → 400: No OpenIDConnect provider found in your account for http://127.0.0.1/org/acme`,
    );
    expect(sts.problems).toEqual([]);
    expect(ecr.requests).toEqual([]);
  });
});
