import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigurationError } from '../domain/errors';
import { createLocalKeyWrapper, defaultKeyFile } from './local-key-wrapper';
import type { KeyWrapper } from './secret-box';
import { createVaultTransitKeyWrapper } from './vault-transit-key-wrapper';

type Env = Readonly<Record<string, string | undefined>>;

/** The key wrappers GYRE_SECRETS_KEY_WRAPPER may name. */
export const KEY_WRAPPERS = ['local', 'aws-kms', 'gcp-kms', 'vault-transit'] as const;
export type KeyWrapperKind = (typeof KEY_WRAPPERS)[number];

/** How secrets' data keys are wrapped; only the chosen wrapper's settings are read and required. */
export interface SecretsSettings {
  /** GYRE_SECRETS_KEY_WRAPPER: `local` (a key file, the default), `aws-kms`, `gcp-kms` or `vault-transit`. */
  readonly wrapper: KeyWrapperKind;
  /** GYRE_SECRETS_KEY_FILE: the local keyring. @default `<GYRE_DATA_DIR>/secrets/keys` */
  readonly keyFile: string;
  /** GYRE_SECRETS_AWS_KMS_KEY_ID: the KMS key (key ARN, key id, alias name or alias ARN). */
  readonly awsKmsKeyId?: string;
  /** GYRE_SECRETS_AWS_KMS_ENDPOINT: another KMS endpoint (a VPC endpoint). */
  readonly awsKmsEndpoint?: string;
  /** GYRE_SECRETS_GCP_KMS_KEY: the CryptoKey, `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`. */
  readonly gcpKmsKeyName?: string;
  /** GYRE_SECRETS_GCP_KMS_ENDPOINT: another Cloud KMS endpoint, `host[:port]` or a URL. */
  readonly gcpKmsEndpoint?: string;
  /** VAULT_ADDR: Vault's address. */
  readonly vaultAddr?: string;
  /** VAULT_TOKEN: Vault's token (or GYRE_SECRETS_VAULT_TOKEN_FILE). */
  readonly vaultToken?: string;
  /** GYRE_SECRETS_VAULT_TOKEN_FILE: a file holding Vault's token, read at every request (a Vault Agent sink). */
  readonly vaultTokenFile?: string;
  /** GYRE_SECRETS_VAULT_TRANSIT_MOUNT: where the transit engine is mounted. @default 'transit' */
  readonly vaultTransitMount: string;
  /** GYRE_SECRETS_VAULT_TRANSIT_KEY: the transit key's name. */
  readonly vaultTransitKey?: string;
  /** VAULT_NAMESPACE: Vault Enterprise namespace. */
  readonly vaultNamespace?: string;
}

const AWS_KEY_ID = /^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)\/[A-Za-z0-9/_-]+|alias\/[A-Za-z0-9/_-]+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/;
const TRANSIT_NAME = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;
/** A mount path: segments joined by `/`, none of them `.` or `..`. */
const MOUNT = /^(?!\.{1,2}(\/|$))[A-Za-z0-9._-]+(\/(?!\.{1,2}(\/|$))[A-Za-z0-9._-]+)*$/;
const URL_SETTING = /^https?:\/\/[^\s/]+(\/\S*)?$/;

function required(env: Env, name: string, wrapper: string): string {
  const value = env[name];
  if (!value) throw new ConfigurationError(name, `is required when GYRE_SECRETS_KEY_WRAPPER is ${wrapper}`);
  return value;
}

function url(env: Env, name: string): string | undefined {
  const value = env[name] || undefined;
  if (value !== undefined && !URL_SETTING.test(value)) throw new ConfigurationError(name, `'${value}' must be an http:// or https:// URL`);
  return value;
}

/**
 * Reads the secrets settings (GYRE_SECRETS_*, and VAULT_ADDR / VAULT_TOKEN / VAULT_NAMESPACE for
 * Vault); a missing or malformed one throws a ConfigurationError naming it.
 */
export function readSecretsSettings(env: Env, dataDir: string): SecretsSettings {
  const wrapper = (env.GYRE_SECRETS_KEY_WRAPPER || 'local') as KeyWrapperKind;
  if (!KEY_WRAPPERS.includes(wrapper)) {
    throw new ConfigurationError('GYRE_SECRETS_KEY_WRAPPER', `'${wrapper}' is not a key wrapper (allowed: ${KEY_WRAPPERS.join(', ')})`);
  }
  const base = {
    wrapper,
    keyFile: resolve(env.GYRE_SECRETS_KEY_FILE || defaultKeyFile(dataDir)),
    vaultTransitMount: env.GYRE_SECRETS_VAULT_TRANSIT_MOUNT || 'transit',
  };
  switch (wrapper) {
    case 'local':
      return base;
    case 'aws-kms': {
      const awsKmsKeyId = required(env, 'GYRE_SECRETS_AWS_KMS_KEY_ID', wrapper);
      if (!AWS_KEY_ID.test(awsKmsKeyId)) throw new ConfigurationError('GYRE_SECRETS_AWS_KMS_KEY_ID', `'${awsKmsKeyId}' is not a KMS key id (a key ARN, key id, alias/<name> or alias ARN)`);
      return { ...base, awsKmsKeyId, awsKmsEndpoint: url(env, 'GYRE_SECRETS_AWS_KMS_ENDPOINT') };
    }
    case 'gcp-kms': {
      const gcpKmsKeyName = required(env, 'GYRE_SECRETS_GCP_KMS_KEY', wrapper);
      // Loaded only when Google's KMS is configured: its SDK is large (see openKeyWrapper).
      const { isCryptoKeyName } = require('./gcp-kms-key-wrapper') as typeof import('./gcp-kms-key-wrapper');
      if (!isCryptoKeyName(gcpKmsKeyName)) throw new ConfigurationError('GYRE_SECRETS_GCP_KMS_KEY', `'${gcpKmsKeyName}' is not a CryptoKey name (projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>)`);
      const gcpKmsEndpoint = env.GYRE_SECRETS_GCP_KMS_ENDPOINT || undefined;
      if (gcpKmsEndpoint !== undefined && !URL_SETTING.test(gcpKmsEndpoint) && !/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(gcpKmsEndpoint)) {
        throw new ConfigurationError('GYRE_SECRETS_GCP_KMS_ENDPOINT', `'${gcpKmsEndpoint}' must be host[:port] or an http:// or https:// URL`);
      }
      return { ...base, gcpKmsKeyName, gcpKmsEndpoint };
    }
    case 'vault-transit': {
      const vaultAddr = url(env, 'VAULT_ADDR');
      if (!vaultAddr) throw new ConfigurationError('VAULT_ADDR', `is required when GYRE_SECRETS_KEY_WRAPPER is ${wrapper}`);
      const vaultToken = env.VAULT_TOKEN || undefined;
      const tokenFile = env.GYRE_SECRETS_VAULT_TOKEN_FILE || undefined;
      if (!vaultToken && !tokenFile) throw new ConfigurationError('VAULT_TOKEN', `(or GYRE_SECRETS_VAULT_TOKEN_FILE) is required when GYRE_SECRETS_KEY_WRAPPER is ${wrapper}`);
      let vaultTokenFile: string | undefined;
      if (tokenFile && !vaultToken) {
        vaultTokenFile = resolve(tokenFile);
        try {
          readFileSync(vaultTokenFile);
        } catch (error) {
          throw new ConfigurationError('GYRE_SECRETS_VAULT_TOKEN_FILE', `cannot read ${vaultTokenFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
        }
      }
      const vaultTransitKey = required(env, 'GYRE_SECRETS_VAULT_TRANSIT_KEY', wrapper);
      if (!TRANSIT_NAME.test(vaultTransitKey)) throw new ConfigurationError('GYRE_SECRETS_VAULT_TRANSIT_KEY', `'${vaultTransitKey}' is not a transit key name (letters, digits, '.', '_', '-'; not '.' or '..')`);
      if (!MOUNT.test(base.vaultTransitMount)) throw new ConfigurationError('GYRE_SECRETS_VAULT_TRANSIT_MOUNT', `'${base.vaultTransitMount}' is not a mount path (segments of letters, digits, '.', '_', '-', joined by '/', none of them '.' or '..')`);
      return { ...base, vaultAddr, vaultToken, vaultTokenFile, vaultTransitKey, vaultNamespace: env.VAULT_NAMESPACE || undefined };
    }
  }
}

/** Builds the key wrapper the settings choose (nothing is contacted until the first wrap or unwrap). */
export function createKeyWrapper(settings: SecretsSettings): KeyWrapper {
  switch (settings.wrapper) {
    case 'local':
      return createLocalKeyWrapper({ file: settings.keyFile });
    // The cloud SDKs are loaded only for the wrapper that uses them.
    case 'aws-kms': {
      const { createAwsKmsKeyWrapper } = require('./aws-kms-key-wrapper') as typeof import('./aws-kms-key-wrapper');
      return createAwsKmsKeyWrapper({ keyId: settings.awsKmsKeyId!, endpoint: settings.awsKmsEndpoint });
    }
    case 'gcp-kms': {
      const { createGcpKmsKeyWrapper } = require('./gcp-kms-key-wrapper') as typeof import('./gcp-kms-key-wrapper');
      return createGcpKmsKeyWrapper({ keyName: settings.gcpKmsKeyName!, apiEndpoint: settings.gcpKmsEndpoint });
    }
    case 'vault-transit':
      return createVaultTransitKeyWrapper({
        address: settings.vaultAddr!,
        token: settings.vaultToken,
        tokenFile: settings.vaultTokenFile,
        mount: settings.vaultTransitMount,
        key: settings.vaultTransitKey!,
        namespace: settings.vaultNamespace,
      });
  }
}
