/**
 * What a job may ask of its remote engine. The engine is rootful Podman on the agent's host, so
 * anything that reaches outside a container (privileges, the host's namespaces, its files or
 * devices, another OCI runtime, host paths in image transports) is root on the host. CircleCI's
 * remote Docker is a VM of its own and allows these; here they are refused before the engine
 * sees the request.
 *
 * The filter is an allowlist of the Docker Engine API's endpoint families the docker CLI uses
 * (Podman's libpod API, plugins and swarm are refused whole), with the request bodies and query
 * parameters that can reach the host checked: container create and update, exec create, volume
 * and network create, build, image pull/import/tag/commit/push. Bodies are read as Podman's Go
 * decoder reads them: field names case-insensitively, every duplicate counted.
 */

/** What the proxy does with a request. */
export type Screening =
  | { readonly allow: true; readonly checkBody?: (body: unknown) => string | undefined }
  | { readonly allow: false; readonly status: number; readonly message: string };

/** How much of an inspected JSON body is read (container create is a few KiB). */
export const MAX_INSPECTED_BODY = 1024 * 1024;

const WHY = "remote Docker in Gyre does not allow it (the job's engine runs as root on the agent's host, so this would reach the host)";

/** The refusal for `what` (an option, as the docker CLI spells it where it has one). */
export const refusal = (what: string) => `${what}: ${WHY}`;

const deny = (status: number, message: string): Screening => ({ allow: false, status, message });
const refuse = (what: string) => deny(403, refusal(what));

/** A name of a volume, network or container (never a path). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** containers/image transports: a reference in one of these reads or writes the host's files. */
const TRANSPORT = /^(docker-archive|oci-archive|oci|dir|docker-daemon|containers-storage|sif|tarball|ostree|docker):/i;

/** Query parameters of POST /build the docker CLI sends (the legacy builder); any other is refused. */
const BUILD_PARAMS = new Set(['t', 'remote', 'dockerfile', 'q', 'nocache', 'cachefrom', 'pull', 'rm', 'forcerm', 'memory', 'memswap', 'cpushares', 'cpusetcpus', 'cpusetmems', 'cpuperiod', 'cpuquota', 'buildargs', 'labels', 'shmsize', 'squash', 'networkmode', 'platform', 'target', 'extrahosts', 'ulimits', 'isolation', 'version', 'session', 'buildid', 'cgroupparent', 'outputs']);

/**
 * Screens one request: `path` is the request target as sent (path and query), `upgrade` whether it
 * asks to hijack the connection (attach, exec start).
 */
export function screen(method: string, target: string, upgrade: boolean): Screening {
  const q = target.indexOf('?');
  const rawPath = q < 0 ? target : target.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : target.slice(q + 1));
  // The engine decodes and cleans paths before routing; the docker CLI never sends an encoded or
  // unclean one, so neither is let through (no second reading of the path can differ from ours).
  if (!rawPath.startsWith('/') || /%|\/\/|\/\.\.?(\/|$)|\\/.test(rawPath)) return deny(400, `${rawPath}: not a path remote Docker in Gyre serves (encoded, relative or unclean)`);
  const path = rawPath.replace(/^\/v[0-9][0-9A-Za-z.-]*(?=\/)/, '');
  const [family = '', ...rest] = path.slice(1).split('/');
  const m = method.toUpperCase();
  if (upgrade && !(m === 'POST' && ((family === 'containers' && rest.length === 2 && rest[1] === 'attach') || (family === 'exec' && rest.length === 2 && rest[1] === 'start')))) {
    return deny(400, `${path}: only attach and exec start may upgrade the connection in remote Docker in Gyre`);
  }
  switch (family) {
    case '_ping':
    case 'version':
    case 'info':
    case 'events':
    case 'auth':
      return rest.length === 0 ? { allow: true } : unknown(path);
    case 'system':
      return rest.length === 1 && rest[0] === 'df' ? { allow: true } : unknown(path);
    case 'containers':
      if (m === 'POST' && rest.length === 1 && rest[0] === 'create') return { allow: true, checkBody: checkContainerCreate };
      // API 1.23 and older took a HostConfig at start: a body there is read as one.
      if (m === 'POST' && rest.length === 2 && rest[1] === 'start') return { allow: true, checkBody: (body) => checkHostConfig(asObject(body), 'create') };
      if (m === 'POST' && rest.length === 2 && rest[1] === 'update') return { allow: true, checkBody: (body) => checkHostConfig(asObject(body), 'update') };
      if (m === 'POST' && rest.length === 2 && rest[1] === 'exec') return { allow: true, checkBody: checkExecCreate };
      return { allow: true };
    case 'exec':
      return { allow: true };
    case 'images':
      return screenImages(m, rest, query);
    case 'build':
      if (rest.length === 0) return screenBuild(query);
      return rest.length === 1 && (rest[0] === 'prune' || rest[0] === 'cancel') ? { allow: true } : unknown(path);
    case 'commit':
      return transportIn(query) ?? { allow: true };
    case 'distribution':
      return { allow: true };
    case 'volumes':
      if (m === 'POST' && rest.length === 1 && rest[0] === 'create') return { allow: true, checkBody: checkVolumeCreate };
      return { allow: true };
    case 'networks':
      if (m === 'POST' && rest.length === 1 && rest[0] === 'create') return { allow: true, checkBody: checkNetworkCreate };
      if (rest.length >= 1 && rest[0].toLowerCase() === 'host') return refuse('the host network (--network host)');
      return { allow: true };
    case 'libpod':
      return refuse("Podman's libpod API (only the Docker Engine API is served)");
    case 'plugins':
      return refuse('Docker plugins (docker plugin)');
    case 'swarm':
    case 'services':
    case 'tasks':
    case 'nodes':
    case 'secrets':
    case 'configs':
      return refuse(`swarm mode (/${family})`);
    default:
      return unknown(path);
  }
}

const unknown = (path: string) => deny(403, `${path} is not part of the Docker Engine API remote Docker in Gyre serves (containers, images, build, volumes, networks, exec, system info and events)`);

function screenImages(method: string, rest: string[], query: URLSearchParams): Screening {
  if (method === 'POST' && rest.length === 1 && rest[0] === 'create') {
    const from = query.getAll('fromSrc').find((s) => s !== '-' && !/^https?:\/\//i.test(s));
    if (from !== undefined) return refuse(`docker import of ${from} (only a URL or the request's body)`);
    return transportIn(query) ?? { allow: true };
  }
  // /images/{name}/push, /tag, /json, DELETE /images/{name}: the name may hold slashes.
  const name = (rest.at(-1) === 'push' || rest.at(-1) === 'tag' || rest.at(-1) === 'json' || rest.at(-1) === 'history' ? rest.slice(0, -1) : rest).join('/');
  if (TRANSPORT.test(name)) return refuse(`the image reference ${name} (an image transport reaches the host's files)`);
  return transportIn(query) ?? { allow: true };
}

/** Refuses a transport-qualified image reference in any query parameter (fromImage, repo, tag, Podman's destination…). */
function transportIn(query: URLSearchParams): Screening | undefined {
  for (const value of query.values()) if (TRANSPORT.test(value)) return refuse(`the image reference ${value} (an image transport reaches the host's files)`);
  return undefined;
}

function screenBuild(query: URLSearchParams): Screening {
  for (const [rawKey, value] of query) {
    const key = rawKey.toLowerCase();
    if (!BUILD_PARAMS.has(key)) return refuse(`the build option ${rawKey}`);
    if (key === 'networkmode' && !['', 'default', 'bridge', 'none'].includes(value.toLowerCase())) return refuse(`docker build --network ${value}`);
    if (key === 'cgroupparent' && value !== '') return refuse('docker build --cgroup-parent');
    if (key === 'outputs' && value !== '' && value !== '[]' && value !== 'null') return refuse('docker build --output');
    if (key === 't' && TRANSPORT.test(value)) return refuse(`the image reference ${value} (an image transport reaches the host's files)`);
    if (key === 'dockerfile' && (value.startsWith('/') || value.split(/[/\\]/).includes('..'))) return refuse(`a Dockerfile outside the build context (${value})`);
    if (key === 'remote' && value !== '' && !/^(https?:\/\/|git:\/\/|git@)/i.test(value)) return refuse(`a build context from ${value} (only a URL or the request's body)`);
  }
  return { allow: true };
}

type Json = Record<string, unknown>;

const asObject = (value: unknown): Json => (value && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : {});

/** Every value of `obj` under `name`, matched as Go's encoding/json matches field names. */
function fields(obj: Json, name: string): unknown[] {
  const lower = name.toLowerCase();
  return Object.keys(obj)
    .filter((k) => k.toLowerCase() === lower)
    .map((k) => obj[k]);
}

const present = (value: unknown) => value !== undefined && value !== null && value !== false && value !== '' && !(Array.isArray(value) && value.length === 0) && !(typeof value === 'object' && !Array.isArray(value) && Object.keys(value as object).length === 0);
const strings = (value: unknown): string[] => (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === 'string');

/**
 * Go folds some non-ASCII letters onto ASCII ones when it matches field names (ſ onto s, K onto
 * k): a body with a non-ASCII key anywhere is refused, so no key can mean more than we read.
 */
function nonAsciiKey(value: unknown): string | undefined {
  if (Array.isArray(value)) {
    for (const v of value) {
      const found = nonAsciiKey(v);
      if (found !== undefined) return found;
    }
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value as Json)) {
      if (/[^\x20-\x7e]/.test(k)) return k;
      const found = nonAsciiKey(v);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

function checkContainerCreate(body: unknown): string | undefined {
  const odd = nonAsciiKey(body);
  if (odd !== undefined) return `the field ${JSON.stringify(odd)} is not a Docker Engine API field`;
  const config = asObject(body);
  for (const image of fields(config, 'Image').flatMap(strings)) if (TRANSPORT.test(image)) return refusal(`the image reference ${image} (an image transport reaches the host's files)`);
  for (const volumes of fields(config, 'Volumes')) for (const dest of Object.keys(asObject(volumes))) if (dest.includes(':')) return refusal(`the anonymous volume ${dest} (a host path)`);
  for (const hostConfig of fields(config, 'HostConfig')) {
    const found = checkHostConfig(asObject(hostConfig), 'create');
    if (found) return found;
  }
  for (const networking of fields(config, 'NetworkingConfig')) {
    for (const endpoints of fields(asObject(networking), 'EndpointsConfig')) {
      for (const name of Object.keys(asObject(endpoints))) if (name.toLowerCase() === 'host' || name.includes(':')) return refusal(`--network ${name}`);
    }
  }
  return undefined;
}

/** Namespace modes: `host` and Podman's `ns:<path>` join the host's; `private`, `container:<x>` and the like stay in the engine. */
function namespaceRefusal(option: string, mode: string, network = false): string | undefined {
  const lower = mode.toLowerCase();
  if (lower === 'host' || lower.startsWith('ns:') || lower.startsWith('/')) return refusal(`${option} ${mode}`);
  // slirp4netns:allow_host_loopback=true, pasta:… and other network modes with options reach the host's own addresses.
  if (network && lower.includes(':') && !lower.startsWith('container:')) return refusal(`${option} ${mode}`);
  return undefined;
}

const SECURITY_OPTS = /^no-new-privileges([:=](true|false))?$/i;
const LOG_OPTS = new Set(['max-size', 'max-file', 'tag', 'labels', 'labels-regex', 'env', 'env-regex', 'mode', 'max-buffer-size', 'compress']);

/** Checks a HostConfig (container create) or the Resources of a container update. */
function checkHostConfig(hc: Json, kind: 'create' | 'update'): string | undefined {
  const odd = nonAsciiKey(hc);
  if (odd !== undefined) return `the field ${JSON.stringify(odd)} is not a Docker Engine API field`;
  const any = (name: string) => fields(hc, name).some(present);
  if (any('Privileged')) return refusal('--privileged');
  if (any('CapAdd') || any('Capabilities')) return refusal(`--cap-add ${fields(hc, 'CapAdd').flatMap(strings).join(',')}`.trim());
  if (any('Devices')) return refusal('--device');
  if (any('DeviceRequests')) return refusal('--gpus (device requests)');
  if (any('DeviceCgroupRules')) return refusal('--device-cgroup-rule');
  if (any('CgroupParent')) return refusal('--cgroup-parent');
  if (kind === 'update') return undefined;
  for (const [option, field] of [['--pid', 'PidMode'], ['--ipc', 'IpcMode'], ['--uts', 'UTSMode'], ['--userns', 'UsernsMode'], ['--cgroupns', 'CgroupnsMode']] as const) {
    for (const mode of fields(hc, field).flatMap(strings)) {
      const found = namespaceRefusal(option, mode);
      if (found) return found;
    }
  }
  for (const mode of fields(hc, 'NetworkMode').flatMap(strings)) {
    const found = namespaceRefusal('--network', mode, true);
    if (found) return found;
  }
  for (const bind of fields(hc, 'Binds').flatMap(strings)) {
    const [source = '', ...others] = bind.split(':');
    // Only `<volume name>:<container path>[:options]`: a host path (or anything else) is a bind mount.
    if (others.length === 0 || !NAME.test(source)) return refusal(`-v ${bind} (a bind mount of the host's files; named volumes are allowed)`);
  }
  for (const mount of fields(hc, 'Mounts').flatMap((m) => (Array.isArray(m) ? m : [m]))) {
    const found = checkMount(asObject(mount));
    if (found) return found;
  }
  for (const driver of fields(hc, 'VolumeDriver').flatMap(strings)) if (driver !== '' && driver !== 'local') return refusal(`--volume-driver ${driver}`);
  for (const opt of fields(hc, 'SecurityOpt').flatMap(strings)) if (!SECURITY_OPTS.test(opt)) return refusal(`--security-opt ${opt}`);
  for (const field of ['MaskedPaths', 'ReadonlyPaths']) if (fields(hc, field).some((v) => v !== null && v !== undefined)) return refusal(`${field} (--security-opt systempaths=unconfined)`);
  for (const runtime of fields(hc, 'Runtime').flatMap(strings)) if (runtime !== '') return refusal(`--runtime ${runtime}`);
  if (any('Annotations')) return refusal('--annotation');
  for (const log of fields(hc, 'LogConfig')) {
    for (const options of fields(asObject(log), 'Config')) {
      for (const key of Object.keys(asObject(options))) if (!LOG_OPTS.has(key.toLowerCase())) return refusal(`--log-opt ${key}`);
    }
  }
  return undefined;
}

function checkMount(mount: Json): string | undefined {
  const types = fields(mount, 'Type').flatMap(strings);
  const type = types[0] ?? '';
  if (types.length !== 1 || (type !== 'volume' && type !== 'tmpfs')) return refusal(`--mount type=${types.join(',') || '(none)'} (bind and other mounts of the host's files; volume and tmpfs mounts are allowed)`);
  if (type === 'volume') {
    for (const source of fields(mount, 'Source').flatMap(strings)) if (source !== '' && !NAME.test(source)) return refusal(`--mount type=volume,source=${source} (a host path)`);
    for (const options of fields(mount, 'VolumeOptions')) {
      for (const driver of fields(asObject(options), 'DriverConfig')) {
        const d = asObject(driver);
        if (fields(d, 'Name').flatMap(strings).some((n) => n !== '' && n !== 'local') || fields(d, 'Options').some(present)) return refusal('--mount volume-driver/volume-opt (a volume driver\'s options can mount the host\'s files)');
      }
    }
  }
  return undefined;
}

function checkExecCreate(body: unknown): string | undefined {
  const odd = nonAsciiKey(body);
  if (odd !== undefined) return `the field ${JSON.stringify(odd)} is not a Docker Engine API field`;
  return fields(asObject(body), 'Privileged').some(present) ? refusal('docker exec --privileged') : undefined;
}

/** Local volumes only; options only for a tmpfs (`type=none,o=bind,device=/` is a bind mount; a block device is the host's disk). */
function checkVolumeCreate(body: unknown): string | undefined {
  const odd = nonAsciiKey(body);
  if (odd !== undefined) return `the field ${JSON.stringify(odd)} is not a Docker Engine API field`;
  const v = asObject(body);
  for (const driver of fields(v, 'Driver').flatMap(strings)) if (driver !== '' && driver !== 'local') return refusal(`docker volume create --driver ${driver}`);
  for (const options of fields(v, 'DriverOpts')) {
    for (const [key, value] of Object.entries(asObject(options))) {
      const k = key.toLowerCase();
      const val = typeof value === 'string' ? value : JSON.stringify(value);
      const tmpfs = (k === 'type' || k === 'device') && val === 'tmpfs';
      const mountOptions = k === 'o' && !/(^|,)\s*r?bind\s*(,|$)/i.test(val);
      if (!tmpfs && !mountOptions) return refusal(`docker volume create --opt ${key}=${val} (only tmpfs volumes may have options)`);
    }
  }
  return undefined;
}

function checkNetworkCreate(body: unknown): string | undefined {
  const odd = nonAsciiKey(body);
  if (odd !== undefined) return `the field ${JSON.stringify(odd)} is not a Docker Engine API field`;
  const n = asObject(body);
  for (const name of fields(n, 'Name').flatMap(strings)) if (name.toLowerCase() === 'host') return refusal('a network named host');
  for (const driver of fields(n, 'Driver').flatMap(strings)) if (driver !== '' && driver !== 'bridge') return refusal(`docker network create --driver ${driver} (bridge networks are allowed)`);
  return undefined;
}
