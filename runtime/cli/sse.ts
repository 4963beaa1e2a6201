import { TextDecoder } from 'node:util';

export interface SseEvent {
  readonly event: string;
  /** The event's data lines, joined by newlines. */
  readonly data: string;
  /** When the chunk holding the event's end arrived (ms since the epoch). */
  readonly receivedAt: number;
}

/**
 * Reads a Server-Sent Events body as events, in order. Comments (keep-alives) and events without
 * data are skipped; an event split across network chunks is put back together.
 */
export async function* readSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    const receivedAt = Date.now();
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length > 0) yield { event, data: data.join('\n'), receivedAt };
    }
  }
}
