// Entry point of the distribution: `cdktf synth` (or `npm run synth`) runs this file.
// Every environments/*.yaml becomes two stacks, <env>-infra and <env>-server.
import * as path from 'node:path';
import { App } from 'cdktf';
import { loadEnvironments } from './stacks/environment';
import { addEnvironments } from './stacks/app';

const dir = process.env.GYRE_ENVIRONMENTS_DIR ?? path.join(__dirname, 'environments');
const app = new App();
addEnvironments(app, loadEnvironments(dir));
app.synth();
