import { evaluateExpression, evaluateLogic, LogicError } from '../../runtime/config/logic';
import { plan, problems, shape, DOCKER } from './helpers';

const lookup = (values: Record<string, unknown>) => (name: string) => (name in values ? { value: values[name] } : undefined);

describe('Logic statements', () => {
  const none = lookup({});
  it('treats false, null, 0, NaN, "" and argument-less statements as falsy', () => {
    for (const v of [false, null, 0, NaN, '', { and: [] }, { or: [] }, { equal: [] }]) expect(evaluateLogic(v, none)).toBe(false);
    for (const v of [true, 1, 'x', { and: [true, 1] }, { or: [false, 'x'] }, { not: false }, { equal: [1, 1, 1] }]) expect(evaluateLogic(v, none)).toBe(true);
  });

  it('matches is a whole-value regex', () => {
    expect(evaluateLogic({ matches: { pattern: '^release/.*', value: 'release/1.0' } }, none)).toBe(true);
    expect(evaluateLogic({ matches: { pattern: 'release', value: 'release/1.0' } }, none)).toBe(false);
    expect(evaluateLogic({ matches: { pattern: '/v\\d+/', value: 'v12' } }, none)).toBe(true);
  });

  it('rejects unknown operators and malformed statements', () => {
    expect(() => evaluateLogic({ xor: [true] }, none)).toThrow(/unknown logic operator 'xor'/);
    expect(() => evaluateLogic({ and: true }, none)).toThrow(LogicError);
  });

  it('evaluates expression strings over pipeline values', () => {
    const env = lookup({ 'pipeline.git.branch': 'release/2', 'pipeline.number': 7, 'pipeline.git.tag': '' });
    expect(evaluateExpression('pipeline.git.branch == "main" or pipeline.git.branch starts-with "release/"', env)).toBe(true);
    expect(evaluateExpression('not (pipeline.number >= 7) and true', env)).toBe(false);
    expect(evaluateExpression("pipeline.git.branch matches /release\\/\\d+/", env)).toBe(true);
    expect(evaluateExpression('pipeline.number < 10 and pipeline.git.tag != "v1"', env)).toBe(true);
    expect(() => evaluateExpression('pipeline.nope == 1', env)).toThrow(/unknown name 'pipeline.nope'/);
  });
});

describe('Logic in configs', () => {
  const yaml = (when: string) => `version: 2.1
parameters: {run_it: {type: boolean, default: true}}
jobs: {a: {${DOCKER}, steps: [checkout]}}
workflows:
  w:
    when: ${when}
    jobs: [a]
`;
  it('workflow when takes logic statements and expression strings', async () => {
    expect(await shape(yaml('{and: [<< pipeline.parameters.run_it >>, {equal: [main, << pipeline.git.branch >>]}]}'))).toEqual({ w: ['a'] });
    expect(await shape(yaml('{and: [<< pipeline.parameters.run_it >>, {equal: [main, << pipeline.git.branch >>]}]}'), { branch: 'dev' })).toEqual({});
    expect(await shape(yaml('pipeline.git.branch == "dev"'), { branch: 'dev' })).toEqual({ w: ['a'] });
    expect((await plan(yaml('{not: << pipeline.parameters.run_it >>}'))).plan.workflows).toEqual([]);
  });
  it('a malformed when is a problem at its path', async () => {
    const ps = await problems(yaml('{nand: [true]}'));
    expect(ps[0]).toMatchObject({ path: 'workflows.w.when', message: expect.stringMatching(/unknown logic operator 'nand'/) });
  });
});
