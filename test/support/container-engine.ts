import { existsSync } from 'node:fs';

/** The image CI builds with `podman import` from Debian's busybox-static (nothing can be pulled here). */
export const BUSYBOX_IMAGE = process.env.GYRE_TEST_BUSYBOX_IMAGE || 'localhost/gyre-busybox:latest';

/**
 * The Docker Engine API socket to test against: GYRE_TEST_DOCKER_SOCKET, Podman's or Docker's.
 * Returns undefined (and the caller skips with a printed reason) only outside CI; in CI a missing
 * socket is an error, so the Docker executor is always exercised there.
 */
export function containerSocket(): string | undefined {
  const candidates = [process.env.GYRE_TEST_DOCKER_SOCKET, '/run/podman/podman.sock', '/var/run/docker.sock'].filter(Boolean) as string[];
  const found = candidates.find((p) => existsSync(p));
  if (!found && process.env.CI) throw new Error(`no container engine socket (looked at ${candidates.join(', ')}); .ci/run starts Podman's`);
  return found;
}
