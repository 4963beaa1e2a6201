import type * as FastXmlParser from 'fast-xml-parser';
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

/** The largest report read, in UTF-16 code units (what a 64 MiB file of ASCII decodes to). */
export const MAX_REPORT_CHARS = 64 * 1024 * 1024;
/** How much of a report is read: bounds a hostile file. */
export interface XmlLimits {
  /** Most elements. @default 500_000 */
  readonly maxElements?: number;
}
const MAX_ELEMENTS = 500_000;
/** Deepest nesting of elements. */
const MAX_DEPTH = 64;

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/**
 * XML's five predefined entities and character references, in one pass. The parser is told to
 * expand no entity at all, so a document cannot define any that expand (billion laughs) or that
 * name a file or URL (external entities); `&name;` for anything else stays as written.
 */
function decodeEntities(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (whole, e: string) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[e] ?? whole;
  });
}

/** Whether the prolog (before the root element) declares a DOCTYPE. */
function declaresDoctype(source: string): boolean {
  const prolog = /^\uFEFF?(?:\s+|<\?[\s\S]*?\?>|<!--[\s\S]*?-->)*/.exec(source)![0];
  return source.startsWith('<!DOCTYPE', prolog.length) || source.startsWith('<!doctype', prolog.length);
}

type Ordered = Record<string, unknown> & { ':@'?: Record<string, string> };

/**
 * Reads a test report with fast-xml-parser: elements, attributes, text, CDATA. Comments and
 * processing instructions are dropped. No DTD: a report that declares a DOCTYPE is refused, and
 * no entity is expanded beyond XML's predefined five and character references.
 */
export function parseXml(source: string, limits: XmlLimits = {}): XmlElement {
  const maxElements = limits.maxElements ?? MAX_ELEMENTS;
  if (source.length > MAX_REPORT_CHARS) throw new InputError(`the report is larger than ${MAX_REPORT_CHARS / 1024 / 1024} MiB`, 'xml');
  if (declaresDoctype(source)) throw new InputError('the report declares a DOCTYPE; DTDs and the entities they define are not accepted', 'xml');
  let elements = 0;
  // fast-xml-parser loads on the first report, not with the server (issue #19).
  const { XMLParser, XMLValidator } = require('fast-xml-parser') as typeof FastXmlParser;
  const parser = new XMLParser({
    preserveOrder: true,
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    processEntities: false,
    ignoreDeclaration: true,
    ignorePiTags: true,
    cdataPropName: '#cdata',
    maxNestedTags: MAX_DEPTH,
    updateTag(tagName) {
      if (++elements > maxElements) throw new InputError(`the report has more than ${maxElements} elements`, 'xml');
      return tagName;
    },
  });
  let nodes: Ordered[];
  try {
    nodes = parser.parse(source) as Ordered[];
  } catch (error) {
    if (error instanceof InputError) throw error;
    const message = (error as Error).message;
    throw new InputError(/nested tags/i.test(message) ? `the report nests deeper than ${MAX_DEPTH} elements` : `malformed XML: ${message.slice(0, 200)}`, 'xml');
  }
  // The parser takes what it can of a broken document; a report cut short or mis-nested is
  // refused instead, as it was before (after parsing, which bounds what the validator reads).
  const valid = XMLValidator.validate(source);
  if (valid !== true) throw new InputError(`malformed XML at line ${valid.err.line}, column ${valid.err.col}: ${valid.err.msg.slice(0, 200)}`, 'xml');
  const convert = (list: Ordered[], into: XmlElement) => {
    for (const node of list) {
      const name = Object.keys(node).find((k) => k !== ':@')!;
      const value = node[name];
      if (name === '#text') into.text += decodeEntities(String(value));
      else if (name === '#cdata') for (const part of value as Ordered[]) into.text += String(part['#text'] ?? '');
      else {
        const attrs: Record<string, string> = {};
        for (const [k, v] of Object.entries(node[':@'] ?? {})) attrs[k] = decodeEntities(String(v));
        const el: XmlElement = { name, attrs, children: [], text: '' };
        into.children.push(el);
        convert(value as Ordered[], el);
      }
    }
  };
  const root: XmlElement = { name: '#document', attrs: {}, children: [], text: '' };
  convert(nodes, root);
  return root;
}

/**
 * Test cases of a JUnit XML report as jest-junit, pytest, Maven Surefire and go-junit-report
 * write it: `<testsuites>` or a bare `<testsuite>`, nested suites, `<failure>`/`<error>` as
 * failures, `<skipped>` as skipped; `file` from the case or its suite (`file`/`filepath`).
 */
export function parseJUnit(xml: string, limits: XmlLimits = {}): TestCase[] {
  const doc = parseXml(xml, limits);
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
