/**
 * The `MachineProvider` seam: what gives a `machine:` job a virtual machine of its own. A machine
 * runs exactly one task (one attempt of it) and is destroyed after it. Every machine carries the
 * installation's id and its task's id and attempt as tags (EC2) or labels (GCE), so a sweep can
 * find and destroy the machines of tasks that ended while no driver watched them (a control-plane
 * restart mid-job).
 */
export interface MachineProvider {
  /** `aws`, `gcp` or `local`: the value of GYRE_MACHINE_PROVIDER. */
  readonly name: string;
  /** Starts one machine for one task; resolves once the cloud accepted it (it may still be booting). */
  launch(request: LaunchRequest): Promise<MachineInstance>;
  /** Destroys a machine; one already gone is not an error. */
  destroy(instance: MachineInstance): Promise<void>;
  /** The machines of this installation that are not yet destroyed (pending, running, stopping…). */
  list(installationId: string): Promise<MachineInstance[]>;
}

export interface LaunchRequest {
  readonly installationId: string;
  readonly taskId: string;
  readonly attempt: number;
  /** The image's template (an EC2 launch template, a GCE instance template), from the image map. */
  readonly template: string;
  /** The instance (machine) type for the job's resource class, when the class map names one. @default - the template's */
  readonly instanceType?: string;
  /** Spot (EC2) or Spot VM (GCE) capacity. */
  readonly spot: boolean;
  /** The script the machine runs at boot: it starts `gyre agent` with the task's own token. */
  readonly startupScript: string;
}

/** A machine as the provider names it, with the task it was launched for. */
export interface MachineInstance {
  /** The provider's id: an EC2 instance id, a GCE instance name, a container name. */
  readonly id: string;
  readonly taskId: string;
  readonly attempt: number;
}

/** Tag keys on EC2 (label keys on GCE use `-` for `:`, since labels allow no colon). */
export const MACHINE_TAGS = {
  installation: 'gyre:installation',
  task: 'gyre:task',
  attempt: 'gyre:attempt',
} as const;

/** The tags of one task's machine. */
export function machineTags(request: Pick<LaunchRequest, 'installationId' | 'taskId' | 'attempt'>): Record<string, string> {
  return {
    [MACHINE_TAGS.installation]: request.installationId,
    [MACHINE_TAGS.task]: request.taskId,
    [MACHINE_TAGS.attempt]: String(request.attempt),
  };
}

/** A GCE-safe name for a task's machine (lower-case letters, digits and `-`, at most 63). */
export function machineName(taskId: string, attempt: number): string {
  return `gyre-${taskId.toLowerCase()}-${attempt}`.slice(0, 63);
}
