#!/usr/bin/env bash
# Builds images/runtime.Dockerfile with Podman, offline, as localhost/gyre-runtime:ci (sourced by
# .ci/run; runs as root). Nothing can be pulled here, so the NODE_IMAGE base is made on this
# machine: a Debian bookworm minbase root filesystem from Debian's mirror (debootstrap, cached in
# /var/cache/gyre-ci across runs) with this machine's Node.js and npm copied in, imported with
# `podman import`. The npm registry is not reachable from inside a build, so the production
# node_modules go in through the build context (DEPS=context). The image's own `apt-get install`
# (git, ssh, ca-certificates, tini) reaches Debian's mirror as any build would.
set -euo pipefail

build_runtime_image() {
  local repo cache rootfs node_version base ctx
  repo="$(pwd)"
  cache=/var/cache/gyre-ci
  rootfs="$cache/bookworm-minbase"
  node_version="$(node -p 'process.versions.node')"
  base="localhost/gyre-node-base:$node_version"

  if [ ! -f "$rootfs/.complete" ]; then
    command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    local mirror
    mirror="$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | tr -d ' ' || true)"
    rm -rf "$rootfs" "$rootfs.tmp"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=libstdc++6 bookworm "$rootfs.tmp" "${mirror:-http://deb.debian.org/debian}" >/tmp/gyre-debootstrap.log 2>&1 \
      || { tail -20 /tmp/gyre-debootstrap.log; return 1; }
    rm -f "$rootfs.tmp"/var/cache/apt/archives/*.deb
    touch "$rootfs.tmp/.complete"
    mv "$rootfs.tmp" "$rootfs"
  fi

  if ! podman image exists "$base"; then
    local stage
    stage="$(mktemp -d)"
    mkdir -p "$stage/usr/local/bin" "$stage/usr/local/lib/node_modules"
    cp "$(readlink -f "$(command -v node)")" "$stage/usr/local/bin/node"
    cp -a "$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")" "$stage/usr/local/lib/node_modules/npm"
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
    tar -C "$rootfs" --exclude=./.complete -cf "$stage.tar" .
    tar -C "$stage" -rf "$stage.tar" ./usr/local/bin/node ./usr/local/bin/npm ./usr/local/lib/node_modules
    podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["node"]' \
      "$stage.tar" "$base" >/dev/null
    rm -rf "$stage" "$stage.tar"
  fi

  ctx="$(mktemp -d)"
  cp -a package.json package-lock.json bin runtime "$ctx/"
  mkdir -p "$ctx/images" && cp -a images/ca "$ctx/images/ca"
  # The production dependency tree npm installed here (no dev dependencies, no cdktf providers).
  { (cd "$repo" && npm ls --omit=dev --all --parseable 2>/dev/null) || true; } | sed -n "s#^$repo/##p" \
    | grep -E '^node_modules/' | grep -vE '^node_modules/(@cdktf|cdktf|constructs)(/|$)' \
    | while read -r dir; do mkdir -p "$ctx/$(dirname "$dir")" && cp -a "$dir" "$ctx/$(dirname "$dir")/"; done
  podman build -q --build-arg "NODE_IMAGE=$base" --build-arg DEPS=context \
    -f images/runtime.Dockerfile -t localhost/gyre-runtime:ci "$ctx" >/dev/null
  rm -rf "$ctx"
}
