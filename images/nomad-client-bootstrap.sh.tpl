#!/bin/bash
# Gyre Nomad client bootstrap (cloud-init user data / GCE startup script).
# Rendered by constructs/nomad-client-bootstrap.ts: each placeholder (a name between double at-signs)
# is replaced at synth time.
# Written without dollar-brace forms because Terraform would read them as its own interpolation.
set -euo pipefail

MIRROR='@@PACKAGE_MIRROR@@'
NOMAD_VERSION='@@NOMAD_VERSION@@'
export DEBIAN_FRONTEND=noninteractive

# 1. Docker and Nomad come from the operator's package mirror, so clients need no internet access.
#    The engine's settings are in place before Docker first starts: Docker Hub pulls go through the
#    operator's pull-through cache (registry-mirrors) when one is named, so every client does not
#    fetch every job image from the internet.
install -d -m 0755 /etc/docker
cat > /etc/docker/daemon.json <<'JSON'
@@DOCKER_DAEMON_JSON@@
JSON
install -d -m 0755 /usr/share/keyrings
curl -fsSL "$MIRROR/gpg.key" | gpg --dearmor -o /usr/share/keyrings/gyre-mirror.gpg
echo "deb [signed-by=/usr/share/keyrings/gyre-mirror.gpg] $MIRROR/apt $(. /etc/os-release && echo "$VERSION_CODENAME") main" \
  > /etc/apt/sources.list.d/gyre-mirror.list
apt-get update -q
apt-get install -y -q docker-ce docker-ce-cli containerd.io "nomad=$NOMAD_VERSION-1" @@EXTRA_PACKAGES@@
systemctl enable --now docker

# 2. Build containers must not reach the instance metadata address or the operator's blocked CIDRs,
#    but they do need the network's DNS resolver, which may sit inside a blocked range (the VPC's
#    base+2 address on AWS) or at the metadata address itself (GCE): port 53 to the resolvers is
#    let through first. DOCKER-USER is evaluated before Docker's own rules for every container
#    packet; the first matching rule wins.
cat > /usr/local/sbin/gyre-container-firewall <<'FIREWALL'
#!/bin/bash
set -eu
iptables -N DOCKER-USER 2>/dev/null || true
iptables -F DOCKER-USER
@@FIREWALL_RULES@@
FIREWALL
chmod 0755 /usr/local/sbin/gyre-container-firewall
cat > /etc/systemd/system/gyre-container-firewall.service <<'UNIT'
[Unit]
Description=Drop container traffic to instance metadata and blocked CIDRs (DNS to the resolvers excepted)
After=docker.service
Requires=docker.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/gyre-container-firewall
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target
UNIT

# 3. Docker garbage collection: finished builds leave images and volumes behind.
cat > /etc/systemd/system/gyre-docker-gc.service <<'UNIT'
[Unit]
Description=Remove unused Docker images, containers and volumes
[Service]
Type=oneshot
ExecStart=/usr/bin/docker system prune --all --volumes --force --filter until=@@GC_AFTER_HOURS@@h
UNIT
cat > /etc/systemd/system/gyre-docker-gc.timer <<'UNIT'
[Unit]
Description=Hourly Docker garbage collection
[Timer]
OnCalendar=hourly
RandomizedDelaySec=600
[Install]
WantedBy=timers.target
UNIT

# 4. Credentials for pulling the agent image from the operator's registry (the docker plugin's
#    auth config below; jobs' own images are pulled with their `auth`, as CircleCI does).
install -d -m 0700 /etc/nomad.d
@@REGISTRY_AUTH@@

# 5. Nomad client with mutual TLS to the servers behind the load balancer.
install -d -m 0700 /etc/nomad.d/tls /opt/nomad/data
cat > /etc/nomad.d/tls/ca.pem <<'PEM'
@@CA_PEM@@
PEM
cat > /etc/nomad.d/tls/client.pem <<'PEM'
@@CLIENT_CERT_PEM@@
PEM
cat > /etc/nomad.d/tls/client-key.pem <<'PEM'
@@CLIENT_KEY_PEM@@
PEM
chmod 0600 /etc/nomad.d/tls/*.pem
cat > /etc/nomad.d/nomad.hcl <<'HCL'
datacenter = "@@DATACENTER@@"
region     = "@@REGION@@"
data_dir   = "/opt/nomad/data"

# Stopping the agent (shutdown, replacement, scale-in) drains the node first: running tasks get
# until the deadline to finish and no new ones are placed here.
leave_on_interrupt = true
leave_on_terminate = true

client {
  enabled    = true
  node_class = "@@NODE_CLASS@@"
  servers    = ["@@SERVER_ADDRESS@@"]
  # Jobs that allow SSH reruns publish their port from this range; the firewall opens it.
  min_dynamic_port = 64535
  max_dynamic_port = 65535
  meta {
    cloud = "@@CLOUD@@"
  }
  drain_on_shutdown {
    deadline           = "@@DRAIN_DEADLINE@@"
    force              = false
    ignore_system_jobs = false
  }
}

# The servers enforce ACLs; clients must too, or their own endpoints (alloc exec, logs, files)
# would answer without a token.
acl {
  enabled = true
}

tls {
  http                   = true
  rpc                    = true
  ca_file                = "/etc/nomad.d/tls/ca.pem"
  cert_file              = "/etc/nomad.d/tls/client.pem"
  key_file               = "/etc/nomad.d/tls/client-key.pem"
  verify_server_hostname = true
}

plugin "docker" {
  config {
    allow_privileged = false
    # Host volumes: the agent of a `docker` job gets this client's Docker socket bind-mounted, and
    # starts the job's containers beside its own (never mounting anything into them). Only Gyre's
    # scheduler may submit jobs (ACLs on), so no one else can ask for a host path.
    volumes {
      enabled = true
    }
    gc {
      image       = true
      image_delay = "1h"
    }
@@DOCKER_AUTH_HCL@@
  }
}
HCL

# The drain needs time: systemd waits for it before killing the agent, and stops the agent before
# Docker on shutdown.
install -d -m 0755 /etc/systemd/system/nomad.service.d
cat > /etc/systemd/system/nomad.service.d/gyre-drain.conf <<'UNIT'
[Unit]
After=docker.service gyre-container-firewall.service
Wants=docker.service
[Service]
TimeoutStopSec=@@STOP_TIMEOUT_SECONDS@@
UNIT
@@LIFECYCLE_WATCH@@
systemctl daemon-reload
systemctl enable --now gyre-container-firewall.service gyre-docker-gc.timer nomad @@EXTRA_UNITS@@
