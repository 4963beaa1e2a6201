#!/usr/bin/env node
// Nomad ACL bootstrap, run once per change by a Kubernetes Job (constructs/kubernetes/nomad-acl.ts)
// with the runtime image's Node.js and nothing else (no packages).
//
// 1. waits for the Nomad servers to elect a leader;
// 2. bootstraps ACLs with the operator-held management token (NOMAD_BOOTSTRAP_TOKEN), or checks
//    that the cluster was bootstrapped with it;
// 3. writes each policy of POLICIES_FILE, and for each one whose Kubernetes Secret does not hold a
//    working token, creates a client token with only that policy and stores it in the Secret.
// Running it again changes nothing that is already right, so it is safe to repeat.
//
// Settings (environment): NOMAD_ADDR, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
// NOMAD_BOOTSTRAP_TOKEN, POLICIES_FILE, POD_NAMESPACE; the Kubernetes API comes from the pod's
// service account (KUBERNETES_SERVICE_HOST/PORT and /var/run/secrets/kubernetes.io/serviceaccount),
// or from KUBERNETES_API_URL / KUBERNETES_TOKEN_FILE / KUBERNETES_CA_FILE when set.
//
// Written without dollar-brace sequences: Terraform would read them as its own interpolation.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');

const env = process.env;
const log = (message) => process.stdout.write(new Date().toISOString() + ' ' + message + '\n');

function required(name) {
  const value = env[name];
  if (!value) throw new Error(name + ' is required');
  return value;
}

function readOptional(file) {
  return file ? fs.readFileSync(file) : undefined;
}

/** One HTTP(S) request; resolves { status, body } whatever the status. */
function request(base, tls, method, path, headers, body) {
  const url = new URL(path, base);
  const client = url.protocol === 'https:' ? https : http;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = client.request(url, {
      method,
      headers: { ...headers, ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}) },
      ...tls,
      timeout: 10000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out after 10 s')));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

function nomadClient() {
  const base = required('NOMAD_ADDR');
  const tls = { ca: readOptional(env.NOMAD_CACERT), cert: readOptional(env.NOMAD_CLIENT_CERT), key: readOptional(env.NOMAD_CLIENT_KEY) };
  return (method, path, token, body) => request(base, tls, method, path, token ? { 'x-nomad-token': token } : {}, body);
}

function kubernetesClient() {
  const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
  const base = env.KUBERNETES_API_URL || 'https://' + required('KUBERNETES_SERVICE_HOST') + ':' + (env.KUBERNETES_SERVICE_PORT || '443');
  const token = fs.readFileSync(env.KUBERNETES_TOKEN_FILE || sa + '/token', 'utf8').trim();
  const caFile = env.KUBERNETES_CA_FILE || (env.KUBERNETES_API_URL ? undefined : sa + '/ca.crt');
  const tls = { ca: readOptional(caFile) };
  return (method, path, body) => request(base, tls, method, path, { authorization: 'Bearer ' + token }, body);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForLeader(nomad, deadline) {
  for (;;) {
    try {
      const res = await nomad('GET', '/v1/status/leader');
      if (res.status === 200 && JSON.parse(res.body)) return;
      log('no Nomad leader yet (' + res.status + ')');
    } catch (error) {
      log('Nomad not reachable yet: ' + error.message);
    }
    if (Date.now() > deadline) throw new Error('Nomad elected no leader in time');
    await sleep(3000);
  }
}

async function bootstrap(nomad, managementToken) {
  const res = await nomad('POST', '/v1/acl/bootstrap', undefined, { BootstrapSecret: managementToken });
  if (res.status === 200) {
    log('ACLs bootstrapped with the operator management token');
    return;
  }
  if (!/already done/i.test(res.body)) throw new Error('ACL bootstrap failed: ' + res.status + ' ' + res.body.trim());
  const self = await nomad('GET', '/v1/acl/token/self', managementToken);
  if (self.status !== 200) {
    throw new Error('ACLs were bootstrapped with another token; put that management token in the nomad-acl-bootstrap Secret (key token)');
  }
  log('ACLs already bootstrapped with the operator management token');
}

async function tokenWorks(nomad, secretId, policy) {
  if (!secretId) return false;
  const res = await nomad('GET', '/v1/acl/token/self', secretId);
  if (res.status !== 200) return false;
  return (JSON.parse(res.body).Policies || []).includes(policy);
}

async function ensureToken(nomad, kube, namespace, managementToken, policy) {
  const path = '/api/v1/namespaces/' + namespace + '/secrets/' + policy.secret;
  const existing = await kube('GET', path);
  if (existing.status !== 200 && existing.status !== 404) {
    throw new Error('reading Secret ' + policy.secret + ' failed: ' + existing.status + ' ' + existing.body.trim());
  }
  const current = existing.status === 200 ? JSON.parse(existing.body) : undefined;
  const held = current && current.data && current.data.token ? Buffer.from(current.data.token, 'base64').toString('utf8') : undefined;
  if (await tokenWorks(nomad, held, policy.name)) {
    log('Secret ' + policy.secret + ' already holds a working ' + policy.name + ' token');
    return;
  }
  const created = await nomad('POST', '/v1/acl/token', managementToken, { Name: policy.name, Type: 'client', Policies: [policy.name] });
  if (created.status !== 200) throw new Error('creating the ' + policy.name + ' token failed: ' + created.status + ' ' + created.body.trim());
  const secretId = JSON.parse(created.body).SecretID;
  const secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: policy.secret, namespace, labels: { 'app.kubernetes.io/managed-by': 'nomad-acl-bootstrap' } },
    type: 'Opaque',
    data: { token: Buffer.from(secretId).toString('base64') },
  };
  const written = current
    ? await kube('PUT', path, { ...secret, metadata: { ...secret.metadata, resourceVersion: current.metadata.resourceVersion } })
    : await kube('POST', '/api/v1/namespaces/' + namespace + '/secrets', secret);
  if (written.status !== 200 && written.status !== 201) {
    throw new Error('writing Secret ' + policy.secret + ' failed: ' + written.status + ' ' + written.body.trim());
  }
  log('stored a new ' + policy.name + ' token in Secret ' + policy.secret);
}

async function main() {
  const nomad = nomadClient();
  const kube = kubernetesClient();
  const managementToken = required('NOMAD_BOOTSTRAP_TOKEN').trim();
  const namespace = required('POD_NAMESPACE');
  const policies = JSON.parse(fs.readFileSync(required('POLICIES_FILE'), 'utf8'));
  const waitSeconds = Number(env.NOMAD_WAIT_SECONDS || 600);

  await waitForLeader(nomad, Date.now() + waitSeconds * 1000);
  await bootstrap(nomad, managementToken);
  for (const policy of policies) {
    const res = await nomad('POST', '/v1/acl/policy/' + policy.name, managementToken, { Name: policy.name, Description: policy.description, Rules: policy.rules });
    if (res.status !== 200) throw new Error('writing policy ' + policy.name + ' failed: ' + res.status + ' ' + res.body.trim());
    log('policy ' + policy.name + ' written');
    await ensureToken(nomad, kube, namespace, managementToken, policy);
  }
}

main().then(() => log('done'), (error) => {
  process.stderr.write('nomad-acl-bootstrap: ' + error.message + '\n');
  process.exit(1);
});
