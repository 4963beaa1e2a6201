import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { ImageCatalog, mirrorPath, readImageManifest } from '../../constructs/images';
import { renderNomadClientBootstrap } from '../../constructs/nomad-client-bootstrap';

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

  test('the runtime image starts `gyre server` and listens on GYRE_PORT 8080', () => {
    const text = read('runtime.Dockerfile');
    expect(text).toContain('ENTRYPOINT ["gyre"]');
    expect(text).toContain('GYRE_PORT=8080');
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
    caPem: 'CA', clientCertPem: 'CERT', clientKeyPem: 'KEY', blockedCidrs: ['10.0.0.0/8', '192.168.0.0/16'],
  };

  test('fills every placeholder', () => {
    const script = renderNomadClientBootstrap(props);
    expect(script).not.toMatch(/@@[A-Z_]+@@/);
    expect(script).toContain("MIRROR='https://m.example'");
    expect(script).toContain('for cidr in 169.254.169.254/32 10.0.0.0/8 192.168.0.0/16; do');
  });

  test('has no Terraform interpolation sequences of its own', () => {
    expect(read('nomad-client-bootstrap.sh.tpl')).not.toMatch(/\$\{|%\{/);
  });

  test('is valid bash', () => {
    const script = renderNomadClientBootstrap(props);
    execFileSync('bash', ['-n'], { input: script });
  });
});
