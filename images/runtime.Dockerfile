# Gyre runtime: one image for every role (`gyre server --roles=<role>`), the migration Job
# (`gyre migrate`) and the Nomad ACL bootstrap Job.
# Build from the repository root: docker build -f images/runtime.Dockerfile -t ghcr.io/gyre-ci/runtime:0.1.0 .
# Base images are pinned by tag; air-gapped builds pass --build-arg NODE_IMAGE=<mirror>/library/node:20-bookworm-slim.
# DEPS=npm (default) installs the production dependencies with `npm ci`; DEPS=context takes a
# node_modules directory of production dependencies from the build context instead (offline
# builds: .ci/run builds this image that way, with no registry reachable from the build).
ARG NODE_IMAGE=docker.io/library/node:20-bookworm-slim
ARG DEPS=npm

FROM ${NODE_IMAGE} AS deps-npm
WORKDIR /src
COPY package.json package-lock.json ./
# Production dependencies only; the distribution (cdktf providers) is not needed at runtime.
RUN npm ci --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/@cdktf node_modules/cdktf node_modules/constructs

FROM ${NODE_IMAGE} AS deps-context
WORKDIR /src
COPY node_modules ./node_modules
RUN rm -rf node_modules/@cdktf node_modules/cdktf node_modules/constructs

FROM deps-${DEPS} AS deps

FROM ${NODE_IMAGE} AS runtime
# git: triggers and config reads run it; openssh-client: git over SSH; ca-certificates: git over
# HTTPS; tini: PID 1 that reaps the processes git leaves behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gyre \
 && useradd --system --uid 10001 --gid gyre --home-dir /var/lib/gyre --shell /usr/sbin/nologin gyre \
 && install -d -o gyre -g gyre -m 0750 /var/lib/gyre
ENV NODE_ENV=production \
    HOME=/var/lib/gyre \
    GYRE_PORT=8080 \
    GYRE_OPS_PORT=9090 \
    GYRE_DATA_DIR=/var/lib/gyre
WORKDIR /opt/gyre
# CA bundles the runtime verifies managed databases with (sslrootcert=/opt/gyre/ca/…).
COPY images/ca ./ca
COPY --from=deps /src/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY runtime ./runtime
RUN ln -s /opt/gyre/bin/gyre.js /usr/local/bin/gyre
# Runs as this user with a read-only root filesystem: only GYRE_DATA_DIR and /tmp are written.
USER 10001:10001
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:'+(process.env.GYRE_OPS_PORT||9090)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["tini", "--", "gyre"]
CMD ["server", "--roles=all"]
