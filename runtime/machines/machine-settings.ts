import { readFileSync } from 'node:fs';
import { ConfigurationError } from '../domain/errors';

export const MACHINE_PROVIDERS = ['aws', 'gcp', 'local'] as const;
export type MachineProviderName = (typeof MACHINE_PROVIDERS)[number];


/**
 * The machine executor's settings: GYRE_MACHINE_PROVIDER, and for `aws`/`gcp` the JSON file
 * GYRE_MACHINE_CONFIG (what the distribution writes from the environment file):
 *
 *   { "images": { "ubuntu-2204:current": "<launch template | instance template>", "default": "…" },
 *     "instanceTypes": { "medium": "m6i.large" }, "spot": false,
 *     "aws": { "region": "eu-west-1", "subnetIds": ["subnet-…"], "endpoint": "…" },
 *     "gcp": { "project": "p", "zone": "europe-west1-b", "apiEndpoint": "…" } }
 */
export interface MachineSettings {
  readonly provider: MachineProviderName;
  /** `machine: image:` → the template the machine starts from (`default` for `machine: true`). */
  readonly images: Readonly<Record<string, string>>;
  /** Resource class → instance (machine) type; a class not here uses the template's. */
  readonly instanceTypes: Readonly<Record<string, string>>;
  readonly spot: boolean;
  readonly aws?: { readonly region: string; readonly subnetIds: readonly string[]; readonly endpoint?: string };
  readonly gcp?: { readonly project: string; readonly zone: string; readonly apiEndpoint?: string };
  /** GYRE_MACHINE_SWEEP_MS: how often machines whose task ended are looked for and destroyed. */
  readonly sweepMs: number;
  /** GYRE_MACHINE_BOOT_TIMEOUT_MS: how long a machine may take to start the agent before the attempt ends. */
  readonly bootTimeoutMs: number;
  /** GYRE_MACHINE_MAX: machines launched and not yet destroyed, at most, per process. */
  readonly maxMachines: number;
  /** GYRE_INSTALLATION_ID: the tag that marks this installation's machines. @default - one generated once and kept in the database */
  readonly installationId?: string;
}

type Env = Readonly<Record<string, string | undefined>>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) throw new ConfigurationError(name, `'${raw}' must be a whole number from ${min} to ${max}`);
  return value;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringMap(value: unknown, what: string): Record<string, string> {
  if (value === undefined) return {};
  if (!isObject(value)) throw new ConfigurationError('GYRE_MACHINE_CONFIG', `${what} must be an object of names to strings`);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string' || !v) throw new ConfigurationError('GYRE_MACHINE_CONFIG', `${what}.${k} must be a non-empty string`);
  }
  return value as Record<string, string>;
}

/** Reads the machine executor's settings; undefined when GYRE_MACHINE_PROVIDER is unset (machine jobs run on the built-in runner's shell). */
export function readMachineSettings(env: Env = process.env): MachineSettings | undefined {
  const provider = env.GYRE_MACHINE_PROVIDER || undefined;
  if (!provider) return undefined;
  if (!(MACHINE_PROVIDERS as readonly string[]).includes(provider)) {
    throw new ConfigurationError('GYRE_MACHINE_PROVIDER', `'${provider}' is not allowed (allowed: ${MACHINE_PROVIDERS.join(', ')})`);
  }
  let config: Record<string, unknown> = {};
  if (env.GYRE_MACHINE_CONFIG) {
    try {
      config = JSON.parse(readFileSync(env.GYRE_MACHINE_CONFIG, 'utf8'));
    } catch (error) {
      throw new ConfigurationError('GYRE_MACHINE_CONFIG', `cannot read JSON from ${env.GYRE_MACHINE_CONFIG}: ${(error as Error).message}`);
    }
    if (!isObject(config)) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'must hold a JSON object');
  } else if (provider !== 'local') {
    throw new ConfigurationError('GYRE_MACHINE_CONFIG', `is needed with GYRE_MACHINE_PROVIDER=${provider}: a JSON file mapping machine images to templates`);
  }
  const images = stringMap(config.images, 'images');
  if (provider !== 'local' && Object.keys(images).length === 0) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'images maps no machine image to a template');
  const spot = config.spot ?? false;
  if (typeof spot !== 'boolean') throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'spot must be true or false');
  let aws: MachineSettings['aws'];
  let gcp: MachineSettings['gcp'];
  if (provider === 'aws') {
    const a = isObject(config.aws) ? config.aws : {};
    const region = a.region ?? env.AWS_REGION;
    if (typeof region !== 'string' || !region) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'aws.region (or AWS_REGION) is needed with GYRE_MACHINE_PROVIDER=aws');
    const subnetIds = a.subnetIds ?? [];
    if (!Array.isArray(subnetIds) || subnetIds.some((s) => typeof s !== 'string')) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'aws.subnetIds must be a list of subnet ids');
    if (a.endpoint !== undefined && (typeof a.endpoint !== 'string' || !/^https?:\/\//.test(a.endpoint))) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'aws.endpoint must be an http(s):// URL');
    aws = { region, subnetIds: subnetIds as string[], ...(a.endpoint ? { endpoint: a.endpoint as string } : {}) };
  }
  if (provider === 'gcp') {
    const g = isObject(config.gcp) ? config.gcp : {};
    if (typeof g.project !== 'string' || !g.project) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'gcp.project is needed with GYRE_MACHINE_PROVIDER=gcp');
    if (typeof g.zone !== 'string' || !g.zone) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'gcp.zone is needed with GYRE_MACHINE_PROVIDER=gcp');
    if (g.apiEndpoint !== undefined && (typeof g.apiEndpoint !== 'string' || !/^https?:\/\//.test(g.apiEndpoint))) throw new ConfigurationError('GYRE_MACHINE_CONFIG', 'gcp.apiEndpoint must be an http(s):// URL');
    gcp = { project: g.project, zone: g.zone, ...(g.apiEndpoint ? { apiEndpoint: g.apiEndpoint as string } : {}) };
  }
  const installationId = env.GYRE_INSTALLATION_ID || undefined;
  if (installationId && !/^[a-z0-9][a-z0-9_-]{0,62}$/.test(installationId)) {
    throw new ConfigurationError('GYRE_INSTALLATION_ID', `'${installationId}' must be 1-63 lower-case letters, digits, '_' or '-' (it is a GCE label value too)`);
  }
  return {
    provider: provider as MachineProviderName,
    images,
    instanceTypes: stringMap(config.instanceTypes, 'instanceTypes'),
    spot,
    aws,
    gcp,
    sweepMs: integer(env, 'GYRE_MACHINE_SWEEP_MS', 60_000, 100, 3_600_000),
    bootTimeoutMs: integer(env, 'GYRE_MACHINE_BOOT_TIMEOUT_MS', 600_000, 1000, 3_600_000),
    maxMachines: integer(env, 'GYRE_MACHINE_MAX', 64, 1, 10_000),
    installationId,
  };
}
