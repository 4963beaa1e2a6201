/**
 * Every test file: each answer Gyre gives under /api/v2/ during a test must fit CircleCI's API v2
 * description (test/support/spec-watch.ts). A test during which one did not fails with the
 * request, the operation and what is wrong; answers given between tests (in beforeAll/afterAll)
 * fail the file. GYRE_TEST_SPEC=collect only prints them, for finding all at once.
 */
import { describeViolations, watchSpec } from './support/spec-watch';

const watch = watchSpec();
// For test/api/spec-watch.test.ts, which shows the watch catches a bad answer (and takes it back).
(globalThis as { gyreSpecWatch?: typeof watch }).gyreSpecWatch = watch;
const strict = process.env.GYRE_TEST_SPEC !== 'collect';

function report(where: string): void {
  const violations = watch.take();
  if (violations.length === 0) return;
  const message = `${where}: ${violations.length} answer(s) outside CircleCI's API v2 description:\n${describeViolations(violations)}`;
  if (strict) throw new Error(message);
  // eslint-disable-next-line no-console
  console.warn(message);
}

beforeEach(() => report('before this test'));
afterEach(() => report('this test'));
afterAll(() => {
  try {
    report('this file, outside its tests');
  } finally {
    watch.stop();
  }
});
