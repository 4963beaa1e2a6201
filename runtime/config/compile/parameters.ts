import type { Compilation } from './compilation';
import { ENV_VAR_NAME, has, isObj, NAME, shown, type Element, type Obj, type Scope } from './model';

/**
 * Parameters: pipeline parameters and pipeline values (bound once per compilation), and the
 * parameters of jobs, commands and executors (bound at each invocation, checked against their
 * declarations and converted to their declared types).
 */

/** Declares the pipeline's parameters and values and installs the lookup `<< pipeline.* >>` uses. */
export function setupPipeline(c: Compilation, root: Obj): void {
  const trigger = c.options.trigger;
  const p = trigger.pipeline ?? {};
  const declared = root.parameters;
  const params = new Map<string, unknown>();
  if (declared !== undefined && !isObj(declared)) c.report('parameters must be a map of pipeline parameter declarations', 'parameters', root, 'parameters');
  const decls = isObj(declared) ? declared : {};
  for (const [name, decl] of Object.entries(decls)) {
    const path = `parameters.${name}`;
    if (!NAME.test(name)) c.report(`pipeline parameter name '${shown(name)}' must start with a letter and use only letters, digits, _ and - (up to 255)`, path, decls, name);
    if (!isObj(decl)) {
      c.report('a pipeline parameter is declared as a map with type and default', path, decls, name);
      continue;
    }
    const type = decl.type;
    if (!['string', 'boolean', 'integer', 'enum'].includes(String(type))) {
      c.report(`pipeline parameter type '${String(type)}' is not allowed; allowed: string, boolean, integer, enum`, `${path}.type`, decl, 'type');
      continue;
    }
    if (!has(decl, 'default')) {
      c.report(`pipeline parameter '${name}' needs a default`, path, decls, name);
      continue;
    }
    checkDecl(c, name, decl, path, decls);
    params.set(name, coerce(c, decl, decl.default, `${path}.default`, decl, 'default', `pipeline parameter '${name}'`));
  }
  for (const [name, value] of Object.entries(trigger.parameters ?? {})) {
    const decl = decls[name];
    if (!isObj(decl)) {
      c.report(`pipeline parameter '${name}' was supplied but is not declared in parameters${Object.keys(decls).length ? ` (declared: ${Object.keys(decls).join(', ')})` : ''}`, 'parameters');
      continue;
    }
    params.set(name, coerce(c, decl, value, `parameters.${name}`, undefined, undefined, `pipeline parameter '${name}'`));
  }
  const branch = trigger.tag !== undefined ? (p.branch ?? '') : (trigger.branch ?? p.branch ?? '');
  const tag = trigger.tag ?? p.tag ?? '';
  const values: Record<string, unknown> = {
    'pipeline.id': p.id ?? '',
    'pipeline.number': p.number ?? 0,
    'pipeline.project.git_url': p.projectGitUrl ?? '',
    'pipeline.project.type': p.projectType ?? 'github',
    'pipeline.project.slug': p.projectSlug ?? '',
    'pipeline.git.tag': tag,
    'pipeline.git.branch': branch,
    'pipeline.git.revision': p.revision ?? '',
    'pipeline.git.base_revision': p.baseRevision ?? '',
    'pipeline.git.default_branch': p.defaultBranch ?? '',
    'pipeline.git.branch.is_default': branch !== '' && branch === p.defaultBranch,
    'pipeline.trigger_source': p.triggerSource ?? '',
    'pipeline.schedule.name': p.scheduleName ?? '',
    'pipeline.schedule.id': p.scheduleId ?? '',
    'pipeline.in_setup': root.setup === true,
  };
  for (const [name, value] of Object.entries(p.event ?? {})) {
    if (name.startsWith('pipeline.event.') && ['string', 'number', 'boolean'].includes(typeof value)) values[name] = value;
  }
  c.pipelineLookup = (name: string) => {
    if (has(values, name)) return { value: values[name] };
    if (name.startsWith('pipeline.parameters.')) {
      const n = name.slice('pipeline.parameters.'.length);
      return params.has(n) ? { value: params.get(n) } : undefined;
    }
    if (/^pipeline\.(trigger_parameters|event|deploy)\./.test(name)) return { value: '' };
    return undefined;
  };
}

function checkDecl(c: Compilation, name: string, decl: Obj, path: string, container: Obj): void {
  if (decl.type === 'enum') {
    if (!Array.isArray(decl.enum) || decl.enum.length === 0) {
      c.report(`enum parameter '${name}' needs an enum: list of allowed values`, path, container, name);
    } else if (has(decl, 'default') && !decl.enum.map(String).includes(String(decl.default))) {
      c.report(`the default '${String(decl.default)}' of enum parameter '${name}' is not one of its values (${decl.enum.map(String).join(', ')})`, `${path}.default`, decl, 'default');
    }
  }
}

/** Checks and converts one parameter value to its declared type. */
function coerce(c: Compilation, decl: Obj, value: unknown, path: string, container: unknown, key: string | number | undefined, what: string): unknown {
  const type = String(decl.type);
  const bad = (allowed: string) => {
    c.report(`${what} is ${type}; ${JSON.stringify(value)} is not ${allowed}`, path, container, key);
    return value;
  };
  if (typeof value === 'string' && /<<\s*(parameters|pipeline|matrix)\./.test(value)) return value; // resolved later
  switch (type) {
    case 'string':
      if (value === null || value === undefined) return '';
      if (typeof value === 'object') return bad('a string');
      return String(value);
    case 'boolean':
      if (typeof value === 'boolean') return value;
      if (typeof value === 'string') {
        const v = value.toLowerCase();
        if (['true', 'yes', 'on', 'y'].includes(v)) return true;
        if (['false', 'no', 'off', 'n'].includes(v)) return false;
      }
      return bad('true or false (or yes/no, on/off)');
    case 'integer':
      if (typeof value === 'number' && Number.isInteger(value)) return value;
      if (typeof value === 'string' && /^-?\d+$/.test(value.trim())) return Number(value);
      return bad('an integer');
    case 'enum': {
      const allowed = Array.isArray(decl.enum) ? decl.enum.map(String) : [];
      if (!allowed.includes(String(value))) return bad(`one of ${allowed.join(', ')}`);
      return typeof value === 'string' ? value : String(value);
    }
    case 'env_var_name':
      if (typeof value !== 'string' || !ENV_VAR_NAME.test(value)) return bad('an environment variable name (letters, digits and _, not starting with a digit)');
      return value;
    case 'steps':
      if (value === null || value === undefined) return [];
      if (isObj(value) || typeof value === 'string') return [value];
      if (!Array.isArray(value)) return bad('a list of steps');
      return value;
    case 'executor':
      if (typeof value !== 'string' && !isObj(value)) return bad('an executor name or a map with name');
      return value;
    default:
      c.report(`parameter type '${type}' is not known; allowed: string, boolean, integer, enum, executor, steps, env_var_name`, path, container, key);
      return value;
  }
}

/**
 * Binds invocation arguments to an element's declared parameters. Steps arguments are expanded in
 * the caller's scope and executor arguments resolved there, because names in them are the caller's.
 */
export function bindParams(c: Compilation, element: Element, args: Obj, argsPath: string, argsContainer: unknown, caller: Scope, depth: number): Map<string, unknown> {
  const params = new Map<string, unknown>();
  const declsRaw = isObj(element.def) ? element.def.parameters : undefined;
  if (declsRaw !== undefined && declsRaw !== null && !isObj(declsRaw)) {
    c.report('parameters must be a map', `${element.path}.parameters`, element.def, 'parameters');
  }
  const decls = isObj(declsRaw) ? declsRaw : {};
  for (const name of Object.keys(args)) {
    if (!has(decls, name)) {
      const declared = Object.keys(decls);
      c.report(`${element.label} has no parameter '${name}' (${declared.length ? `declared: ${declared.join(', ')}` : 'it declares none'})`, `${argsPath}.${name}`, argsContainer, name);
    }
  }
  for (const [name, declRaw] of Object.entries(decls)) {
    const path = `${element.path}.parameters.${name}`;
    if (!isObj(declRaw)) {
      c.report(`parameter '${name}' is declared as a map with type`, path, decls, name);
      continue;
    }
    const decl = declRaw;
    if (!NAME.test(name)) c.report(`parameter name '${shown(name)}' must start with a letter and use only letters, digits, _ and - (up to 255)`, path, decls, name);
    checkDecl(c, name, decl, path, decls);
    if (has(args, name)) {
      let v = coerce(c, decl, args[name], `${argsPath}.${name}`, argsContainer, name, `parameter '${name}' of ${element.label}`);
      if (decl.type === 'steps' && Array.isArray(v)) v = c.expandStepsArg(v, caller, `${argsPath}.${name}`, depth);
      if (decl.type === 'executor' && (typeof v === 'string' || isObj(v))) v = c.resolveExecutorArg(v, caller, `${argsPath}.${name}`, depth);
      params.set(name, v);
    } else if (has(decl, 'default')) {
      params.set(name, coerce(c, decl, decl.default, `${path}.default`, decl, 'default', `parameter '${name}' of ${element.label}`));
    } else {
      c.report(`${element.label} needs parameter '${name}' (${String(decl.type)}), which has no default`, argsPath, argsContainer);
      params.set(name, decl.type === 'steps' ? [] : '');
    }
  }
  return params;
}
