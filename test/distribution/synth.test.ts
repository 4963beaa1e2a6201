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

  const stack = (id: string) => JSON.parse(fs.readFileSync(path.join(outdir, 'stacks', id, 'cdk.tf.json'), 'utf8'));

  test('each stack file is Terraform JSON with its providers', () => {
    expect(Object.keys(stack('aws-example-infra').provider)).toEqual(expect.arrayContaining(['aws', 'tls', 'random']));
    expect(Object.keys(stack('gcp-example-infra').provider)).toEqual(expect.arrayContaining(['google', 'tls', 'random']));
    expect(Object.keys(stack('aws-example-server').provider)).toEqual(expect.arrayContaining(['aws', 'kubernetes', 'helm']));
    expect(stack('aws-example-infra').resource.aws_eks_cluster).toBeDefined();
    expect(stack('gcp-example-infra').resource.google_container_cluster).toBeDefined();
  });

  test('state is remote and encrypted, as each environment file names it: S3 with DynamoDB locking, or GCS', () => {
    expect(stack('aws-example-infra').terraform.backend).toEqual({
      s3: { bucket: 'example-gyre-tfstate', key: 'gyre/aws-example-infra.tfstate', region: 'us-east-1', encrypt: true, dynamodb_table: 'example-gyre-tfstate-locks' },
    });
    expect(stack('aws-example-server').terraform.backend.s3.key).toBe('gyre/aws-example-server.tfstate');
    expect(stack('gcp-example-server').terraform.backend).toEqual({ gcs: { bucket: 'example-project-gyre-tfstate', prefix: 'gyre/gcp-example-server' } });
  });

  test('the server stacks read the infra outputs from the infra stack\'s remote state', () => {
    const ref = stack('aws-example-server').data.terraform_remote_state['cross-stack-reference-input-aws-example-infra'];
    expect(ref.backend).toBe('s3');
    expect(ref.config).toMatchObject({ bucket: 'example-gyre-tfstate', key: 'gyre/aws-example-infra.tfstate', encrypt: true });
    const gcp = stack('gcp-example-server').data.terraform_remote_state['cross-stack-reference-input-gcp-example-infra'];
    expect(gcp).toMatchObject({ backend: 'gcs', config: { bucket: 'example-project-gyre-tfstate', prefix: 'gyre/gcp-example-infra' } });
  });

  test('no stack file mentions the machine it was synthesized on', () => {
    for (const id of fs.readdirSync(path.join(outdir, 'stacks'))) {
      expect(fs.readFileSync(path.join(outdir, 'stacks', id, 'cdk.tf.json'), 'utf8')).not.toContain(root);
    }
  });
});
