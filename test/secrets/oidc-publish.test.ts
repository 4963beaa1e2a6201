import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { readOidcSettings } from '../../runtime/secrets/oidc-publish';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { startS3rver } from '../support/s3rver';

/**
 * A Gyre inside a private network: a cloud's token service cannot fetch its discovery document, so
 * Gyre publishes it to a public bucket (here s3rver) and names the bucket as the issuer. A job's
 * token is then verified the way AWS STS would: from the issuer it names, by discovery, with
 * nothing fetched from Gyre itself.
 */
describe('OIDC documents published to a public bucket', () => {
  let s3: Awaited<ReturnType<typeof startS3rver>>;
  let g: TestGyre;
  let dir: string;
  let issuerBase: string;

  beforeAll(async () => {
    s3 = await startS3rver();
    dir = mkdtempSync(join(tmpdir(), 'gyre-oidc-publish-'));
    issuerBase = `${s3.endpoint}/${s3.bucket}/oidc`;
    g = await startTestGyre({
      env: { GYRE_JOB_OIDC_PUBLISH_BUCKET: `s3://${s3.bucket}/oidc`, GYRE_JOB_OIDC_PUBLISH_ENDPOINT: s3.endpoint, GYRE_JOB_OIDC_ISSUER_URL: issuerBase },
    });
    await g.addProject('gh/acme/cloud', {
      '.circleci/config.yml': `version: 2.1
jobs:
  assume-role:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: printf '%s' "$CIRCLE_OIDC_TOKEN_V2" > ${dir}/token
workflows:
  main:
    jobs: [assume-role]
`,
    });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await s3?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a job's token verifies against the documents in the bucket (its key was published as it was made)", async () => {
    const { id } = await g.trigger('gh/acme/cloud');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs['assume-role'].status).toBe('success');
    const token = readFileSync(join(dir, 'token'), 'utf8');
    const { iss } = decodeJwt(token);
    const [org] = await g.gyre.store.query<{ id: string }>("SELECT id FROM organizations WHERE name = 'acme'");
    expect(iss).toBe(`${issuerBase}/org/${org.id}`);

    // As a cloud verifies: the issuer's discovery document, then the JWKS it names, all from the bucket.
    const verify = async (jwt: string) => {
      const res = await fetch(`${iss}/.well-known/openid-configuration`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const discovery = (await res.json()) as { issuer: string; jwks_uri: string };
      expect(discovery.issuer).toBe(iss);
      expect(discovery.jwks_uri.startsWith(issuerBase)).toBe(true);
      return jwtVerify(jwt, createRemoteJWKSet(new URL(discovery.jwks_uri)), { issuer: discovery.issuer, audience: org.id });
    };
    const { payload } = await verify(token);
    expect(payload.sub).toMatch(/^org\/.+\/project\/.+\/user\//);

  }, 90_000);
});

describe('OIDC settings', () => {
  it('names the setting and what is allowed', () => {
    expect(readOidcSettings({})).toEqual({ issuerUrl: undefined });
    expect(() => readOidcSettings({ GYRE_JOB_OIDC_ISSUER_URL: 'http://ci.example.com' })).toThrow("GYRE_JOB_OIDC_ISSUER_URL: 'http://ci.example.com' must be an https:// URL");
    expect(() => readOidcSettings({ GYRE_JOB_OIDC_PUBLISH_BUCKET: 's3://b-ok' })).toThrow('GYRE_JOB_OIDC_ISSUER_URL: is required with GYRE_JOB_OIDC_PUBLISH_BUCKET');
    expect(() => readOidcSettings({ GYRE_JOB_OIDC_PUBLISH_BUCKET: 'ftp://bucket', GYRE_JOB_OIDC_ISSUER_URL: 'https://x.example' })).toThrow("GYRE_JOB_OIDC_PUBLISH_BUCKET: 'ftp://bucket' must be s3://<bucket>[/<prefix>] or gs://<bucket>[/<prefix>]");
    expect(() => readOidcSettings({ GYRE_JOB_OIDC_PUBLISH_BUCKET: 'gs://bucket/../x', GYRE_JOB_OIDC_ISSUER_URL: 'https://x.example' })).toThrow('GYRE_JOB_OIDC_PUBLISH_BUCKET');
    expect(() => readOidcSettings({ GYRE_JOB_OIDC_PUBLISH_REGION: 'eu-west-1' })).toThrow('GYRE_JOB_OIDC_PUBLISH_REGION: applies only with GYRE_JOB_OIDC_PUBLISH_BUCKET');
    expect(readOidcSettings({ GYRE_JOB_OIDC_PUBLISH_BUCKET: 'gs://acme-oidc/ci/', GYRE_JOB_OIDC_ISSUER_URL: 'https://storage.googleapis.com/acme-oidc/ci' })).toEqual({
      issuerUrl: 'https://storage.googleapis.com/acme-oidc/ci',
      publish: { kind: 'gcs', bucket: 'acme-oidc', prefix: 'ci', endpoint: undefined, region: 'us-east-1' },
    });
  });
});
