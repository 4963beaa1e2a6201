import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { testTempDir } from './temp-dir';

/**
 * An orb source tree laid out as `circleci orb pack` expects it (src/@orb.yml, a directory per
 * section, a script included with <<include(scripts/…)>>), made in a temporary directory so tests
 * that pack or import a tree need nothing outside the repository. Answers the tree's root.
 */
export function makeOrbSourceTree(): string {
  const tree = testTempDir('orb-tree-');
  for (const dir of ['src/commands', 'src/scripts', 'src/examples']) mkdirSync(path.join(tree, dir), { recursive: true });
  writeFileSync(path.join(tree, 'src', '@orb.yml'), 'version: 2.1\ndescription: Sends a message\n');
  writeFileSync(
    path.join(tree, 'src', 'commands', 'notify.yml'),
    'description: Notify\nparameters:\n  text: {type: string, default: hi}\nsteps:\n  - run:\n      name: Notify\n      environment: {TEXT: << parameters.text >>}\n      command: <<include(scripts/notify.sh)>>\n',
  );
  writeFileSync(path.join(tree, 'src', 'scripts', 'notify.sh'), '#!/bin/sh\necho "notifying: $TEXT"\n');
  writeFileSync(path.join(tree, 'src', 'examples', 'simple.yml'), 'description: Simple\nusage:\n  version: 2.1\n');
  return tree;
}
