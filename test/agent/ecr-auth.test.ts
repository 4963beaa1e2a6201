import { ecrCredentials } from '../../runtime/agent/ecr-auth';
import { startEcrStandIn, type EcrStandIn } from '../support/ecr-stand-in';

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
    await expect(ecrCredentials({ registry, awsAuth: { oidc_role_arn: 'arn:aws:iam::123456789012:role/ci' }, endpoint: ecr.url })).rejects.toThrow(/oidc_role_arn is not supported/);
    await expect(ecrCredentials({ registry: 'registry.corp:5000', awsAuth, endpoint: ecr.url })).rejects.toThrow(/aws_auth is for Amazon ECR images.*registry\.corp:5000/);
    expect(ecr.requests).toHaveLength(1);
  });
});
