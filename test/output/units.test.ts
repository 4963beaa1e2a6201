import { renderCacheKey } from '../../runtime/output/cache-keys';
import { MAX_REPORT_CHARS, parseJUnit } from '../../runtime/output/junit';
import { createValueMasker } from '../../runtime/output/masking';

describe('masking', () => {
  test('a secret split across chunks is still masked and nothing else changes', () => {
    const s = createValueMasker(['hunter2-secret']).stream();
    const out = [s.push(Buffer.from('login: hunter')), s.push(Buffer.from('2-sec')), s.push(Buffer.from('ret done\n')), s.end()];
    expect(Buffer.concat(out).toString()).toBe('login: ******** done\n');
  });
});

describe('cache keys', () => {
  test('templates render as CircleCI documents them', async () => {
    const key = await renderCacheKey('v1-{{ .Branch }}-{{ .Revision }}-{{ .BuildNum }}-{{ .Environment.NODE }}-{{ checksum "lock" }}-{{ epoch }}-{{ arch }}', {
      branch: 'main',
      revision: 'abc',
      buildNum: 7,
      environment: { NODE: '20' },
      checksum: async (f) => `sum(${f})`,
      now: () => new Date(1_700_000_000_000),
      arch: 'arch1-linux-amd64',
    });
    expect(key).toBe('v1-main-abc-7-20-sum(lock)-1700000000-arch1-linux-amd64');
    await expect(renderCacheKey('{{ .Nope }}', { revision: '', buildNum: 1, environment: {}, checksum: async () => '' })).rejects.toThrow(/unknown cache key template/);
  });
});

describe('JUnit as real tools write it', () => {
  test('pytest', () => {
    const xml = `<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="0" skipped="1" tests="3" time="0.05">
      <testcase classname="tests.test_app" name="test_ok" file="tests/test_app.py" line="3" time="0.001"/>
      <testcase classname="tests.test_app" name="test_err" time="0.002"><error message="fixture 'db' not found">E  fixture 'db' not found</error></testcase>
      <testcase classname="tests.test_app" name="test_skip" time="0.000"><skipped type="pytest.skip" message="not today">tests/test_app.py:9: not today</skipped></testcase>
      </testsuite></testsuites>`;
    expect(parseJUnit(xml).map((c) => [c.name, c.result, c.message, c.file])).toEqual([
      ['test_ok', 'success', '', 'tests/test_app.py'],
      ['test_err', 'failure', "fixture 'db' not found", ''],
      ['test_skip', 'skipped', 'not today', ''],
    ]);
  });
  test('Maven Surefire and go-junit-report', () => {
    const surefire = `<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" name="com.acme.CalcTest" time="0.031" tests="2" errors="0" skipped="0" failures="1">
  <properties><property name="java.version" value="17"/></properties>
  <testcase name="adds" classname="com.acme.CalcTest" time="0.002"/>
  <testcase name="divides" classname="com.acme.CalcTest" time="0.011"><failure message="expected: &lt;2&gt; but was: &lt;3&gt;" type="org.opentest4j.AssertionFailedError"><![CDATA[org.opentest4j.AssertionFailedError: expected: <2> but was: <3>]]></failure><system-out><![CDATA[log]]></system-out></testcase>
</testsuite>`;
    expect(parseJUnit(surefire)[1]).toEqual({ name: 'divides', classname: 'com.acme.CalcTest', file: '', result: 'failure', message: 'expected: <2> but was: <3>', run_time: 0.011 });
    const go = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" failures="1">
	<testsuite name="example.com/pkg" tests="2" failures="1" errors="0" id="0" hostname="h" time="0.003" timestamp="2024-01-01T00:00:00Z">
		<properties><property name="go.version" value="go1.22"></property></properties>
		<testcase name="TestA" classname="example.com/pkg" time="0.001"></testcase>
		<testcase name="TestB" classname="example.com/pkg" time="0.002"><failure message="Failed"><![CDATA[    b_test.go:9: boom]]></failure></testcase>
	</testsuite>
</testsuites>`;
    expect(parseJUnit(go).map((c) => `${c.classname}.${c.name}=${c.result}`)).toEqual(['example.com/pkg.TestA=success', 'example.com/pkg.TestB=failure']);
  });
});

describe('hostile JUnit reports', () => {
  const suite = (body: string) => `<?xml version="1.0"?>\n${body}`;

  test('billion laughs: entities a DOCTYPE defines are never expanded; the report is refused', () => {
    const levels = Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i};`.repeat(10)}">`).join('');
    const xml = suite(`<!DOCTYPE lolz [<!ENTITY lol0 "lol">${levels}]><testsuite><testcase name="&lol9;" classname="c"/></testsuite>`);
    const started = Date.now();
    expect(() => parseJUnit(xml)).toThrow(/declares a DOCTYPE; DTDs and the entities they define are not accepted/);
    expect(Date.now() - started).toBeLessThan(5000); // expanded, it would be 10^9 strings
  });

  test('an external entity is never read: the DOCTYPE is refused, and without one `&xxe;` stays as written', () => {
    const xxe = suite('<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><testsuite><testcase name="&xxe;" classname="c"><failure message="&xxe;"/></testcase></testsuite>');
    expect(() => parseJUnit(xxe)).toThrow(/DOCTYPE/);
    const bare = parseJUnit('<testsuite><testcase name="&xxe; &lt;ok&gt; &#65;&#x42;" classname="c"><failure message="&xxe;"/></testcase></testsuite>');
    expect(bare).toEqual([{ name: '&xxe; <ok> AB', classname: 'c', file: '', result: 'failure', message: '&xxe;', run_time: 0 }]);
    expect(JSON.stringify(bare)).not.toContain('root:');
  });

  test('a DOCTYPE written inside CDATA (an HTML page in a failure message) is text, not a DTD', () => {
    const xml = '<testsuite><testcase name="renders" classname="ui"><failure><![CDATA[<!DOCTYPE html><p>&amp;</p>]]></failure></testcase></testsuite>';
    expect(parseJUnit(xml)[0].message).toBe('<!DOCTYPE html><p>&amp;</p>');
  });

  test('deep nesting is refused', () => {
    const depth = 100_000;
    const xml = `<testsuites>${'<testsuite>'.repeat(depth)}<testcase name="x"/>${'</testsuite>'.repeat(depth)}</testsuites>`;
    expect(() => parseJUnit(xml)).toThrow(/nests deeper than 64/);
  });

  test('too many elements, or too large a report, are refused', () => {
    expect(() => parseJUnit(`<testsuite>${'<testcase name="t"/>'.repeat(1000)}</testsuite>`, { maxElements: 1000 })).toThrow(/more than 1000 elements/);
    const big = `<testsuite><testcase name="t"><system-out>${'x'.repeat(MAX_REPORT_CHARS)}</system-out></testcase></testsuite>`;
    expect(() => parseJUnit(big)).toThrow(/larger than 64 MiB/);
  });

  test('malformed XML says so', () => {
    expect(() => parseJUnit('<testsuite><testcase name="a"></testsuite>')).toThrow(/malformed XML at line 1, column \d+: Expected closing tag 'testcase'/);
  });
});
