# Gyre task agent: started by Nomad (docker driver) on client machines, runs one task's steps.
# Build from the repository root: docker build -f images/agent.Dockerfile -t ghcr.io/gyre-ci/agent:0.1.0 .
ARG NODE_IMAGE=docker.io/library/node:20-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/@cdktf node_modules/cdktf node_modules/constructs

FROM ${NODE_IMAGE} AS agent
# git and ssh for checkout steps and SSH reruns; ca-certificates for the control plane's TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10002 agent \
 && useradd --system --uid 10002 --gid agent --create-home --home-dir /home/agent agent
WORKDIR /opt/gyre
COPY --from=deps /src/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY runtime ./runtime
RUN ln -s /opt/gyre/bin/gyre.js /usr/local/bin/gyre
USER 10002:10002
WORKDIR /home/agent/project
ENTRYPOINT ["tini", "--", "gyre"]
CMD ["agent"]
