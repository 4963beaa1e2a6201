import type { HostileRequest } from './hostile-cases';
import { rawRequest, type HostileTarget } from './hostile-server';

/** Sends one catalogue request (raw bytes as they are, the rest through fetch) and gives the status, body and time taken. */
export async function sendHostile(t: HostileTarget, request: HostileRequest): Promise<{ status: number; body: string; ms: number }> {
  const started = performance.now();
  if (request.raw) {
    const answer = await rawRequest(t.port, request.raw, 30_000);
    return { status: answer.status, body: answer.body, ms: performance.now() - started };
  }
  const headers: Record<string, string> = { ...request.headers };
  let body: string | Buffer | undefined = request.body;
  if (request.json !== undefined) {
    body = JSON.stringify(request.json);
    headers['Content-Type'] ??= 'application/json';
  }
  const res = await fetch(`${t.url}${request.path}`, { method: request.method, headers, body: body as RequestInit["body"] });
  const text = await res.text();
  return { status: res.status, body: text, ms: performance.now() - started };
}
