import { ConfigurationError } from '../domain/errors';
import type { PutObject } from './oidc-tokens';

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Where jobs' OIDC tokens say they come from, and where the documents that verify them are
 * published. A cloud's token service (AWS STS, Google STS) fetches the issuer's discovery document
 * and JWKS over the internet; a Gyre inside a private network is not reachable there, so Gyre can
 * copy both documents to a public bucket after every key change, and name the bucket's public URL
 * as the issuer.
 */
export interface OidcSettings {
  /** GYRE_JOB_OIDC_ISSUER_URL: the base of every organisation's issuer (`<base>/org/<id>`). @default the public URL */
  readonly issuerUrl?: string;
  /** GYRE_JOB_OIDC_PUBLISH_BUCKET: `s3://<bucket>[/<prefix>]` or `gs://<bucket>[/<prefix>]`. */
  readonly publish?: {
    readonly kind: 's3' | 'gcs';
    readonly bucket: string;
    /** Prefix of every object, without slashes at either end ('' for none). */
    readonly prefix: string;
    /** GYRE_JOB_OIDC_PUBLISH_ENDPOINT: an S3-compatible or Cloud Storage endpoint. @default the cloud's */
    readonly endpoint?: string;
    /** GYRE_JOB_OIDC_PUBLISH_REGION (S3). @default us-east-1 */
    readonly region: string;
  };
}

const PUBLISH = /^(s3|gs):\/\/([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])(\/[A-Za-z0-9._/-]*)?$/;
const HTTPS_URL = /^https:\/\/[^\s/?#]+(\/[^\s?#]*)?$/;

/** Reads GYRE_JOB_OIDC_*; a malformed or missing one throws a ConfigurationError naming it. */
export function readOidcSettings(env: Env): OidcSettings {
  const issuerUrl = env.GYRE_JOB_OIDC_ISSUER_URL || undefined;
  // Clouds fetch discovery over https only; plain http is allowed on loopback for development.
  if (issuerUrl !== undefined && !HTTPS_URL.test(issuerUrl) && !/^http:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d+)?(\/\S*)?$/.test(issuerUrl)) {
    throw new ConfigurationError('GYRE_JOB_OIDC_ISSUER_URL', `'${issuerUrl}' must be an https:// URL (the cloud fetches the issuer's documents from it)`);
  }
  const target = env.GYRE_JOB_OIDC_PUBLISH_BUCKET || undefined;
  if (target === undefined) {
    for (const name of ['GYRE_JOB_OIDC_PUBLISH_ENDPOINT', 'GYRE_JOB_OIDC_PUBLISH_REGION']) {
      if (env[name]) throw new ConfigurationError(name, 'applies only with GYRE_JOB_OIDC_PUBLISH_BUCKET');
    }
    return { issuerUrl };
  }
  const match = PUBLISH.exec(target);
  if (!match || (match[3] ?? '').split('/').some((s) => s === '.' || s === '..')) {
    throw new ConfigurationError('GYRE_JOB_OIDC_PUBLISH_BUCKET', `'${target}' must be s3://<bucket>[/<prefix>] or gs://<bucket>[/<prefix>]`);
  }
  if (!issuerUrl) {
    throw new ConfigurationError('GYRE_JOB_OIDC_ISSUER_URL', 'is required with GYRE_JOB_OIDC_PUBLISH_BUCKET: the https URL where that bucket (and prefix) is publicly readable');
  }
  const endpoint = env.GYRE_JOB_OIDC_PUBLISH_ENDPOINT || undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+(\/\S*)?$/.test(endpoint)) {
    throw new ConfigurationError('GYRE_JOB_OIDC_PUBLISH_ENDPOINT', `'${endpoint}' must be an http:// or https:// URL`);
  }
  const region = env.GYRE_JOB_OIDC_PUBLISH_REGION || 'us-east-1';
  if (!/^[a-z0-9-]{2,32}$/.test(region)) throw new ConfigurationError('GYRE_JOB_OIDC_PUBLISH_REGION', `'${region}' is not a region name`);
  return {
    issuerUrl,
    publish: {
      kind: match[1] === 's3' ? 's3' : 'gcs',
      bucket: match[2],
      prefix: (match[3] ?? '').replace(/^\/+|\/+$/g, ''),
      endpoint,
      region,
    },
  };
}

/**
 * A PutObject that writes to the publish bucket with the cloud's official client (loaded only when
 * publishing is configured). Objects are written with a short cache lifetime, so a verifier sees a
 * new key within a minute; the bucket's policy (not Gyre) makes them publicly readable.
 */
export function createOidcPublisher(publish: NonNullable<OidcSettings['publish']>): PutObject {
  const keyOf = (key: string) => (publish.prefix ? `${publish.prefix}/${key}` : key);
  if (publish.kind === 's3') {
    const { S3Client, PutObjectCommand } = require('@aws-sdk/client-s3') as typeof import('@aws-sdk/client-s3');
    const client = new S3Client({
      region: publish.region,
      endpoint: publish.endpoint,
      forcePathStyle: publish.endpoint !== undefined,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    return async (key, body, contentType) => {
      await client.send(new PutObjectCommand({ Bucket: publish.bucket, Key: keyOf(key), Body: body, ContentType: contentType, CacheControl: 'public, max-age=60' }));
    };
  }
  const { Storage } = require('@google-cloud/storage') as typeof import('@google-cloud/storage');
  const bucket = new Storage(publish.endpoint ? { apiEndpoint: publish.endpoint } : {}).bucket(publish.bucket);
  return async (key, body, contentType) => {
    await bucket.file(keyOf(key)).save(body, { contentType, resumable: false, metadata: { cacheControl: 'public, max-age=60' } });
  };
}
