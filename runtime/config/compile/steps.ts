import { evaluateLogic, LogicError, truthy } from '../logic';
import type { Step, StepWhen } from '../plan';
import type { SubstEnv } from '../substitute';
import type { Compilation } from './compilation';
import { lookup } from './elements';
import { BUILTIN_STEPS, envMap, has, isObj, listOf, MAX_EXPANSION_DEPTH, MAX_TOTAL_STEPS, type BuiltinStep, type Obj, type Scope } from './model';
import { bindParams } from './parameters';

/** Steps: commands invoked, `when` steps resolved, `steps` spliced flat; builtin steps turned into plan steps. */

/** Expands steps in `scope`: commands invoked, `when` steps resolved, `steps` spliced flat. */
export function expandSteps(c: Compilation, steps: unknown, scope: Scope, path: string, depth: number, env: SubstEnv): BuiltinStep[] {
  const out: BuiltinStep[] = [];
  if (steps === null || steps === undefined) return out;
  if (!Array.isArray(steps)) {
    c.report('steps must be a list', path);
    return out;
  }
  if (depth > MAX_EXPANSION_DEPTH) {
    c.report(`steps expand more than ${MAX_EXPANSION_DEPTH} levels deep (does a command invoke itself?)`, path);
    return out;
  }
  steps.forEach((step, i) => {
    const p = `${path}[${i}]`;
    c.budget.tick(() => p);
    if (++c.totalSteps > MAX_TOTAL_STEPS) {
      if (!c.stepBudgetReported) c.report(`the config expands to more than ${MAX_TOTAL_STEPS} steps (commands invoking commands multiply)`, p, steps, i);
      c.stepBudgetReported = true;
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
        c.report(`a step is a map with exactly one key (the step or command name); found ${keys.join(', ') || 'none'}`, p, steps, i);
        return;
      }
      key = keys[0];
      body = step[key];
    } else {
      c.report('a step is a name or a map with one key', p, steps, i);
      return;
    }
    // Version 2.0 accepted hyphenated spellings of built-in steps (restore-cache); so do we,
    // unless a command of that name exists.
    if (!BUILTIN_STEPS.has(key) && key.includes('-') && BUILTIN_STEPS.has(key.replace(/-/g, '_')) && !has(scope.commands, key)) key = key.replace(/-/g, '_');
    if (BUILTIN_STEPS.has(key)) {
      c.budget.place(body, `${p}.${key}`);
      out.push({ key, body, path: `${p}.${key}` });
      return;
    }
    if (key === 'steps') {
      if (Array.isArray(body)) {
        if (c.expandedStepArgs.has(body)) out.push(...expandSteps(c, body, scope, p, depth + 1, env));
        else out.push(...expandSteps(c, body, scope, `${p}.steps`, depth + 1, env));
      } else if (body !== null && body !== undefined) c.report('steps takes a list of steps', `${p}.steps`, step, 'steps');
      return;
    }
    if (key === 'when' || key === 'unless') {
      if (!isObj(body) || !has(body, 'condition')) {
        c.report(`a ${key} step is a map with condition and steps`, `${p}.${key}`, step, key);
        return;
      }
      let result = false;
      try {
        result = evaluateLogic(body.condition, scope.inOrb ? c.orbPipelineLookup : c.pipelineLookup);
      } catch (error) {
        if (!(error instanceof LogicError)) throw error;
        c.report(error.message, `${p}.${key}.condition`, body, 'condition');
      }
      if (key === 'unless') result = !result;
      if (result) out.push(...expandSteps(c, body.steps, scope, `${p}.${key}.steps`, depth + 1, env));
      return;
    }
    // A command: from this scope or an imported orb.
    if (body !== undefined && body !== null && !isObj(body)) {
      c.report(`'${key}' is not a built-in step; as a command it takes a map of parameters, not ${JSON.stringify(body).slice(0, 40)}`, `${p}.${key}`, step, key);
      return;
    }
    const el = lookup(c, scope, 'commands', key, p, steps, i);
    if (!el) return;
    if (!isObj(el.def)) {
      c.report(`${el.label} must be a map with steps`, el.path);
      return;
    }
    const args = isObj(body) ? body : {};
    const params = bindParams(c, el, args, `${p}.${key}`, step, scope, depth);
    const cmdEnv = c.envFor(el.scope, params, el.label);
    const cmdSteps = c.subst(el.def.steps, cmdEnv, `${el.path}.steps`);
    out.push(...expandSteps(c, cmdSteps, el.scope, `${el.path}.steps`, depth + 1, cmdEnv));
  });
  return out;
}

/** A builtin step as the processed config writes it. */
export function processedStep(s: BuiltinStep): unknown {
  if (s.body === undefined || s.body === null) return s.key;
  return { [s.key]: s.body };
}

/** A builtin step as the plan carries it (undefined for a step the agent does not run). */
export function toPlanStep(c: Compilation, s: BuiltinStep): Step | undefined {
  const { key, body, path } = s;
  const b: Obj = isObj(body) ? body : {};
  const str = (v: unknown) => (v === undefined || v === null ? undefined : String(v));
  const name = (fallback: string) => str(b.name) ?? fallback;
  const when = (): StepWhen => {
    const w = b.when ?? 'on_success';
    if (w === 'on_success' || w === 'on_fail' || w === 'always') return w;
    c.report(`when must be on_success, on_fail or always, not ${JSON.stringify(w)}`, `${path}.when`, body, 'when');
    return 'on_success';
  };
  switch (key) {
    case 'run':
    case 'deploy': {
      if (typeof body === 'string') return { type: 'run', name: firstLine(body), command: body, when: 'on_success' };
      if (!isObj(body) || body.command === undefined || body.command === null) {
        c.report('run needs a command (run: <command> or run: {command: …})', path, body);
        return undefined;
      }
      const command = String(body.command);
      let timeout: number | undefined;
      if (b.no_output_timeout !== undefined) {
        timeout = parseDuration(b.no_output_timeout);
        if (timeout === undefined) c.report(`no_output_timeout must be a duration like 10m, 1h or 30s, not ${JSON.stringify(b.no_output_timeout)}`, `${path}.no_output_timeout`, body, 'no_output_timeout');
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
      if (b.key === undefined || b.paths === undefined) c.report('save_cache needs key and paths', path, body);
      return { type: 'save_cache', name: name('Saving Cache'), key: String(b.key ?? ''), paths: listOf(b.paths), when: when() };
    case 'restore_cache': {
      const keys = b.keys !== undefined ? listOf(b.keys) : b.key !== undefined ? [String(b.key)] : [];
      if (keys.length === 0) c.report('restore_cache needs key or keys', path, body);
      return { type: 'restore_cache', name: name('Restoring Cache'), keys };
    }
    case 'store_artifacts':
      if (b.path === undefined) c.report('store_artifacts needs path', path, body);
      return { type: 'store_artifacts', name: name('Uploading artifacts'), path: String(b.path ?? ''), ...(b.destination !== undefined ? { destination: String(b.destination) } : {}) };
    case 'store_test_results':
      if (b.path === undefined) c.report('store_test_results needs path', path, body);
      return { type: 'store_test_results', name: name('Uploading test results'), path: String(b.path ?? '') };
    case 'persist_to_workspace':
      if (b.root === undefined || b.paths === undefined) c.report('persist_to_workspace needs root and paths', path, body);
      return { type: 'persist_to_workspace', name: name('Persisting to Workspace'), root: String(b.root ?? '.'), paths: listOf(b.paths) };
    case 'attach_workspace':
      if (b.at === undefined) c.report('attach_workspace needs at', path, body);
      return { type: 'attach_workspace', name: name('Attaching Workspace'), at: String(b.at ?? '.') };
    default:
      return undefined;
  }
}

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
