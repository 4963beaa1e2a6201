import * as CircleCI from '@circleci/circleci-config-sdk';
import { compile } from './helpers';

/** Configs written with CircleCI's own SDK compile, and the plan follows what the SDK generated. */
describe('configs built with @circleci/circleci-config-sdk', () => {
  it('a job with a docker executor, steps, requires, filters and an approval', async () => {
    const config = new CircleCI.Config();
    const node = new CircleCI.executors.DockerExecutor('cimg/node:lts');
    const build = new CircleCI.Job('build', node);
    build.addStep(new CircleCI.commands.Checkout()).addStep(new CircleCI.commands.Run({ command: 'npm ci', name: 'Install' }));
    const test = new CircleCI.Job('test', node, [new CircleCI.commands.Run({ command: 'npm test' })]);
    const deploy = new CircleCI.Job('deploy', node, [new CircleCI.commands.Run({ command: './deploy.sh' })]);
    config.addJob(build).addJob(test).addJob(deploy);
    const wf = new CircleCI.Workflow('pipeline');
    wf.addJob(build);
    wf.addJob(test, { requires: ['build'] });
    wf.addJobApproval('hold', { requires: ['test'] });
    wf.addJob(deploy, { requires: ['hold'], filters: { branches: { only: ['main'] } } });
    config.addWorkflow(wf);

    const yaml = config.stringify();
    const onMain = await compile(yaml, { branch: 'main' });
    if (!onMain.ok) throw new Error(JSON.stringify(onMain.problems));
    expect(onMain.plan.workflows[0].jobs.map((j) => [j.name, j.type, j.requires.map((r) => r.job)])).toEqual([
      ['build', 'build', []],
      ['test', 'build', ['build']],
      ['hold', 'approval', ['test']],
      ['deploy', 'build', ['hold']],
    ]);
    expect(onMain.plan.workflows[0].jobs[0].spec!.steps.map((s) => s.name)).toEqual(['Checkout code', 'Install']);
    const onDev = await compile(yaml, { branch: 'dev' });
    expect(onDev.ok && onDev.plan.workflows[0].jobs.map((j) => j.name)).toEqual(['build', 'test', 'hold']);
  });

  it('reusable executors and commands with parameters, and pipeline parameters', async () => {
    const config = new CircleCI.Config();
    config.defineParameter('greeting', 'string', 'hello');
    const exec = new CircleCI.reusable.ReusableExecutor('default', new CircleCI.executors.DockerExecutor('cimg/base:stable'));
    config.addReusableExecutor(exec);
    const say = new CircleCI.reusable.ReusableCommand(
      'say',
      [new CircleCI.commands.Run({ command: 'echo << parameters.what >>' })],
      new CircleCI.parameters.CustomParametersList([new CircleCI.parameters.CustomParameter('what', 'string', 'nothing')]),
    );
    config.addReusableCommand(say);
    const job = new CircleCI.Job('speak', exec.reuse(), [new CircleCI.reusable.ReusedCommand(say, { what: '<< pipeline.parameters.greeting >>' })]);
    config.addJob(job);
    config.addWorkflow(new CircleCI.Workflow('w', [job]));

    const r = await compile(config.stringify(), { branch: 'main', parameters: { greeting: 'bonjour' } });
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    expect(r.plan.workflows[0].jobs[0].spec).toMatchObject({
      executor: { kind: 'docker', images: [{ image: 'cimg/base:stable' }] },
      steps: [{ type: 'run', command: 'echo bonjour' }],
    });
  });
});
