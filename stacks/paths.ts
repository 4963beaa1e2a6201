import * as path from 'node:path';
import { App, TerraformStack } from 'cdktf';
import { IConstruct } from 'constructs';

/**
 * The path Terraform must use for a file named in an environment file. Environment paths are
 * resolved at synth time (relative to the environment file); Terraform runs each stack from
 * `<outdir>/stacks/<stack>`, so the file is spelled relative to that directory, which keeps the
 * synthesized output free of the machine's own paths.
 */
export function pathFromStackDirectory(scope: IConstruct, absolutePath: string): string {
  const stack = TerraformStack.of(scope);
  const stackDir = path.resolve(App.of(scope).outdir, 'stacks', stack.node.id);
  return path.relative(stackDir, absolutePath);
}
