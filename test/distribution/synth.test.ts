import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';

const root = path.join(__dirname, '..', '..');

/**
 * Runs the app the way `cdktf synth` does (cdktf.json's `app` command with CDKTF_OUTDIR set), with no
 * cloud credentials and no network, and checks the stacks it wrote.
 */
describe('cdktf synth of the example environments', () => {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'gyre-synth-'));
  const app = JSON.parse(fs.readFileSync(path.join(root, 'cdktf.json'), 'utf8')).app as string;

  beforeAll(() => {
    const [cmd, ...args] = app.split(' ');
    const env: NodeJS.ProcessEnv = { ...process.env, CDKTF_OUTDIR: outdir, CHECKPOINT_DISABLE: '1' };
    for (const v of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE', 'GOOGLE_APPLICATION_CREDENTIALS']) delete env[v];
    execFileSync(cmd, args, { cwd: root, env, stdio: 'pipe' });
  }, 60_000);

  test('writes a manifest listing both stacks of every environment', () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(outdir, 'manifest.json'), 'utf8'));
    expect(Object.keys(manifest.stacks).sort()).toEqual(['aws-example-infra', 'aws-example-server', 'gcp-example-infra', 'gcp-example-server']);
    expect(manifest.stacks['aws-example-server'].dependencies).toEqual(['aws-example-infra']);
  });

  test('each stack file is Terraform JSON with its providers and local state', () => {
    const stack = (id: string) => JSON.parse(fs.readFileSync(path.join(outdir, 'stacks', id, 'cdk.tf.json'), 'utf8'));
    expect(Object.keys(stack('aws-example-infra').provider)).toEqual(expect.arrayContaining(['aws', 'tls', 'random']));
    expect(Object.keys(stack('gcp-example-infra').provider)).toEqual(expect.arrayContaining(['google', 'tls', 'random']));
    expect(Object.keys(stack('aws-example-server').provider)).toEqual(expect.arrayContaining(['aws', 'kubernetes', 'helm']));
    expect(stack('gcp-example-server').terraform.backend.local.path).toBe('../../../terraform.gcp-example-server.tfstate');
    expect(stack('aws-example-infra').resource.aws_eks_cluster).toBeDefined();
    expect(stack('gcp-example-infra').resource.google_container_cluster).toBeDefined();
  });

  test('the server stacks read the infra outputs from the infra state', () => {
    const server = JSON.parse(fs.readFileSync(path.join(outdir, 'stacks', 'gcp-example-server', 'cdk.tf.json'), 'utf8'));
    expect(server.data.terraform_remote_state['cross-stack-reference-input-gcp-example-infra'].config.path)
      .toBe('../../../terraform.gcp-example-infra.tfstate');
  });

  test('no stack file mentions the machine it was synthesized on', () => {
    for (const id of fs.readdirSync(path.join(outdir, 'stacks'))) {
      expect(fs.readFileSync(path.join(outdir, 'stacks', id, 'cdk.tf.json'), 'utf8')).not.toContain(root);
    }
  });
});
