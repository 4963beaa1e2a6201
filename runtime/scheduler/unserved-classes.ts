import type { JobSpec } from '../config/plan';

/**
 * Classes Gyre cannot run itself: macOS, Windows and Arm. A job that asks for one (a `macos:`
 * executor, a Windows machine image or `windows.*` class, an `arm.*` class) is never taken by the
 * built-in runner, which is a Linux shell or a Linux container engine: it waits for a runner an
 * admin registered for exactly that class (a resource class of that name, driver `runner` or
 * `nomad`, or `builtin` on a host that is one), with a visible reason, and fails after
 * GYRE_UNSERVED_CLASS_TIMEOUT_MS naming what to register. It never runs on the wrong platform.
 */
export const PLATFORM_CLASS_PATTERN = '^(macos|windows|arm)\\.';
const PLATFORM_CLASS = new RegExp(PLATFORM_CLASS_PATTERN);

/** The message reason that marks a job waiting for a class no driver serves (API v2 `messages[].reason`). */
export const UNSERVED_REASON = 'unserved_resource_class';

/** The default resource class of a job whose executor needs a platform Gyre does not run. */
export function platformResourceClass(spec: JobSpec): string | undefined {
  const executor = spec.executor;
  if (executor.kind === 'macos') return 'macos.m1.medium.gen1';
  if (executor.kind === 'machine' && executor.image?.startsWith('windows-')) return 'windows.medium';
  return undefined;
}

/** `macOS`, `Windows` or `Arm` for a class only a runner of that platform can serve. */
export function platformOf(resourceClass: string): string | undefined {
  if (!PLATFORM_CLASS.test(resourceClass)) return undefined;
  return { macos: 'macOS', windows: 'Windows', arm: 'Arm' }[resourceClass.split('.')[0]];
}

/** Whether only a runner registered for this class may run it. */
export function isPlatformClass(resourceClass: string): boolean {
  return PLATFORM_CLASS.test(resourceClass);
}

/** What to do about it, in the words of the job's message. */
function registerHint(resourceClass: string, platform: string): string {
  return (
    `register a runner for it on a ${platform} host: \`gyre resource-class add ${resourceClass} --driver runner --cpu N --memory MiB\`, ` +
    `\`gyre resource-class token ${resourceClass}\`, then \`gyre runner --url <gyre> --token-file <file>\` there`
  );
}

/** The job's message while it waits. */
export function waitingMessage(resourceClass: string, timeoutMs: number): string {
  const platform = platformOf(resourceClass) ?? 'matching';
  return `No runner serves resource class ${resourceClass}: Gyre's built-in runner runs Linux jobs only, so this ${platform} job waits for a runner. To run it, ${registerHint(resourceClass, platform)}. It fails if none is registered within ${formatDuration(timeoutMs)} (GYRE_UNSERVED_CLASS_TIMEOUT_MS).`;
}

/** The job's message once it failed. */
export function timedOutMessage(resourceClass: string, timeoutMs: number): string {
  const platform = platformOf(resourceClass) ?? 'matching';
  return `No runner was registered for resource class ${resourceClass} within ${formatDuration(timeoutMs)} (GYRE_UNSERVED_CLASS_TIMEOUT_MS), so this ${platform} job did not run. Gyre's built-in runner runs Linux jobs only; ${registerHint(resourceClass, platform)}, and rerun the job.`;
}

function formatDuration(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}
