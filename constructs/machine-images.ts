/**
 * The runtime's GYRE_MACHINE_CONFIG as the distribution writes it (runtime/machines/machine-settings.ts
 * reads it): which template each `machine: image:` starts from, per cloud.
 */
export interface MachineExecutorConfig {
  readonly images: Record<string, string>;
  readonly instanceTypes: Record<string, string>;
  readonly spot: boolean;
  readonly aws?: { readonly region: string; readonly subnetIds: string[] };
  readonly gcp?: { readonly project: string; readonly zone: string };
}

/** A machine image's name as a resource name: `ubuntu-2204:current` → `ubuntu-2204-current`. */
export function machineImageSlug(image: string): string {
  const slug = image.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  if (!slug) throw new Error(`machine image ${JSON.stringify(image)} has no letters or digits to name its template by`);
  return slug.slice(0, 40);
}
