interface Segment {
  text: string;
  classes: string[];
}
interface AnsiState {
  pending: string;
}
interface AnsiModule {
  initialState(): AnsiState;
  parseAnsi(text: string, state?: AnsiState): { segments: Segment[]; state: AnsiState };
  escapeHtml(text: string): string;
  segmentsToHtml(segments: Segment[]): string;
}

// Plain browser JS (no types): loaded the way Node loads it, as the page's UMD module.
const ansi = require('../../runtime/ui/ansi.js') as AnsiModule;

const ESC = '\x1b';

function parse(...chunks: string[]): Segment[] {
  let state = ansi.initialState();
  const all: Segment[] = [];
  for (const chunk of chunks) {
    const result = ansi.parseAnsi(chunk, state);
    state = result.state;
    all.push(...result.segments);
  }
  return all;
}

describe('ANSI output to segments', () => {
  test('markup in build output stays text, and is escaped when turned into HTML', () => {
    const segments = parse('<script>alert(1)</script> & <b>x</b>\n');
    expect(segments).toEqual([{ text: '<script>alert(1)</script> & <b>x</b>\n', classes: [] }]);
    const html = ansi.segmentsToHtml(segments);
    expect(html).not.toContain('<script>');
    expect(html).toBe('&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;x&lt;/b&gt;\n');
  });

  test('markup inside a coloured span is escaped too', () => {
    const html = ansi.segmentsToHtml(parse(`${ESC}[31m<script>"x"</script>${ESC}[0m`));
    expect(html).toBe('<span class="ansi-red">&lt;script&gt;&quot;x&quot;&lt;/script&gt;</span>');
  });

  test('SGR colours, bright colours, bold, default colour and reset', () => {
    expect(parse(`plain ${ESC}[31mred${ESC}[0m ${ESC}[1;92mbold bright green${ESC}[39m bold only${ESC}[0m end`)).toEqual([
      { text: 'plain ', classes: [] },
      { text: 'red', classes: ['ansi-red'] },
      { text: ' ', classes: [] },
      { text: 'bold bright green', classes: ['ansi-bright-green', 'ansi-bold'] },
      { text: ' bold only', classes: ['ansi-bold'] },
      { text: ' end', classes: [] },
    ]);
  });

  test('an empty SGR resets like 0', () => {
    expect(parse(`${ESC}[34mblue${ESC}[mplain`)).toEqual([
      { text: 'blue', classes: ['ansi-blue'] },
      { text: 'plain', classes: [] },
    ]);
  });

  test('each of the eight colours and their bright forms gets its class', () => {
    const names = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];
    names.forEach((name, i) => {
      expect(parse(`${ESC}[${30 + i}mx`)).toEqual([{ text: 'x', classes: [`ansi-${name}`] }]);
      expect(parse(`${ESC}[${90 + i}mx`)).toEqual([{ text: 'x', classes: [`ansi-bright-${name}`] }]);
    });
  });

  test('other escape sequences and control characters are stripped', () => {
    const text = `a${ESC}[2K${ESC}[1Ab${ESC}]0;window title\x07c${ESC}]8;;http://x${ESC}\\d${ESC}(Be\x08f\r\ng${ESC}7h`;
    expect(parse(text)).toEqual([{ text: 'abcdef\ngh', classes: [] }]);
  });

  test('256-colour and true-colour arguments are skipped, not read as codes', () => {
    // Without skipping, the 1 in 38;5;1 would turn bold on and the 31 in 2;31;… would turn red.
    expect(parse(`${ESC}[38;5;1mx${ESC}[38;2;31;0;0my`)).toEqual([{ text: 'xy', classes: [] }]);
  });

  test('an escape sequence split across chunks still applies', () => {
    expect(parse('one ', `${ESC}`, '[3', '1mred', `${ESC}[0`, 'm two')).toEqual([
      { text: 'one ', classes: [] },
      { text: 'red', classes: ['ansi-red'] },
      { text: ' two', classes: [] },
    ]);
  });

  test('the colour carries over to the next chunk', () => {
    expect(parse(`${ESC}[33myellow `, 'still yellow')).toEqual([
      { text: 'yellow ', classes: ['ansi-yellow'] },
      { text: 'still yellow', classes: ['ansi-yellow'] },
    ]);
  });

  test('parsing does not change the state it was given', () => {
    const state = ansi.initialState();
    ansi.parseAnsi(`${ESC}[31mred ${ESC}[1`, state);
    expect(state).toEqual(ansi.initialState());
  });
});
