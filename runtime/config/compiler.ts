import { emitYaml } from './emit-yaml';
import { evaluateExpression, evaluateLogic, LogicError, regexMatchesWhole, truthy, type NameLookup } from './logic';
import type { OrbSource } from './orb-source';
import type {
  CompileResult,
  ConfigProblem,
  DockerImage,
  ExecutorSpec,
  JobPlan,
  JobSpec,
  Plan,
  RequiredStatus,
  Requirement,
  Step,
  StepWhen,
  TriggerContext,
  WorkflowPlan,
} from './plan';
import { substitute, type SubstEnv } from './substitute';
import { DEFAULT_LIMITS, loadYaml, Positions, type LoadLimits } from './yaml-loader';

export type { OrbSource } from './orb-source';

export interface CompileOptions {
  readonly trigger: TriggerContext;
  readonly orbs?: OrbSource;
  /** Overrides of the input bounds (tests use smaller ones). */
  readonly limits?: Partial<LoadLimits>;
  /**
   * Parsed orb documents kept between compilations (orb versions are immutable, so a long-lived
   * caller such as the conductor can keep one; see createOrbDocumentCache). Without it every
   * compilation parses the orbs it imports.
   */
  readonly orbCache?: OrbDocumentCache;
}

export interface CachedOrbDocument {
  readonly value: unknown;
  readonly positions: Positions;
}

export interface OrbDocumentCache {
  get(source: string): CachedOrbDocument | undefined;
  set(source: string, doc: CachedOrbDocument): void;
}

/** A small LRU of parsed orb documents, keyed by the packed orb source. */
export function createOrbDocumentCache(maxEntries = 100): OrbDocumentCache {
  const entries = new Map<string, CachedOrbDocument>();
  return {
    get(source) {
      const hit = entries.get(source);
      if (hit) {
        entries.delete(source);
        entries.set(source, hit);
      }
      return hit;
    },
    set(source, doc) {
      entries.set(source, doc);
      if (entries.size > maxEntries) entries.delete(entries.keys().next().value as string);
    },
  };
}

type Obj = Record<string, unknown>;

const NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;
const ENV_VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const STATUSES: readonly RequiredStatus[] = ['success', 'failed', 'canceled', 'not_run', 'unauthorized', 'terminal'];
const BUILTIN_STEPS = new Set([
  'run',
  'checkout',
  'setup_remote_docker',
  'add_ssh_keys',
  'save_cache',
  'restore_cache',
  'store_artifacts',
  'store_test_results',
  'persist_to_workspace',
  'attach_workspace',
  'deploy', // deprecated alias of run, still in real files
]);
const WORKFLOW_JOB_KEYS = new Set(['requires', 'name', 'context', 'filters', 'matrix', 'type', 'pre-steps', 'post-steps', 'serial-group', 'override-with']);
const EXECUTOR_KINDS = ['docker', 'machine', 'macos'] as const;
/** How deep commands may invoke commands (and orbs import orbs) before we call it a cycle. */
const MAX_EXPANSION_DEPTH = 40;
/** Most jobs one workflow may expand to (matrix products grow fast). */
const MAX_WORKFLOW_JOBS = 2000;
/** Most jobs the whole config may expand to (aliases can repeat a large workflow cheaply). */
const MAX_TOTAL_JOBS = 5_000;
/** Most steps expanded in one compilation (commands fanning out into commands grow exponentially). */
const MAX_TOTAL_STEPS = 10_000;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (o: Obj, k: string) => Object.prototype.hasOwnProperty.call(o, k);

/** One namespace of reusable elements: the config itself, or one imported orb. */
interface Scope {
  /** `config` or `orb circleci/node@5.0.2`. */
  readonly label: string;
  /** Path prefix of this scope's elements in errors (`` or `orbs.node.`). */
  readonly prefix: string;
  readonly inOrb: boolean;
  readonly commands: Obj;
  readonly jobs: Obj;
  readonly executors: Obj;
  readonly orbs: Map<string, Scope>;
}

type ElementKind = 'commands' | 'jobs' | 'executors';

interface Element {
  readonly def: unknown;
  readonly scope: Scope;
  readonly path: string;
  readonly label: string;
}

/** A builtin step after expansion: its key and body, as in the processed config. */
interface BuiltinStep {
  readonly key: string;
  readonly body: unknown;
  readonly path: string;
}

class Compilation {
  readonly problems: ConfigProblem[] = [];
  readonly positions = new Positions();
  private readonly resolvedExecutors = new WeakSet<object>();
  private readonly expandedStepArgs = new WeakSet<object>();
  pipelineLookup: NameLookup = () => undefined;
  totalJobs = 0;
  private totalSteps = 0;
  private stepBudgetReported = false;
  private readonly orbCache = new Map<string, Scope>();

  constructor(
    readonly options: CompileOptions,
    readonly limits: LoadLimits,
  ) {}

  report(message: string, path?: string, container?: unknown, key?: string | number): void {
    if (this.problems.length >= 500) return;
    const pos = container !== undefined ? this.positions.of(container, key) : undefined;
    this.problems.push({ message, ...(path ? { path } : {}), ...(pos ? { line: pos.line, column: pos.column } : {}) });
  }

  readonly reporter = (message: string, path: string, container?: unknown, key?: string | number) => this.report(message, path, container, key);

  // ---------------------------------------------------------------- pipeline values and parameters

  setupPipeline(root: Obj): void {
    const trigger = this.options.trigger;
    const p = trigger.pipeline ?? {};
    const declared = root.parameters;
    const params = new Map<string, unknown>();
    if (declared !== undefined && !isObj(declared)) this.report('parameters must be a map of pipeline parameter declarations', 'parameters', root, 'parameters');
    const decls = isObj(declared) ? declared : {};
    for (const [name, decl] of Object.entries(decls)) {
      const path = `parameters.${name}`;
      if (!NAME.test(name)) this.report(`pipeline parameter name '${name}' must start with a letter and use only letters, digits, _ and -`, path, decls, name);
      if (!isObj(decl)) {
        this.report('a pipeline parameter is declared as a map with type and default', path, decls, name);
        continue;
      }
      const type = decl.type;
      if (!['string', 'boolean', 'integer', 'enum'].includes(String(type))) {
        this.report(`pipeline parameter type '${String(type)}' is not allowed; allowed: string, boolean, integer, enum`, `${path}.type`, decl, 'type');
        continue;
      }
      if (!has(decl, 'default')) {
        this.report(`pipeline parameter '${name}' needs a default`, path, decls, name);
        continue;
      }
      this.checkDecl(name, decl, path, decls);
      params.set(name, this.coerce(decl, decl.default, `${path}.default`, decl, 'default', `pipeline parameter '${name}'`));
    }
    for (const [name, value] of Object.entries(trigger.parameters ?? {})) {
      const decl = decls[name];
      if (!isObj(decl)) {
        this.report(`pipeline parameter '${name}' was supplied but is not declared in parameters${Object.keys(decls).length ? ` (declared: ${Object.keys(decls).join(', ')})` : ''}`, 'parameters');
        continue;
      }
      params.set(name, this.coerce(decl, value, `parameters.${name}`, undefined, undefined, `pipeline parameter '${name}'`));
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
      'pipeline.schedule.id': '',
      'pipeline.in_setup': root.setup === true,
    };
    this.pipelineLookup = (name: string) => {
      if (has(values, name)) return { value: values[name] };
      if (name.startsWith('pipeline.parameters.')) {
        const n = name.slice('pipeline.parameters.'.length);
        return params.has(n) ? { value: params.get(n) } : undefined;
      }
      if (/^pipeline\.(trigger_parameters|event|deploy)\./.test(name)) return { value: '' };
      return undefined;
    };
  }

  /** The lookup used inside orbs: pipeline values, but not pipeline parameters. */
  readonly orbPipelineLookup: NameLookup = (name) => (name.startsWith('pipeline.parameters.') ? undefined : this.pipelineLookup(name));

  private checkDecl(name: string, decl: Obj, path: string, container: Obj): void {
    if (decl.type === 'enum') {
      if (!Array.isArray(decl.enum) || decl.enum.length === 0) {
        this.report(`enum parameter '${name}' needs an enum: list of allowed values`, path, container, name);
      } else if (has(decl, 'default') && !decl.enum.map(String).includes(String(decl.default))) {
        this.report(`the default '${String(decl.default)}' of enum parameter '${name}' is not one of its values (${decl.enum.map(String).join(', ')})`, `${path}.default`, decl, 'default');
      }
    }
  }

  /** Checks and converts one parameter value to its declared type. */
  private coerce(decl: Obj, value: unknown, path: string, container: unknown, key: string | number | undefined, what: string): unknown {
    const type = String(decl.type);
    const bad = (allowed: string) => {
      this.report(`${what} is ${type}; ${JSON.stringify(value)} is not ${allowed}`, path, container, key);
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
        this.report(`parameter type '${type}' is not known; allowed: string, boolean, integer, enum, executor, steps, env_var_name`, path, container, key);
        return value;
    }
  }

  /**
   * Binds invocation arguments to an element's declared parameters. Steps arguments are expanded in
   * the caller's scope and executor arguments resolved there, because names in them are the caller's.
   */
  private bindParams(element: Element, args: Obj, argsPath: string, argsContainer: unknown, caller: Scope, depth: number): Map<string, unknown> {
    const params = new Map<string, unknown>();
    const declsRaw = isObj(element.def) ? element.def.parameters : undefined;
    if (declsRaw !== undefined && declsRaw !== null && !isObj(declsRaw)) {
      this.report('parameters must be a map', `${element.path}.parameters`, element.def, 'parameters');
    }
    const decls = isObj(declsRaw) ? declsRaw : {};
    for (const [name, value] of Object.entries(args)) {
      if (!has(decls, name)) {
        const declared = Object.keys(decls);
        this.report(
          `${element.label} has no parameter '${name}' (${declared.length ? `declared: ${declared.join(', ')}` : 'it declares none'})`,
          `${argsPath}.${name}`,
          argsContainer,
          name,
        );
      }
      void value;
    }
    for (const [name, declRaw] of Object.entries(decls)) {
      const path = `${element.path}.parameters.${name}`;
      if (!isObj(declRaw)) {
        this.report(`parameter '${name}' is declared as a map with type`, path, decls, name);
        continue;
      }
      const decl = declRaw;
      if (!NAME.test(name)) this.report(`parameter name '${name}' must start with a letter and use only letters, digits, _ and -`, path, decls, name);
      this.checkDecl(name, decl, path, decls);
      if (has(args, name)) {
        let v = this.coerce(decl, args[name], `${argsPath}.${name}`, argsContainer, name, `parameter '${name}' of ${element.label}`);
        if (decl.type === 'steps' && Array.isArray(v)) v = this.expandStepsArg(v, caller, `${argsPath}.${name}`, depth);
        if (decl.type === 'executor' && (typeof v === 'string' || isObj(v))) v = this.resolveExecutorArg(v, caller, `${argsPath}.${name}`, depth);
        params.set(name, v);
      } else if (has(decl, 'default')) {
        params.set(name, this.coerce(decl, decl.default, `${path}.default`, decl, 'default', `parameter '${name}' of ${element.label}`));
      } else {
        this.report(`${element.label} needs parameter '${name}' (${String(decl.type)}), which has no default`, argsPath, argsContainer);
        params.set(name, decl.type === 'steps' ? [] : '');
      }
    }
    return params;
  }

  private expandStepsArg(steps: unknown[], caller: Scope, path: string, depth: number): unknown[] {
    const out = this.expandSteps(steps, caller, path, depth + 1, this.envFor(caller)).map((s) => processedStep(s));
    this.expandedStepArgs.add(out);
    return out;
  }

  private resolveExecutorArg(value: string | Obj, caller: Scope, path: string, depth: number): Obj {
    const body = this.resolveExecutor(value, caller, path, undefined, undefined, depth + 1);
    this.resolvedExecutors.add(body);
    return body;
  }

  envFor(scope: Scope, params?: Map<string, unknown>, label?: string): SubstEnv {
    return { params: params ?? new Map(), label, pipeline: scope.inOrb ? this.orbPipelineLookup : this.pipelineLookup, inOrb: scope.inOrb };
  }

  // ---------------------------------------------------------------- elements

  lookup(scope: Scope, kind: ElementKind, ref: string, path: string, container: unknown, key?: string | number): Element | undefined {
    const singular = kind === 'commands' ? 'command' : kind === 'jobs' ? 'job' : 'executor';
    const slash = ref.indexOf('/');
    if (slash > 0) {
      const alias = ref.slice(0, slash);
      const name = ref.slice(slash + 1);
      const orb = scope.orbs.get(alias);
      if (!orb) {
        const known = [...scope.orbs.keys()];
        this.report(`${singular} '${ref}': no orb '${alias}' is imported${scope.inOrb ? ` in ${scope.label}` : ''} (${known.length ? `imported: ${known.join(', ')}` : 'no orbs are imported'})`, path, container, key);
        return undefined;
      }
      if (!has(orb[kind], name)) {
        const known = Object.keys(orb[kind]);
        this.report(`${singular} '${ref}': ${orb.label} has no ${singular} '${name}'${known.length ? ` (it has: ${known.join(', ')})` : ''}`, path, container, key);
        return undefined;
      }
      return { def: orb[kind][name], scope: orb, path: `${orb.prefix}${kind}.${name}`, label: `${singular} ${ref}` };
    }
    if (!has(scope[kind], ref)) {
      const known = Object.keys(scope[kind]);
      this.report(`${singular} '${ref}' is not defined${scope.inOrb ? ` in ${scope.label}` : ''}${known.length && known.length < 40 ? ` (defined: ${known.join(', ')})` : ''}`, path, container, key);
      return undefined;
    }
    return { def: scope[kind][ref], scope, path: `${scope.prefix}${kind}.${ref}`, label: `${singular} ${scope.inOrb ? scope.label.replace(/^orb /, '') + ' ' : ''}${ref}`.replace(/ +/g, ' ') };
  }

  /** Like lookup, for an element that may legitimately be absent (no problem is reported). */
  tryLookup(scope: Scope, kind: ElementKind, ref: string): Element | undefined {
    const slash = ref.indexOf('/');
    const target = slash > 0 ? scope.orbs.get(ref.slice(0, slash)) : scope;
    const name = slash > 0 ? ref.slice(slash + 1) : ref;
    if (!target || !has(target[kind], name)) return undefined;
    return { def: target[kind][name], scope: target, path: `${target.prefix}${kind}.${name}`, label: `${kind.slice(0, -1)} ${ref}` };
  }

  // ---------------------------------------------------------------- executors

  /** Resolves an executor reference (`name` or `{name, …args}`) to an executor body. */
  resolveExecutor(value: unknown, scope: Scope, path: string, container: unknown, key: string | number | undefined, depth: number): Obj {
    if (isObj(value) && this.resolvedExecutors.has(value)) return value;
    let ref: unknown = value;
    let args: Obj = {};
    if (isObj(value)) {
      if (EXECUTOR_KINDS.some((k) => has(value, k))) return value; // an inline executor body
      ref = value.name;
      args = { ...value };
      delete args.name;
    }
    if (typeof ref !== 'string') {
      this.report('executor must be a name or a map with name and parameters', path, container, key);
      return {};
    }
    if (depth > MAX_EXPANSION_DEPTH) {
      this.report(`executor '${ref}' expands too deeply (a cycle?)`, path, container, key);
      return {};
    }
    const el = this.lookup(scope, 'executors', ref, path, container, key);
    if (!el || !isObj(el.def)) return {};
    const params = this.bindParams(el, args, path, isObj(value) ? value : container, scope, depth);
    const body = { ...el.def };
    delete body.parameters;
    delete body.description;
    const out = substitute(body, this.envFor(el.scope, params, el.label), el.path, this.reporter, this.positions) as Obj;
    this.positions.copy(el.def, out);
    return out;
  }

  checkExecutorBody(body: Obj, path: string): void {
    const kinds = EXECUTOR_KINDS.filter((k) => has(body, k));
    if (kinds.length > 1) this.report(`an executor has one of docker, machine, macos; found ${kinds.join(' and ')}`, path, body);
    const rc = body.resource_class;
    const templated = (v: unknown) => typeof v === 'string' && v.includes('<<');
    if (has(body, 'docker')) {
      const images = body.docker;
      if (!Array.isArray(images) || images.length === 0) this.report('docker must be a non-empty list of images', `${path}.docker`, body, 'docker');
      else
        images.forEach((img, i) => {
          if (!isObj(img) || (typeof img.image !== 'string' && !templated(img.image))) this.report('each docker entry is a map with image', `${path}.docker[${i}]`, images, i);
        });
    }
    if (has(body, 'machine')) {
      const m = body.machine;
      if (isObj(m)) {
        for (const k of Object.keys(m)) {
          if (k === 'resource_class' && has(body, 'resource_class')) {
            this.report('resource_class is given both inside machine and beside it; give it once, beside machine', `${path}.machine.${k}`, m, k);
          } else if (!['image', 'docker_layer_caching', 'enabled', 'shell', 'resource_class'].includes(k)) {
            this.report(`machine does not take '${k}' (allowed: image, docker_layer_caching)`, `${path}.machine.${k}`, m, k);
          }
        }
        const image = m.image;
        if (typeof rc === 'string' && !templated(rc) && rc.startsWith('windows.') && typeof image === 'string' && !templated(image) && !image.startsWith('windows-')) {
          this.report(`resource_class ${rc} needs a Windows machine image (windows-…); image is ${image}`, `${path}.resource_class`, body, 'resource_class');
        }
      } else if (m !== true && !templated(m)) this.report('machine must be true or a map with image', `${path}.machine`, body, 'machine');
    }
    if (has(body, 'macos')) {
      const m = body.macos;
      if (!isObj(m) || m.xcode === undefined) this.report('macos must be a map with xcode', `${path}.macos`, body, 'macos');
      // Xcode 15 and later run only on macos.* classes; older images also ran on the legacy medium/large.
      const xcode = isObj(m) ? String(m.xcode ?? '') : '';
      const major = /^\d+/.test(xcode) ? Number(/^\d+/.exec(xcode)![0]) : undefined;
      const legacyOk = major !== undefined && major < 15 && ['medium', 'large'].includes(String(rc));
      if (typeof rc === 'string' && !templated(rc) && !rc.startsWith('macos.') && !legacyOk && !templated(xcode)) {
        this.report(`resource_class ${rc} is not a macOS resource class (macos.m1.medium.gen1, …)${major !== undefined && major >= 15 ? ` for Xcode ${xcode}` : ''}`, `${path}.resource_class`, body, 'resource_class');
      }
    }
  }

  // ---------------------------------------------------------------- steps

  /** Expands steps in `scope`: commands invoked, `when` steps resolved, `steps` spliced flat. */
  expandSteps(steps: unknown, scope: Scope, path: string, depth: number, env: SubstEnv): BuiltinStep[] {
    const out: BuiltinStep[] = [];
    if (steps === null || steps === undefined) return out;
    if (!Array.isArray(steps)) {
      this.report('steps must be a list', path);
      return out;
    }
    if (depth > MAX_EXPANSION_DEPTH) {
      this.report(`steps expand more than ${MAX_EXPANSION_DEPTH} levels deep (does a command invoke itself?)`, path);
      return out;
    }
    steps.forEach((step, i) => {
      const p = `${path}[${i}]`;
      if (++this.totalSteps > MAX_TOTAL_STEPS) {
        if (!this.stepBudgetReported) this.report(`the config expands to more than ${MAX_TOTAL_STEPS} steps (commands invoking commands multiply)`, p, steps, i);
        this.stepBudgetReported = true;
        return;
      }
      let key: string;
      let body: unknown;
      if (typeof step === 'string') {
        key = step;
        body = undefined;
      } else if (isObj(step)) {
        const keys = Object.keys(step);
        if (keys.length !== 1) {
          this.report(`a step is a map with exactly one key (the step or command name); found ${keys.join(', ') || 'none'}`, p, steps, i);
          return;
        }
        key = keys[0];
        body = step[key];
      } else {
        this.report('a step is a name or a map with one key', p, steps, i);
        return;
      }
      // Version 2.0 accepted hyphenated spellings of built-in steps (restore-cache); so do we,
      // unless a command of that name exists.
      if (!BUILTIN_STEPS.has(key) && key.includes('-') && BUILTIN_STEPS.has(key.replace(/-/g, '_')) && !has(scope.commands, key)) key = key.replace(/-/g, '_');
      if (BUILTIN_STEPS.has(key)) {
        out.push({ key, body, path: `${p}.${key}` });
        return;
      }
      if (key === 'steps') {
        if (Array.isArray(body)) {
          if (this.expandedStepArgs.has(body)) out.push(...this.expandSteps(body, scope, p, depth + 1, env));
          else out.push(...this.expandSteps(body, scope, `${p}.steps`, depth + 1, env));
        } else if (body !== null && body !== undefined) this.report('steps takes a list of steps', `${p}.steps`, step, 'steps');
        return;
      }
      if (key === 'when' || key === 'unless') {
        if (!isObj(body) || !has(body, 'condition')) {
          this.report(`a ${key} step is a map with condition and steps`, `${p}.${key}`, step, key);
          return;
        }
        let result = false;
        try {
          result = evaluateLogic(body.condition, scope.inOrb ? this.orbPipelineLookup : this.pipelineLookup);
        } catch (error) {
          if (!(error instanceof LogicError)) throw error;
          this.report(error.message, `${p}.${key}.condition`, body, 'condition');
        }
        if (key === 'unless') result = !result;
        if (result) out.push(...this.expandSteps(body.steps, scope, `${p}.${key}.steps`, depth + 1, env));
        return;
      }
      // A command: from this scope or an imported orb.
      if (body !== undefined && body !== null && !isObj(body)) {
        this.report(`'${key}' is not a built-in step; as a command it takes a map of parameters, not ${JSON.stringify(body).slice(0, 40)}`, `${p}.${key}`, step, key);
        return;
      }
      const el = this.lookup(scope, 'commands', key, p, steps, i);
      if (!el) return;
      if (!isObj(el.def)) {
        this.report(`${el.label} must be a map with steps`, el.path);
        return;
      }
      const args = isObj(body) ? body : {};
      const params = this.bindParams(el, args, `${p}.${key}`, step, scope, depth);
      const cmdEnv = this.envFor(el.scope, params, el.label);
      const cmdSteps = substitute(el.def.steps, cmdEnv, `${el.path}.steps`, this.reporter, this.positions);
      out.push(...this.expandSteps(cmdSteps, el.scope, `${el.path}.steps`, depth + 1, cmdEnv));
    });
    return out;
  }

  // ---------------------------------------------------------------- jobs

  expandJob(
    element: Element,
    args: Obj,
    argsPath: string,
    argsContainer: unknown,
    caller: Scope,
    preSteps: unknown,
    postSteps: unknown,
    matrixEnv: SubstEnv,
  ): { spec?: JobSpec; processed: Obj; kind: 'build' | 'approval' | 'no-op' } {
    const def = element.def;
    if (!isObj(def)) {
      this.report(`${element.label} must be a map`, element.path);
      return { processed: {}, kind: 'build' };
    }
    const declaredType = def.type;
    if (declaredType === 'approval') return { processed: { type: 'approval' }, kind: 'approval' };
    if (declaredType === 'no-op') return { processed: { type: 'no-op' }, kind: 'no-op' };
    const params = this.bindParams(element, args, argsPath, argsContainer, caller, 0);
    const env = this.envFor(element.scope, params, element.label);
    const raw = { ...def };
    delete raw.parameters;
    delete raw.description;
    const body = substitute(raw, env, element.path, this.reporter, this.positions) as Obj;
    this.positions.copy(def, body);

    // Executor: a reusable one merged under the job's own keys; environments merge, the job winning.
    let merged: Obj = body;
    const jobKinds = EXECUTOR_KINDS.filter((k) => has(body, k));
    if (has(body, 'executor')) {
      const base = this.resolveExecutor(body.executor, element.scope, `${element.path}.executor`, body, 'executor', 0);
      // The job's own executor keys replace the executor's (a job may swap the image of a reusable executor).
      const baseKept = jobKinds.length ? Object.fromEntries(Object.entries(base).filter(([k]) => !(EXECUTOR_KINDS as readonly string[]).includes(k))) : base;
      merged = { ...baseKept, ...body };
      delete merged.executor;
      if (isObj(base.environment) || isObj(body.environment)) {
        merged.environment = { ...envMap(base.environment), ...envMap(body.environment) };
      }
      this.positions.copy(body, merged);
    }
    this.checkExecutorBody(merged, element.path);
    const kinds = EXECUTOR_KINDS.filter((k) => has(merged, k));
    if (kinds.length === 0) this.report(`${element.label} has no executor: give it docker, machine, macos or executor`, element.path, def);

    const pre = this.expandSteps(preSteps ?? [], caller, `${argsPath}.pre-steps`, 1, matrixEnv);
    if (body.steps === undefined) this.report(`${element.label} has no steps`, element.path, def);
    const steps = this.expandSteps(body.steps, element.scope, `${element.path}.steps`, 1, env);
    const post = this.expandSteps(postSteps ?? [], caller, `${argsPath}.post-steps`, 1, matrixEnv);
    const all = [...pre, ...steps, ...post];

    const planSteps = all.map((s) => this.toPlanStep(s)).filter((s): s is Step => s !== undefined);
    let parallelism = 1;
    if (merged.parallelism !== undefined) {
      const n = typeof merged.parallelism === 'string' ? Number(merged.parallelism) : merged.parallelism;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) this.report(`parallelism must be a positive integer, not ${JSON.stringify(merged.parallelism)}`, `${element.path}.parallelism`, body, 'parallelism');
      else parallelism = n;
    }
    const spec: JobSpec = {
      executor: this.executorSpec(merged, element.path),
      steps: planSteps,
      environment: envMap(merged.environment),
      workingDirectory: typeof merged.working_directory === 'string' ? merged.working_directory : '~/project',
      parallelism,
      ...(merged.resource_class !== undefined ? { resourceClass: String(merged.resource_class) } : {}),
      ...(typeof merged.shell === 'string' ? { shell: merged.shell } : {}),
    };
    const processed: Obj = {};
    for (const [k, v] of Object.entries(merged)) {
      if (k === 'steps' || k === 'type') continue;
      processed[k] = v;
    }
    processed.steps = all.map(processedStep);
    return { spec, processed, kind: 'build' };
  }

  private executorSpec(body: Obj, path: string): ExecutorSpec {
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
    void path;
    return { kind: 'shell' };
  }

  private toPlanStep(s: BuiltinStep): Step | undefined {
    const { key, body, path } = s;
    const b: Obj = isObj(body) ? body : {};
    const str = (v: unknown) => (v === undefined || v === null ? undefined : String(v));
    const name = (fallback: string) => str(b.name) ?? fallback;
    const when = (): StepWhen => {
      const w = b.when ?? 'on_success';
      if (w === 'on_success' || w === 'on_fail' || w === 'always') return w;
      this.report(`when must be on_success, on_fail or always, not ${JSON.stringify(w)}`, `${path}.when`, body, 'when');
      return 'on_success';
    };
    switch (key) {
      case 'run':
      case 'deploy': {
        if (typeof body === 'string') return { type: 'run', name: firstLine(body), command: body, when: 'on_success' };
        if (!isObj(body) || body.command === undefined || body.command === null) {
          this.report('run needs a command (run: <command> or run: {command: …})', path, body);
          return undefined;
        }
        const command = String(body.command);
        let timeout: number | undefined;
        if (b.no_output_timeout !== undefined) {
          timeout = parseDuration(b.no_output_timeout);
          if (timeout === undefined) this.report(`no_output_timeout must be a duration like 10m, 1h or 30s, not ${JSON.stringify(b.no_output_timeout)}`, `${path}.no_output_timeout`, body, 'no_output_timeout');
        }
        return {
          type: 'run',
          name: name(firstLine(command)),
          command,
          ...(b.shell !== undefined ? { shell: String(b.shell) } : {}),
          ...(b.environment !== undefined ? { environment: envMap(b.environment) } : {}),
          ...(b.background !== undefined ? { background: truthy(b.background) && b.background !== 'false' } : {}),
          ...(b.working_directory !== undefined ? { workingDirectory: String(b.working_directory) } : {}),
          ...(timeout !== undefined ? { noOutputTimeoutMs: timeout } : {}),
          when: when(),
        };
      }
      case 'checkout':
        return { type: 'checkout', name: name('Checkout code'), ...(b.path !== undefined ? { path: String(b.path) } : {}) };
      case 'setup_remote_docker':
        return {
          type: 'setup_remote_docker',
          name: name('Setup a remote Docker engine'),
          ...(b.version !== undefined ? { version: String(b.version) } : {}),
          ...(b.docker_layer_caching !== undefined ? { dockerLayerCaching: b.docker_layer_caching === true } : {}),
        };
      case 'add_ssh_keys':
        return { type: 'add_ssh_keys', name: name('Add SSH keys'), ...(b.fingerprints !== undefined ? { fingerprints: listOf(b.fingerprints) } : {}) };
      case 'save_cache':
        if (b.key === undefined || b.paths === undefined) this.report('save_cache needs key and paths', path, body);
        return { type: 'save_cache', name: name('Saving Cache'), key: String(b.key ?? ''), paths: listOf(b.paths), when: when() };
      case 'restore_cache': {
        const keys = b.keys !== undefined ? listOf(b.keys) : b.key !== undefined ? [String(b.key)] : [];
        if (keys.length === 0) this.report('restore_cache needs key or keys', path, body);
        return { type: 'restore_cache', name: name('Restoring Cache'), keys };
      }
      case 'store_artifacts':
        if (b.path === undefined) this.report('store_artifacts needs path', path, body);
        return { type: 'store_artifacts', name: name('Uploading artifacts'), path: String(b.path ?? ''), ...(b.destination !== undefined ? { destination: String(b.destination) } : {}) };
      case 'store_test_results':
        if (b.path === undefined) this.report('store_test_results needs path', path, body);
        return { type: 'store_test_results', name: name('Uploading test results'), path: String(b.path ?? '') };
      case 'persist_to_workspace':
        if (b.root === undefined || b.paths === undefined) this.report('persist_to_workspace needs root and paths', path, body);
        return { type: 'persist_to_workspace', name: name('Persisting to Workspace'), root: String(b.root ?? '.'), paths: listOf(b.paths) };
      case 'attach_workspace':
        if (b.at === undefined) this.report('attach_workspace needs at', path, body);
        return { type: 'attach_workspace', name: name('Attaching Workspace'), at: String(b.at ?? '.') };
      default:
        return undefined;
    }
  }

  // ---------------------------------------------------------------- scopes and orbs

  async buildScope(doc: Obj, label: string, prefix: string, inOrb: boolean, depth: number): Promise<Scope> {
    const section = (k: ElementKind): Obj => {
      const v = doc[k];
      if (v === undefined || v === null) return {};
      if (!isObj(v)) {
        this.report(`${k} must be a map`, `${prefix}${k}`, doc, k);
        return {};
      }
      for (const name of Object.keys(v)) {
        if (!NAME.test(name)) this.report(`${k.slice(0, -1)} name '${name}' must start with a letter and use only letters, digits, _ and -`, `${prefix}${k}.${name}`, v, name);
      }
      return v;
    };
    const scope: Scope = { label, prefix, inOrb, commands: section('commands'), jobs: section('jobs'), executors: section('executors'), orbs: new Map() };
    for (const [name, ex] of Object.entries(scope.executors)) {
      if (!isObj(ex)) this.report('an executor is a map (docker, machine or macos, and options)', `${prefix}executors.${name}`, scope.executors, name);
      else this.checkExecutorBody(ex, `${prefix}executors.${name}`);
    }
    for (const [name, job] of Object.entries(scope.jobs)) {
      if (!isObj(job)) this.report('a job is a map with an executor and steps', `${prefix}jobs.${name}`, scope.jobs, name);
      else if (job.type === undefined || job.type === 'build' || job.type === 'release') {
        if (!has(job, 'steps')) this.report(`job '${name}' has no steps`, `${prefix}jobs.${name}`, scope.jobs, name);
        if (!has(job, 'executor')) this.checkExecutorBody(job, `${prefix}jobs.${name}`);
      } else if (!['approval', 'no-op'].includes(String(job.type))) {
        this.report(`job type '${String(job.type)}' is not allowed; allowed: build, approval, no-op, release`, `${prefix}jobs.${name}.type`, job, 'type');
      }
    }
    for (const [name, cmd] of Object.entries(scope.commands)) {
      if (!isObj(cmd) || !has(cmd, 'steps')) this.report(`command '${name}' must be a map with steps`, `${prefix}commands.${name}`, scope.commands, name);
    }
    const orbs = doc.orbs;
    if (orbs !== undefined && orbs !== null) {
      if (!isObj(orbs)) this.report('orbs must be a map of alias: namespace/orb@version', `${prefix}orbs`, doc, 'orbs');
      else {
        for (const [alias, ref] of Object.entries(orbs)) {
          const path = `${prefix}orbs.${alias}`;
          if (isObj(ref)) {
            if (depth >= 8) {
              this.report('inline orbs nest too deeply', path, orbs, alias);
              continue;
            }
            scope.orbs.set(alias, await this.buildScope(ref, `inline orb ${alias}`, `${path}.`, true, depth + 1));
            continue;
          }
          const m = typeof ref === 'string' ? /^\s*([a-z0-9][\w-]*)\/([a-z0-9][\w-]*)@(\d+(?:\.\d+){0,2}|volatile|dev:[\w.-]+)\s*$/i.exec(ref) : null;
          if (!m) {
            this.report(`orb reference ${JSON.stringify(ref)} must be namespace/orb@version, with version x.y.z, x.y, x, volatile or dev:label (or an inline orb map)`, path, orbs, alias);
            continue;
          }
          const resolved = await this.importOrb(`${m[1]}/${m[2]}`, m[3], path, orbs, alias, depth);
          if (resolved) scope.orbs.set(alias, resolved);
        }
      }
    }
    return scope;
  }

  private async importOrb(name: string, versionRef: string, path: string, container: unknown, key: string, depth: number): Promise<Scope | undefined> {
    if (depth >= 8) {
      this.report(`orb ${name}@${versionRef}: orbs import orbs more than 8 levels deep (a cycle?)`, path, container, key);
      return undefined;
    }
    if (!this.options.orbs) {
      this.report(`orb ${name}@${versionRef} cannot be resolved: no orb registry is configured (import it with gyre orb import, or pass --orb-dir)`, path, container, key);
      return undefined;
    }
    let found: { version: string; source: string } | undefined;
    try {
      found = await this.options.orbs.resolve(name, versionRef);
    } catch (error) {
      this.report(`orb ${name}@${versionRef} could not be resolved: ${(error as Error).message}`, path, container, key);
      return undefined;
    }
    if (!found) {
      this.report(`orb ${name}@${versionRef} is not in the orb registry (import it with: gyre orb import <file|dir> --name ${name}@<version>)`, path, container, key);
      return undefined;
    }
    const id = `${name}@${found.version}`;
    const cached = this.orbCache.get(id);
    if (cached) return cached;
    let loaded: CachedOrbDocument | undefined = this.options.orbCache?.get(found.source);
    if (!loaded) {
      const positions = new Positions();
      const result = loadYaml(found.source, positions, this.limits);
      for (const p of result.problems) this.report(`orb ${id}: ${p.message}${p.line ? ` (orb source line ${p.line}:${p.column})` : ''}`, path, container, key);
      if (result.problems.length) return undefined;
      loaded = { value: result.value, positions };
      this.options.orbCache?.set(found.source, loaded);
    }
    this.positions.adopt(loaded.positions);
    if (!isObj(loaded.value)) {
      this.report(`orb ${id} is not a map`, path, container, key);
      return undefined;
    }
    const scope = await this.buildScope(loaded.value, `orb ${id}`, `${path}.`, true, depth + 1);
    this.orbCache.set(id, scope);
    return scope;
  }
}

// ---------------------------------------------------------------- helpers

function firstLine(s: string): string {
  let start = 0;
  while (start <= s.length) {
    let end = s.indexOf('\n', start);
    if (end < 0) end = s.length;
    const line = s.slice(start, end).trim();
    if (line !== '') return line;
    start = end + 1;
  }
  return s.trim();
}

function listOf(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map((x) => String(x));
  return [String(v)];
}

function envMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(v)) {
    for (const item of v) {
      if (typeof item === 'string') {
        const eq = item.indexOf('=');
        if (eq > 0) out[item.slice(0, eq)] = item.slice(eq + 1);
      } else if (isObj(item)) Object.assign(out, envMap(item));
    }
  } else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) out[k] = x === null || x === undefined ? '' : typeof x === 'object' ? JSON.stringify(x) : String(x);
  }
  return out;
}

/** Parses a CircleCI (Go) duration: `10m`, `1h30m`, `30s`, `500ms`; a bare number is seconds. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') return v >= 0 ? v * 1000 : undefined;
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) return undefined;
  let ms = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    const n = Number(m[1]);
    ms += m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
  }
  return Math.round(ms);
}

function processedStep(s: BuiltinStep): unknown {
  if (s.body === undefined || s.body === null) return s.key;
  return { [s.key]: s.body };
}

// ---------------------------------------------------------------- workflows

interface Instance {
  name: string;
  jobRef: string;
  path: string;
  entry: Obj;
  entryContainer: unknown;
  type: 'build' | 'approval' | 'no-op';
  requiresRaw: unknown;
  filters: unknown;
  contexts: string[];
  serialGroup?: string;
  aliases: string[];
  args: Obj;
  matrixEnv: SubstEnv;
  explicitName: boolean;
  spec?: JobSpec;
  processed?: Obj;
  requires: Requirement[];
}

function filterList(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map(String);
  return [String(v)];
}

function nameMatches(patterns: string[], name: string): boolean {
  return patterns.some((p) => (p.length >= 2 && p.startsWith('/') && p.endsWith('/') ? regexMatchesWhole(p, name) : p === name));
}

function admitsName(f: unknown, name: string): boolean {
  if (!isObj(f)) return true;
  const only = filterList(f.only);
  const ignore = filterList(f.ignore);
  if (has(f, 'only') && !nameMatches(only, name)) return false;
  if (ignore.length && nameMatches(ignore, name)) return false;
  return true;
}

export async function compileConfig(source: string, options: CompileOptions): Promise<CompileResult> {
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const c = new Compilation(options, limits);
  const loaded = loadYaml(source, c.positions, limits);
  for (const p of loaded.problems) c.problems.push({ message: p.message, ...(p.line ? { line: p.line, column: p.column } : {}) });
  if (loaded.problems.length) return { ok: false, problems: c.problems };
  if (!isObj(loaded.value)) return { ok: false, problems: [{ message: 'a config is a YAML map with version, jobs and workflows' }] };
  const original = loaded.value;

  const version = original.version;
  if (version !== undefined && !['2', '2.0', '2.1'].includes(String(version))) {
    c.report(`version ${String(version)} is not supported; use 2.1 (or 2 / 2.0)`, 'version', original, 'version');
  }
  if (original.setup !== undefined && typeof original.setup !== 'boolean') c.report('setup must be true or false', 'setup', original, 'setup');
  c.setupPipeline(original);

  // Pipeline values and parameters first (they may appear in the orbs stanza); inline orbs keep theirs.
  const root = substitute(original, { pipeline: c.pipelineLookup }, '', c.reporter, c.positions, (p) => /^orbs\.[^.[]+$/.test(p)) as Obj;
  const scope = await c.buildScope(root, 'config', '', false, 0);

  const lookup = c.pipelineLookup;
  const workflowPlans: WorkflowPlan[] = [];
  const processedJobs: Obj = {};
  const processedWorkflows: Obj = { version: 2 };

  let workflows = root.workflows;
  if (workflows === undefined && isObj(root.jobs) && has(root.jobs, 'build')) workflows = { workflow: { jobs: ['build'] } }; // version 2.0
  if (workflows !== undefined && !isObj(workflows)) c.report('workflows must be a map of workflow names to workflows', 'workflows', root, 'workflows');
  const tagTrigger = options.trigger.tag !== undefined;
  const triggerName = tagTrigger ? options.trigger.tag! : (options.trigger.branch ?? options.trigger.pipeline?.branch ?? '');

  // Count the jobs every workflow would expand to before expanding any (matrix sizes multiply).
  let plannedJobs = 0;
  for (const [wfName, wf] of Object.entries(isObj(workflows) ? workflows : {})) {
    if (wfName === 'version' || !isObj(wf) || !Array.isArray(wf.jobs)) continue;
    for (const entry of wf.jobs) {
      const body = isObj(entry) ? Object.values(entry)[0] : undefined;
      const matrix = isObj(body) && isObj(body.matrix) && isObj(body.matrix.parameters) ? body.matrix.parameters : undefined;
      plannedJobs += matrix ? Object.values(matrix).reduce<number>((n, v) => n * (Array.isArray(v) ? v.length : 1), 1) : 1;
    }
    if (plannedJobs > MAX_TOTAL_JOBS) {
      c.report(`the config expands to more than ${MAX_TOTAL_JOBS} jobs across its workflows`, `workflows.${wfName}`, workflows, wfName);
      return { ok: false, problems: c.problems };
    }
  }

  for (const [wfName, wf] of Object.entries(isObj(workflows) ? workflows : {})) {
    if (wfName === 'version') continue;
    const wfPath = `workflows.${wfName}`;
    if (!isObj(wf)) {
      c.report('a workflow is a map with jobs', wfPath, workflows, wfName);
      continue;
    }
    if (wf.jobs !== undefined && !Array.isArray(wf.jobs)) {
      c.report('jobs of a workflow is a list of job names or {job: {…}} entries', `${wfPath}.jobs`, wf, 'jobs');
      continue;
    }
    const wfJobs: unknown[] = Array.isArray(wf.jobs) ? wf.jobs : [];
    // Does the workflow run for this trigger?
    let runs = true;
    for (const k of ['when', 'unless'] as const) {
      if (!has(wf, k)) continue;
      try {
        const v = evaluateLogic(wf[k], lookup);
        if (k === 'when' ? !v : v) runs = false;
      } catch (error) {
        if (!(error instanceof LogicError)) throw error;
        c.report(error.message, `${wfPath}.${k}`, wf, k);
      }
    }
    const legacySchedule = options.trigger.pipeline?.triggerSource === 'schedule';
    if (legacySchedule && !has(wf, 'triggers')) runs = false; // a legacy schedule runs only its own workflows
    if (has(wf, 'triggers')) {
      // Legacy scheduled workflows run only on their schedule, not on pushes.
      const schedules = Array.isArray(wf.triggers) ? wf.triggers : [];
      const onSchedule = legacySchedule;
      let admitted = false;
      schedules.forEach((t, i) => {
        const s = isObj(t) ? t.schedule : undefined;
        if (!isObj(s) || typeof s.cron !== 'string') {
          c.report('a trigger is {schedule: {cron, filters}}', `${wfPath}.triggers[${i}]`, schedules, i);
          return;
        }
        try {
          if (onSchedule && isObj(s.filters) && admitsName(s.filters.branches, triggerName)) admitted = true;
          if (onSchedule && !isObj(s.filters)) admitted = true;
        } catch (error) {
          if (!(error instanceof LogicError)) throw error;
          c.report(error.message, `${wfPath}.triggers[${i}].schedule.filters`, s, 'filters');
        }
      });
      if (!admitted) runs = false;
    }

    // Expand entries into instances.
    const instances: Instance[] = [];
    // A map entry with several keys invokes each (the schema allows it).
    const flat: { raw: unknown; i: number }[] = [];
    wfJobs.forEach((entryRaw: unknown, i: number) => {
      if (isObj(entryRaw) && Object.keys(entryRaw).length > 1) for (const [k, v] of Object.entries(entryRaw)) flat.push({ raw: { [k]: v }, i });
      else flat.push({ raw: entryRaw, i });
    });
    flat.forEach(({ raw: entryRaw, i }) => {
      const p = `${wfPath}.jobs[${i}]`;
      let jobRef: string;
      let entry: Obj = {};
      let entryContainer: unknown = wfJobs;
      if (typeof entryRaw === 'string') jobRef = entryRaw;
      else if (isObj(entryRaw) && Object.keys(entryRaw).length === 1) {
        jobRef = Object.keys(entryRaw)[0];
        const e = entryRaw[jobRef];
        if (e !== null && e !== undefined && !isObj(e)) {
          c.report(`a workflow job entry is a name or {name: {requires, filters, …}}`, p, wfJobs, i);
          return;
        }
        entry = isObj(e) ? e : {};
        entryContainer = entry;
      } else {
        c.report('a workflow job entry is a name or a map with one key, the job name', p, wfJobs, i);
        return;
      }
      const ep = `${p}.${jobRef}`;
      const matrix = entry.matrix;
      let combos: Obj[] = [{}];
      let alias: string | undefined;
      if (matrix !== undefined) {
        if (!isObj(matrix) || !isObj(matrix.parameters)) {
          c.report('matrix is a map with parameters (each a list of values), and optional exclude and alias', `${ep}.matrix`, entry, 'matrix');
          return;
        }
        alias = matrix.alias !== undefined ? String(matrix.alias) : jobRef;
        for (const [k, vals] of Object.entries(matrix.parameters)) {
          const list = Array.isArray(vals) ? vals : [vals];
          const next: Obj[] = [];
          for (const combo of combos) for (const v of list) next.push({ ...combo, [k]: v });
          combos = next;
          if (combos.length > MAX_WORKFLOW_JOBS) {
            c.report(`matrix expands to more than ${MAX_WORKFLOW_JOBS} jobs`, `${ep}.matrix`, entry, 'matrix');
            return;
          }
        }
        const excludes = Array.isArray(matrix.exclude) ? matrix.exclude.filter(isObj) : [];
        combos = combos.filter((combo) => !excludes.some((ex) => Object.entries(ex).every(([k, v]) => JSON.stringify(combo[k]) === JSON.stringify(v)) && Object.keys(ex).length === Object.keys(combo).length));
      }
      for (const combo of combos) {
        const matrixEnv: SubstEnv = { matrix: combo, noParams: true, pipeline: lookup };
        const sub = substitute({ ...entry, matrix: undefined }, matrixEnv, ep, c.reporter, c.positions) as Obj;
        delete sub.matrix;
        const type = sub.type === 'approval' ? 'approval' : 'build';
        const explicitName = sub.name !== undefined;
        const name = explicitName ? String(sub.name) : matrix !== undefined ? [jobRef, ...Object.values(combo).map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v)))].join('-') : jobRef;
        const args: Obj = { ...combo };
        for (const [k, v] of Object.entries(sub)) if (!WORKFLOW_JOB_KEYS.has(k)) args[k] = v;
        const contexts = filterList(sub.context);
        instances.push({
          name,
          jobRef,
          path: ep,
          entry: sub,
          entryContainer,
          type,
          requiresRaw: sub.requires,
          filters: sub.filters,
          contexts,
          ...(sub['serial-group'] !== undefined ? { serialGroup: String(sub['serial-group']) } : {}),
          aliases: alias !== undefined && alias !== name ? [alias] : [],
          args,
          matrixEnv,
          explicitName,
          requires: [],
        });
      }
    });
    if (instances.length > MAX_WORKFLOW_JOBS) {
      c.report(`workflow expands to ${instances.length} jobs; the limit is ${MAX_WORKFLOW_JOBS}`, wfPath, workflows, wfName);
      continue;
    }
    c.totalJobs += instances.length;
    if (c.totalJobs > MAX_TOTAL_JOBS) {
      c.report(`the config expands to more than ${MAX_TOTAL_JOBS} jobs across its workflows`, wfPath, workflows, wfName);
      break;
    }
    // The same job invoked more than once without a name: name-1, name-2, …
    const unnamed = new Map<string, Instance[]>();
    for (const inst of instances) if (!inst.explicitName && inst.aliases.length === 0 && inst.name === inst.jobRef) unnamed.set(inst.name, [...(unnamed.get(inst.name) ?? []), inst]);
    for (const [base, list] of unnamed) {
      if (list.length < 2) continue;
      list.forEach((inst, k) => {
        inst.name = `${base}-${k + 1}`;
        inst.aliases.push(base);
      });
    }
    const byName = new Map<string, Instance>();
    const byAlias = new Map<string, Instance[]>();
    for (const inst of instances) {
      if (byName.has(inst.name)) c.report(`job name '${inst.name}' is used twice in workflow ${wfName}; give one a different name:`, inst.path, inst.entryContainer);
      byName.set(inst.name, inst);
      for (const a of inst.aliases) byAlias.set(a, [...(byAlias.get(a) ?? []), inst]);
    }

    // Expand every job (errors are reported whether or not this trigger runs it).
    for (const inst of instances) {
      if (inst.type === 'approval') continue;
      // override-with: an orb job of that name replaces the job when the orb has one; otherwise the
      // job's own definition is the fallback.
      const override = inst.entry['override-with'];
      const overridden = typeof override === 'string' ? c.tryLookup(scope, 'jobs', override) : undefined;
      const el = overridden ?? c.lookup(scope, 'jobs', inst.jobRef, inst.path, inst.entryContainer);
      if (!el) continue;
      const r = c.expandJob(el, inst.args, inst.path, inst.entryContainer, scope, inst.entry['pre-steps'], inst.entry['post-steps'], c.envFor(scope, new Map(), `workflow ${wfName}`));
      inst.type = r.kind;
      inst.spec = r.spec;
      inst.processed = r.processed;
    }

    // Requirements.
    for (const inst of instances) {
      const raw = inst.requiresRaw;
      if (raw === undefined || raw === null) continue;
      const list = Array.isArray(raw) ? raw : [raw];
      list.forEach((item, i) => {
        const rp = `${inst.path}.requires[${i}]`;
        const entries: [string, unknown][] = typeof item === 'string' ? [[item, 'success']] : isObj(item) ? Object.entries(item) : [];
        if (entries.length === 0) c.report('a requires entry is a job name or {job-name: status}', rp, list, i);
        for (const [ref, st] of entries) {
          const statuses = filterList(st);
          for (const s of statuses) {
            if (!STATUSES.includes(s as RequiredStatus)) c.report(`requires status '${s}' is not allowed; allowed: ${STATUSES.join(', ')}`, rp, list, i);
          }
          const valid = statuses.filter((s) => STATUSES.includes(s as RequiredStatus)) as RequiredStatus[];
          const targets = byName.has(ref) ? [byName.get(ref)!] : (byAlias.get(ref) ?? []);
          if (targets.length === 0) {
            c.report(`job '${inst.name}' requires '${ref}', which is not a job in workflow ${wfName}`, rp, list, i);
            continue;
          }
          for (const t of targets) {
            if (t === inst) c.report(`job '${inst.name}' requires itself`, rp, list, i);
            else inst.requires.push({ job: t.name, statuses: valid.length ? valid : ['success'] });
          }
        }
      });
    }
    // Cycles.
    const state = new Map<string, 1 | 2>();
    const visit = (inst: Instance, stack: string[]): void => {
      const s = state.get(inst.name);
      if (s === 2) return;
      if (s === 1) {
        c.report(`workflow ${wfName} has a cycle in requires: ${[...stack, inst.name].join(' -> ')}`, inst.path, inst.entryContainer);
        return;
      }
      state.set(inst.name, 1);
      for (const r of inst.requires) {
        const t = byName.get(r.job);
        if (t) visit(t, [...stack, inst.name]);
      }
      state.set(inst.name, 2);
    };
    for (const inst of instances) visit(inst, []);

    processedWorkflows[wfName] = {
      ...(has(wf, 'when') ? { when: wf.when } : {}),
      ...(has(wf, 'unless') ? { unless: wf.unless } : {}),
      ...(has(wf, 'triggers') ? { triggers: wf.triggers } : {}),
      jobs: instances.map((inst) => {
        // Keys of the processed jobs map must be valid job names; the workflow entry keeps the real name.
        let jobKey = inst.name.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^[^A-Za-z]+/, '') || 'job';
        if (inst.type === 'no-op') processedJobs[jobKey] = { type: 'no-op' };
        if (inst.processed && inst.type === 'build') {
          const existing = processedJobs[jobKey];
          if (existing !== undefined && JSON.stringify(existing) !== JSON.stringify(inst.processed)) {
            let k = 2;
            const base = jobKey;
            while (processedJobs[`${base}-${k}`] !== undefined && JSON.stringify(processedJobs[`${base}-${k}`]) !== JSON.stringify(inst.processed)) k++;
            jobKey = `${base}-${k}`;
          }
          processedJobs[jobKey] = inst.processed;
        }
        const body: Obj = {};
        if (jobKey !== inst.name || inst.type === 'approval') body.name = inst.name;
        if (inst.type === 'approval') body.type = 'approval';
        if (inst.requires.length) body.requires = inst.requires.map((r) => (r.statuses.length === 1 && r.statuses[0] === 'success' ? r.job : { [r.job]: r.statuses.length === 1 ? r.statuses[0] : r.statuses }));
        if (inst.contexts.length) body.context = inst.contexts;
        if (inst.filters !== undefined) body.filters = inst.filters;
        if (inst.serialGroup) body['serial-group'] = inst.serialGroup;
        const key = inst.type === 'approval' ? inst.jobRef : jobKey;
        return Object.keys(body).length ? { [key]: body } : key;
      }),
    };

    if (!runs) continue;
    // Filters, the tag rule and the filtered-requires cascade.
    const admitted = new Map<string, boolean>();
    for (const inst of instances) {
      let ok: boolean;
      try {
        const f = inst.filters;
        if (typeof f === 'string') ok = truthy(evaluateExpression(f, lookup));
        else if (f !== undefined && f !== null && !isObj(f)) {
          c.report('filters is a map with branches and tags (or an expression string)', `${inst.path}.filters`, inst.entry, 'filters');
          ok = false;
        } else if (tagTrigger) ok = isObj(f) && isObj(f.tags) ? admitsName(f.tags, triggerName) : false;
        else ok = isObj(f) ? admitsName(f.branches, triggerName) : true;
        if (isObj(f)) {
          // Regexes are checked even when this trigger does not use them.
          for (const k of ['branches', 'tags']) {
            const x = f[k];
            if (isObj(x)) for (const pat of [...filterList(x.only), ...filterList(x.ignore)]) if (pat.length >= 2 && pat.startsWith('/') && pat.endsWith('/')) regexMatchesWhole(pat, '');
          }
        }
      } catch (error) {
        if (!(error instanceof LogicError)) throw error;
        c.report(error.message, `${inst.path}.filters`, inst.entry, 'filters');
        ok = false;
      }
      admitted.set(inst.name, ok);
    }
    const runsMemo = new Map<string, Requirement[] | null>();
    const resolveRun = (inst: Instance, guard: number): Requirement[] | null => {
      if (runsMemo.has(inst.name)) return runsMemo.get(inst.name)!;
      runsMemo.set(inst.name, null); // cycles were reported above; treat as not running
      if (!admitted.get(inst.name) || guard > instances.length) return null;
      const kept = inst.requires.filter((r) => {
        const t = byName.get(r.job);
        return t !== undefined && resolveRun(t, guard + 1) !== null;
      });
      let result: Requirement[] | null = kept;
      if (inst.requires.length > 0) {
        // On a tag every upstream job must run too; on a branch, a job runs while any requirement does.
        if (tagTrigger ? kept.length !== inst.requires.length : kept.length === 0) result = null;
      }
      runsMemo.set(inst.name, result);
      return result;
    };
    const jobs: JobPlan[] = [];
    for (const inst of instances) {
      const req = resolveRun(inst, 0);
      if (req === null) continue;
      jobs.push({
        name: inst.name,
        type: inst.type,
        requires: req,
        contexts: inst.contexts,
        ...(inst.type === 'build' && inst.spec ? { spec: inst.spec } : {}),
        ...(inst.serialGroup ? { serialGroup: inst.serialGroup } : {}),
      });
    }
    if (jobs.length) workflowPlans.push({ name: wfName, jobs });
  }

  if (c.problems.length) {
    // The same mistake reached through several matrix instances is reported once.
    const seen = new Set<string>();
    const problems = c.problems.filter((p) => {
      const k = `${p.line}:${p.column}:${p.path}:${p.message}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    return { ok: false, problems };
  }
  const plan: Plan = { setup: root.setup === true, workflows: workflowPlans };
  const processed: Obj = { version: 2, ...(root.setup === true ? { setup: true } : {}), jobs: processedJobs, workflows: processedWorkflows };
  // Rendered on first read: the conductor needs the plan at once, the text only when it stores it.
  let compiledYaml: string | undefined;
  return {
    ok: true,
    plan,
    get compiledYaml(): string {
      compiledYaml ??= `${emitYaml(processed)}\n# Original config.yml file:\n${source
        .split('\n')
        .map((l) => `# ${l}`.trimEnd())
        .join('\n')}\n`;
      return compiledYaml;
    },
  };
}
