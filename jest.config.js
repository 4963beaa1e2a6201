/**
 * Jest runs the TypeScript sources through SWC; `tsc --noEmit` is the separate type check.
 * A few dependencies ship only as ES modules (openid-client and what it builds on, the Octokit
 * packages): SWC turns those into CommonJS too, since Jest's module system cannot require them.
 */
const ESM_ONLY = ['openid-client', 'oauth4webapi', 'jose', '@octokit', 'universal-user-agent', 'universal-github-app-jwt', 'before-after-hook', 'json-with-bigint', 'fast-content-type-parse', 'content-type'];

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
    '^.+\\.m?js$': ['@swc/jest', { jsc: { parser: { syntax: 'ecmascript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  moduleFileExtensions: ['ts', 'js', 'mjs', 'cjs', 'json'],
  // Exports only an `import` condition (under `node`), which Jest's CommonJS resolver never picks.
  moduleNameMapper: { '^@octokit/webhooks-methods$': '<rootDir>/node_modules/@octokit/webhooks-methods/dist-node/index.js' },
  testTimeout: 60000,
  setupFiles: ['<rootDir>/test/setup-env.js'],
  globalSetup: '<rootDir>/test/global-setup.js',
  globalTeardown: '<rootDir>/test/global-teardown.js',
};
