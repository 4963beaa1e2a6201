#!/usr/bin/env bash
# Builds localhost/gyre-docker-cli:latest for the setup_remote_docker test (sourced by .ci/run;
# runs as root): the busybox image plus the docker CLI binary of Debian bookworm's docker.io
# package. The package is only downloaded and unpacked, never installed (installing it would start
# a dockerd beside Podman). The CLI is linked against glibc, so the loader and the libraries `ldd`
# names go in with it (busybox-static has no libc of its own).
set -euo pipefail

build_docker_cli_image() {
  local image=localhost/gyre-docker-cli:latest
  podman image exists "$image" && return 0
  local work
  work="$(mktemp -d)"
  (
    cd "$work"
    # apt drops privileges to _apt for downloads; the directory must be writable by it.
    chmod 777 "$work"
    apt-get download -qq docker.io >/dev/null 2>&1 || { apt-get update -qq && apt-get download -qq docker.io >/dev/null; }
    mkdir -p unpacked rootfs/usr/bin
    dpkg-deb -x docker.io_*.deb unpacked
    cp unpacked/usr/bin/docker rootfs/usr/bin/docker
    # Every library the binary loads, and the loader, at the paths ldd prints.
    for lib in $(ldd unpacked/usr/bin/docker | grep -oE '/[^ ]+'); do
      mkdir -p "rootfs$(dirname "$lib")"
      cp -L "$lib" "rootfs$lib"
    done
    cat > Containerfile <<'DOCKERFILE'
FROM localhost/gyre-busybox:latest
COPY rootfs/ /
ENV PATH=/usr/bin:/bin
DOCKERFILE
    podman build -q -t "$image" -f Containerfile . >/dev/null
  )
  rm -rf "$work"
}
