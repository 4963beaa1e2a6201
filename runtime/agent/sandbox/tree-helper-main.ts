// The file helper's entry point, bundled into one JavaScript file by helper-bundle.ts.
import { helperMain } from './tree-helper';

void helperMain(process.argv.slice(2));
