import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { ImageCatalog, mirrorPath, readImageManifest } from '../../constructs/images';
import { containerFirewallRules, renderNomadClientBootstrap } from '../../constructs/nomad-client-bootstrap';
import { containerMayReach } from './container-firewall';
import { DEFAULT_API_PORT, DEFAULT_OPS_PORT } from '../../runtime/roles/names';

const root = path.join(__dirname, '..', '..');
const read = (f: string) => fs.readFileSync(path.join(root, 'images', f), 'utf8');

describe('image catalog', () => {
  test('moves images to the registry, keeping their path and tag', () => {
    const catalog = new ImageCatalog({ registry: 'reg.local/gyre', gyreTag: '2.0.0' });
    expect(catalog.ref('nomad')).toBe('reg.local/gyre/hashicorp/nomad:1.9.7');
    expect(catalog.ref('runtime')).toBe('reg.local/gyre/gyre-ci/runtime:2.0.0');
    expect(catalog.ref('metrics-server')).toBe('reg.local/gyre/metrics-server/metrics-server:v0.7.2');
    expect(new ImageCatalog().ref('edge')).toBe('docker.io/nginxinc/nginx-unprivileged:1.27-alpine');
  });

  test('an image not in the manifest is an error, not a silent public pull', () => {
    expect(() => new ImageCatalog().ref('postgres')).toThrow(/image "postgres" is not in images\/manifest.json/);
  });

  test('mirror paths drop only a registry host', () => {
    expect(mirrorPath('registry.k8s.io/metrics-server/metrics-server')).toBe('metrics-server/metrics-server');
    expect(mirrorPath('localhost:5000/a/b')).toBe('a/b');
    expect(mirrorPath('library/node')).toBe('library/node');
  });
});

describe('npm run images:list', () => {
  test('prints every image and chart with its mirror location', () => {
    const out = execFileSync('node', ['bin/run-ts.js', 'images/list.ts', '--registry', 'reg.local/gyre'], { cwd: root, encoding: 'utf8' });
    const manifest = readImageManifest();
    for (const image of manifest.images) {
      expect(out).toContain(`${image.source}:${image.tag}\treg.local/gyre/${mirrorPath(image.source)}:${image.tag}`);
    }
    for (const chart of manifest.charts) expect(out).toContain(`${chart.repository}\t${chart.name}\t${chart.version}`);
  });
});

describe('Dockerfiles', () => {
  test.each(['runtime.Dockerfile', 'agent.Dockerfile'])('%s is multi-stage and ends as a non-root user', (file) => {
    const text = read(file);
    expect(text.match(/^FROM /gm)!.length).toBeGreaterThanOrEqual(2);
    const users = text.match(/^USER (\S+)/gm)!;
    expect(users[users.length - 1]).not.toMatch(/USER (root|0)(:|$)/);
  });

  test('the runtime image starts `gyre server` under tini, with the API and ops ports of the runtime', () => {
    const text = read('runtime.Dockerfile');
    expect(text).toContain('ENTRYPOINT ["tini", "--", "gyre"]');
    expect(text).toContain(`GYRE_PORT=${DEFAULT_API_PORT}`);
    expect(text).toContain(`GYRE_OPS_PORT=${DEFAULT_OPS_PORT}`);
    expect(text).toContain('/healthz');
  });

  test('the manifest lists a build file for each image Gyre builds, and the file exists', () => {
    for (const image of readImageManifest().images.filter((i) => i.build)) {
      expect(fs.existsSync(path.join(root, image.build!))).toBe(true);
    }
  });
});

describe('Nomad client bootstrap template', () => {
  const props = {
    cloud: 'aws' as const, packageMirror: 'https://m.example/', nomadVersion: '1.9.7', serverAddress: 'g.example:4647',
    caPem: 'CA', clientCertPem: 'CERT', clientKeyPem: 'KEY', blockedCidrs: ['10.0.0.0/8', '192.168.0.0/16'], dnsResolvers: ['10.0.0.2'],
  };

  test('fills every placeholder', () => {
    const script = renderNomadClientBootstrap(props);
    expect(script).not.toMatch(/@@[A-Z_]+@@/);
    expect(script).toContain("MIRROR='https://m.example'");
    expect(containerMayReach(script, { dst: '10.0.0.2', proto: 'udp', port: 53 })).toBe(true);
    expect(containerMayReach(script, { dst: '192.168.1.1', proto: 'tcp', port: 22 })).toBe(false);
  });

  test('the DNS exception comes before the drops (a resolver inside a blocked range still answers)', () => {
    const rules = containerFirewallRules(['10.0.0.2'], ['10.0.0.0/8']);
    const dns = rules.findIndex((r) => r.includes('-d 10.0.0.2/32 -p udp --dport 53 -j RETURN'));
    const drop = rules.findIndex((r) => r.includes('-d 10.0.0.0/8 -j DROP'));
    expect(dns).toBeGreaterThanOrEqual(0);
    expect(dns).toBeLessThan(drop);
    // Without the exception the same resolver is unreachable: the evaluator can tell.
    const withoutDns = renderNomadClientBootstrap({ ...props, dnsResolvers: ['172.31.255.254'] });
    expect(containerMayReach(withoutDns, { dst: '10.0.0.2', proto: 'udp', port: 53 })).toBe(false);
  });

  test('on GCE, the metadata address answers DNS for containers and nothing else', () => {
    const script = renderNomadClientBootstrap({ ...props, cloud: 'gcp', dnsResolvers: ['169.254.169.254'] });
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'udp', port: 53 })).toBe(true);
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'tcp', port: 53 })).toBe(true);
    expect(containerMayReach(script, { dst: '169.254.169.254', proto: 'tcp', port: 80 })).toBe(false);
    expect(script).not.toContain('gyre-lifecycle-watch');
    expect(script).toContain('drain_on_shutdown');
  });

  test('registry credentials: a Docker config file goes to the docker plugin, and anonymous pulls configure none', () => {
    const withFile = renderNomadClientBootstrap({ ...props, registryAuth: { kind: 'docker-config', configJson: '{"auths":{"r.example":{"auth":"eA=="}}}' } });
    expect(withFile).toContain('{"auths":{"r.example":{"auth":"eA=="}}}');
    expect(withFile).toContain('config = "/etc/nomad.d/docker-auth.json"');
    expect(withFile).toContain('chmod 0600 /etc/nomad.d/docker-auth.json');
    expect(renderNomadClientBootstrap(props)).not.toContain('docker-auth.json"');
    const gce = renderNomadClientBootstrap({ ...props, cloud: 'gcp', dnsResolvers: ['169.254.169.254'], registryAuth: { kind: 'gce', registryHost: 'europe-docker.pkg.dev' } });
    expect(gce).toContain('{"credHelpers":{"europe-docker.pkg.dev":"gyre-gce"}}');
    expect(gce).toContain('/usr/local/bin/docker-credential-gyre-gce');
  });

  test('clients enforce ACLs like the servers do', () => {
    expect(renderNomadClientBootstrap(props)).toMatch(/^acl \{\n  enabled = true\n\}$/m);
  });

  test('refuses to render without a DNS resolver', () => {
    expect(() => renderNomadClientBootstrap({ ...props, dnsResolvers: [] })).toThrow(/dnsResolvers \(none\)/);
  });

  test('has no Terraform interpolation sequences of its own', () => {
    expect(read('nomad-client-bootstrap.sh.tpl')).not.toMatch(/\$\{|%\{/);
  });

  test('is valid bash', () => {
    const script = renderNomadClientBootstrap(props);
    execFileSync('bash', ['-n'], { input: script });
  });
});
