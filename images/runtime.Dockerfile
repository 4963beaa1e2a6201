# Gyre runtime: one image for every role (`gyre server --roles=<role>`).
# Build from the repository root: docker build -f images/runtime.Dockerfile -t ghcr.io/gyre-ci/runtime:0.1.0 .
# Base images are pinned by tag; air-gapped builds pass --build-arg NODE_IMAGE=<mirror>/library/node:20-bookworm-slim.
ARG NODE_IMAGE=docker.io/library/node:20-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
# Production dependencies only; the distribution (cdktf providers) is not needed at runtime.
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm prune --omit=dev \
 && rm -rf node_modules/@cdktf node_modules/cdktf node_modules/constructs

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    GYRE_PORT=8080 \
    GYRE_DATA_DIR=/var/lib/gyre
RUN groupadd --system --gid 10001 gyre \
 && useradd --system --uid 10001 --gid gyre --home-dir /var/lib/gyre --shell /usr/sbin/nologin gyre \
 && install -d -o gyre -g gyre -m 0750 /var/lib/gyre
WORKDIR /opt/gyre
COPY --from=deps /src/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY runtime ./runtime
RUN ln -s /opt/gyre/bin/gyre.js /usr/local/bin/gyre
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:'+(process.env.GYRE_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["gyre"]
CMD ["server", "--roles=all"]
