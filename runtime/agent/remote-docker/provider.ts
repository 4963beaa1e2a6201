import type { ResourceSize } from '../../domain/resource-sizes';

/**
 * The `RemoteDockerProvider` seam: where `setup_remote_docker` gets a Docker engine for one job.
 * The engine is the job's own (its own storage: it never sees the host's or another job's
 * containers and images), reachable from the job's commands over TCP with mutual TLS, as CircleCI's
 * remote Docker is (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`). Runners and the
 * embedded mode ship a local Podman provider (`podman-provider.ts`, GYRE_REMOTE_DOCKER=podman); a
 * cluster may provide engines another way behind the same interface.
 */
export interface RemoteDockerProvider {
  /** Said in the step's output, e.g. `a Podman engine of its own on this host`. */
  readonly description: string;
  /** Makes an engine for one job. Rejects with a message for the step's output when it cannot. */
  provision(request: RemoteDockerRequest): Promise<RemoteDockerEngine>;
}

export interface RemoteDockerRequest {
  readonly taskId: string;
  /** The job's project (`gh/acme/app`): layer caches are kept per project. */
  readonly projectSlug: string;
  /** Keep the engine's images for the project's next job (`docker_layer_caching: true`). */
  readonly dockerLayerCaching: boolean;
  /** The CPU and memory of the job's resource class: what the engine and all its containers get together. @default medium's */
  readonly resources?: ResourceSize;
  /**
   * The address of this host as the job's commands reach it (the gateway of a container job's
   * network, 127.0.0.1 for a shell job): a provider that serves the engine from this host listens
   * there. A provider that serves it from elsewhere may ignore it.
   */
  readonly reachableAt: string;
  /** Aborted when the task is canceled: a provision in progress stops and leaves nothing behind. */
  readonly signal?: AbortSignal;
}

/** The PEM files a job's docker client needs: the engine's CA and the job's own client certificate and key. */
export interface ClientTlsFiles {
  readonly 'ca.pem': string;
  readonly 'cert.pem': string;
  readonly 'key.pem': string;
}

export interface RemoteDockerEngine {
  /** `tcp://<address>:<port>`, the job's DOCKER_HOST. */
  readonly host: string;
  readonly clientTls: ClientTlsFiles;
  /** One line for the step's output (what was made; whether the layer cache was used). */
  readonly summary: string;
  /** Stops the engine and removes its storage (a kept layer cache stays). Safe to call twice. */
  teardown(): Promise<void>;
}
