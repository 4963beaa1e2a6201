import { InputError } from '../domain/errors';

/** One test case as the tests endpoint reports it. */
export interface TestCase {
  readonly name: string;
  readonly classname: string;
  readonly file: string;
  readonly result: 'success' | 'failure' | 'skipped';
  readonly message: string;
  /** Seconds. */
  readonly run_time: number;
}

interface XmlElement {
  readonly name: string;
  readonly attrs: Record<string, string>;
  readonly children: XmlElement[];
  text: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (whole, e: string) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[e] ?? whole;
  });
}

/** The most elements accepted in one report: bounds a hostile file. */
const MAX_ELEMENTS = 500_000;
const MAX_DEPTH = 64;

/**
 * A small XML reader for test reports: elements, attributes, text, CDATA, comments, processing
 * instructions; no DTDs (so no entity expansion to blow up).
 */
export function parseXml(source: string): XmlElement {
  const root: XmlElement = { name: '#document', attrs: {}, children: [], text: '' };
  const stack = [root];
  let count = 0;
  const re = /<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<!\[CDATA\[([\s\S]*?)\]\]>|<!DOCTYPE[^>]*>|<\/([^\s>]+)\s*>|<([^\s/>!?]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|([^<]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(source))) {
    const top = stack[stack.length - 1];
    if (m[1] !== undefined) top.text += m[1];
    else if (m[2] !== undefined) {
      if (stack.length > 1 && top.name === m[2]) stack.pop();
      else throw new InputError(`malformed XML: unexpected </${m[2].slice(0, 50)}>`, 'xml');
    } else if (m[3] !== undefined) {
      if (++count > MAX_ELEMENTS) throw new InputError(`the report has more than ${MAX_ELEMENTS} elements`, 'xml');
      const attrs: Record<string, string> = {};
      for (const a of m[4].matchAll(/([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) attrs[a[1]] = decodeEntities(a[2] ?? a[3] ?? '');
      const el: XmlElement = { name: m[3], attrs, children: [], text: '' };
      top.children.push(el);
      if (!m[5]) {
        if (stack.length > MAX_DEPTH) throw new InputError('the report nests too deeply', 'xml');
        stack.push(el);
      }
    } else if (m[6] !== undefined) top.text += decodeEntities(m[6]);
  }
  return root;
}

/**
 * Test cases of a JUnit XML report as jest-junit, pytest, Maven Surefire and go-junit-report
 * write it: `<testsuites>` or a bare `<testsuite>`, nested suites, `<failure>`/`<error>` as
 * failures, `<skipped>` as skipped; `file` from the case or its suite (`file`/`filepath`).
 */
export function parseJUnit(xml: string): TestCase[] {
  const doc = parseXml(xml);
  const cases: TestCase[] = [];
  const visit = (el: XmlElement, suiteFile: string, suiteName: string) => {
    if (el.name === 'testsuite' || el.name === 'testsuites') {
      const file = el.attrs.file ?? el.attrs.filepath ?? suiteFile;
      for (const child of el.children) visit(child, file, el.attrs.name ?? suiteName);
      return;
    }
    if (el.name !== 'testcase') {
      for (const child of el.children) visit(child, suiteFile, suiteName);
      return;
    }
    const failure = el.children.find((c) => c.name === 'failure' || c.name === 'error');
    const skipped = el.children.find((c) => c.name === 'skipped');
    const message = failure ? (failure.attrs.message || failure.text.trim()) : skipped ? (skipped.attrs.message ?? skipped.text.trim()) : '';
    const time = Number(el.attrs.time);
    cases.push({
      name: el.attrs.name ?? '',
      classname: el.attrs.classname ?? suiteName,
      file: el.attrs.file ?? suiteFile,
      result: failure ? 'failure' : skipped ? 'skipped' : 'success',
      message: message.slice(0, 64 * 1024),
      run_time: Number.isFinite(time) && time >= 0 ? time : 0,
    });
  };
  for (const child of doc.children) visit(child, '', '');
  return cases;
}
