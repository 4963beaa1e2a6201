import type { DockerImage, ExecutorSpec } from '../plan';
import type { Compilation } from './compilation';
import { lookup } from './elements';
import { envMap, EXECUTOR_KINDS, has, isObj, listOf, MAX_EXPANSION_DEPTH, type Obj, type Scope } from './model';
import { bindParams } from './parameters';

/** Executors: references resolved to bodies, bodies checked, and the executor of a job spec. */

/** Resolves an executor reference (`name` or `{name, …args}`) to an executor body. */
export function resolveExecutor(c: Compilation, value: unknown, scope: Scope, path: string, container: unknown, key: string | number | undefined, depth: number): Obj {
  if (isObj(value) && c.resolvedExecutors.has(value)) return value;
  let ref: unknown = value;
  let args: Obj = {};
  if (isObj(value)) {
    if (EXECUTOR_KINDS.some((k) => has(value, k))) return value; // an inline executor body
    ref = value.name;
    args = { ...value };
    delete args.name;
  }
  if (typeof ref !== 'string') {
    c.report('executor must be a name or a map with name and parameters', path, container, key);
    return {};
  }
  if (depth > MAX_EXPANSION_DEPTH) {
    c.report(`executor '${ref}' expands too deeply (a cycle?)`, path, container, key);
    return {};
  }
  const el = lookup(c, scope, 'executors', ref, path, container, key);
  if (!el || !isObj(el.def)) return {};
  const params = bindParams(c, el, args, path, isObj(value) ? value : container, scope, depth);
  const body = { ...el.def };
  delete body.parameters;
  delete body.description;
  const out = c.subst(body, c.envFor(el.scope, params, el.label), el.path) as Obj;
  c.positions.copy(el.def, out);
  return out;
}

export function checkExecutorBody(c: Compilation, body: Obj, path: string): void {
  const kinds = EXECUTOR_KINDS.filter((k) => has(body, k));
  if (kinds.length > 1) c.report(`an executor has one of docker, machine, macos; found ${kinds.join(' and ')}`, path, body);
  const rc = body.resource_class;
  const templated = (v: unknown) => typeof v === 'string' && v.includes('<<');
  if (has(body, 'docker')) {
    const images = body.docker;
    if (!Array.isArray(images) || images.length === 0) c.report('docker must be a non-empty list of images', `${path}.docker`, body, 'docker');
    else
      images.forEach((img, i) => {
        if (!isObj(img) || (typeof img.image !== 'string' && !templated(img.image))) c.report('each docker entry is a map with image', `${path}.docker[${i}]`, images, i);
      });
  }
  if (has(body, 'machine')) {
    const m = body.machine;
    if (isObj(m)) {
      for (const k of Object.keys(m)) {
        if (k === 'resource_class' && has(body, 'resource_class')) {
          c.report('resource_class is given both inside machine and beside it; give it once, beside machine', `${path}.machine.${k}`, m, k);
        } else if (!['image', 'docker_layer_caching', 'enabled', 'shell', 'resource_class'].includes(k)) {
          c.report(`machine does not take '${k}' (allowed: image, docker_layer_caching)`, `${path}.machine.${k}`, m, k);
        }
      }
      const image = m.image;
      if (typeof rc === 'string' && !templated(rc) && rc.startsWith('windows.') && typeof image === 'string' && !templated(image) && !image.startsWith('windows-')) {
        c.report(`resource_class ${rc} needs a Windows machine image (windows-…); image is ${image}`, `${path}.resource_class`, body, 'resource_class');
      }
    } else if (m !== true && !templated(m)) c.report('machine must be true or a map with image', `${path}.machine`, body, 'machine');
  }
  if (has(body, 'macos')) {
    const m = body.macos;
    if (!isObj(m) || m.xcode === undefined) c.report('macos must be a map with xcode', `${path}.macos`, body, 'macos');
    // Xcode 15 and later run only on macos.* classes; older images also ran on the legacy medium/large.
    const xcode = isObj(m) ? String(m.xcode ?? '') : '';
    const major = /^\d+/.test(xcode) ? Number(/^\d+/.exec(xcode)![0]) : undefined;
    const legacyOk = major !== undefined && major < 15 && ['medium', 'large'].includes(String(rc));
    if (typeof rc === 'string' && !templated(rc) && !rc.startsWith('macos.') && !legacyOk && !templated(xcode)) {
      c.report(`resource_class ${rc} is not a macOS resource class (macos.m1.medium.gen1, …)${major !== undefined && major >= 15 ? ` for Xcode ${xcode}` : ''}`, `${path}.resource_class`, body, 'resource_class');
    }
  }
}

/** The executor of a job spec, from a job body with its executor merged in. */
export function executorSpec(body: Obj): ExecutorSpec {
  if (Array.isArray(body.docker)) {
    const images: DockerImage[] = body.docker.filter(isObj).map((img) => {
      const out: { -readonly [K in keyof DockerImage]: DockerImage[K] } = { image: String(img.image) };
      if (img.name !== undefined) out.name = String(img.name);
      if (img.entrypoint !== undefined) out.entrypoint = listOf(img.entrypoint);
      if (img.command !== undefined) out.command = listOf(img.command);
      if (img.user !== undefined) out.user = String(img.user);
      if (img.environment !== undefined) out.environment = envMap(img.environment);
      if (isObj(img.auth)) out.auth = { username: String(img.auth.username ?? ''), password: String(img.auth.password ?? '') };
      if (isObj(img.aws_auth)) out.awsAuth = envMap(img.aws_auth);
      return out;
    });
    return { kind: 'docker', images };
  }
  if (body.machine !== undefined) {
    const m = body.machine;
    return {
      kind: 'machine',
      ...(isObj(m) && m.image !== undefined ? { image: String(m.image) } : {}),
      ...(isObj(m) && m.docker_layer_caching !== undefined ? { dockerLayerCaching: m.docker_layer_caching === true } : {}),
    };
  }
  if (isObj(body.macos)) return { kind: 'macos', xcode: String(body.macos.xcode) };
  return { kind: 'shell' };
}
