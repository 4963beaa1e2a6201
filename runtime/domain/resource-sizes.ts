/**
 * The CPU and memory of CircleCI's Docker resource classes, which Gyre gives a `docker` job's
 * containers when the admin has not defined the class (`gyre resource-class add`) with sizes of
 * its own. A class known to neither gets `medium`'s.
 */
export interface ResourceSize {
  /** Cores (fractions allowed). */
  readonly cpu: number;
  readonly memoryMb: number;
}

export const DOCKER_RESOURCE_SIZES: Readonly<Record<string, ResourceSize>> = {
  small: { cpu: 1, memoryMb: 2048 },
  medium: { cpu: 2, memoryMb: 4096 },
  'medium+': { cpu: 3, memoryMb: 6144 },
  large: { cpu: 4, memoryMb: 8192 },
  xlarge: { cpu: 8, memoryMb: 16384 },
  '2xlarge': { cpu: 16, memoryMb: 32768 },
  '2xlarge+': { cpu: 20, memoryMb: 40960 },
};

/** The size of a resource class: the admin's definition, else CircleCI's Docker size, else medium's. */
export function resourceSizeOf(name: string | undefined, defined?: { cpu: number | string | null; memoryMb: number | null }): ResourceSize {
  if (defined && defined.cpu !== null && defined.memoryMb !== null && Number(defined.cpu) > 0) return { cpu: Number(defined.cpu), memoryMb: defined.memoryMb };
  return DOCKER_RESOURCE_SIZES[name ?? 'medium'] ?? DOCKER_RESOURCE_SIZES.medium;
}
