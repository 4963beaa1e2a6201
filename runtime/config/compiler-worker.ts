import { setPriority } from 'node:os';
import { parentPort, type MessagePort } from 'node:worker_threads';
import { compileConfig, createOrbDocumentCache } from './compiler';
import type { OrbSource } from './orb-source';
import type { FromWorker, ToWorker } from './compiler-pool';

/**
 * A config compiler worker thread: compiles one config at a time for the pool in the parent.
 * Orbs are looked up by the parent (its OrbSource reads the database) and asked for by message;
 * parsed orb documents are kept here between compilations (orb versions never change).
 */
if (!parentPort) throw new Error('compiler-worker.ts runs as a worker thread (see compiler-pool.ts)');
const port: MessagePort = parentPort;

// On Linux a priority set for "this process" applies to the calling thread alone: the compiler
// thread gives way to the thread that serves requests and renews leases when both want the CPU.
// (Elsewhere it would renice the whole process, so it is left alone there.)
if (process.platform === 'linux') {
  try {
    setPriority(0, 10);
  } catch {
    // Not allowed here (a restricted container): compile at the normal priority.
  }
}

const orbCache = createOrbDocumentCache(32);
const waiting = new Map<number, { resolve: (v: { version: string; source: string } | undefined) => void; reject: (e: Error) => void }>();
let nextOrbRequest = 1;

const orbs: OrbSource = {
  resolve(name, versionRef) {
    const id = nextOrbRequest++;
    return new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      port.postMessage({ type: 'orb', id, name, versionRef } satisfies FromWorker);
    });
  },
};

port.on('message', (message: ToWorker) => {
  if (message.type === 'orb') {
    const w = waiting.get(message.id);
    waiting.delete(message.id);
    if (message.error !== undefined) w?.reject(new Error(message.error));
    else w?.resolve(message.found);
    return;
  }
  void compile(message);
});

async function compile(job: Extract<ToWorker, { type: 'compile' }>): Promise<void> {
  let reply: FromWorker;
  try {
    const r = await compileConfig(job.source, { trigger: job.trigger, budgets: job.budgets, orbCache, ...(job.orbs ? { orbs } : {}) });
    // The compiled text is rendered here, inside the budgets, and sent with the plan.
    reply = { type: 'result', id: job.id, result: r.ok ? { ok: true, plan: r.plan, compiledYaml: r.compiledYaml } : { ok: false, problems: r.problems } };
  } catch (error) {
    reply = { type: 'failed', id: job.id, message: (error as Error)?.message ?? String(error) };
  }
  port.postMessage(reply);
}

port.postMessage({ type: 'ready' } satisfies FromWorker);
