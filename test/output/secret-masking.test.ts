import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import fc from 'fast-check';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import type { Executor } from '../../runtime/agent/executor';
import { createAgentClient } from '../../runtime/agent/http-reporter';
import { detectIsolation } from '../../runtime/agent/sandbox/isolation';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import { createStepHandlers } from '../../runtime/agent/steps';
import { createOutputStepHandlers } from '../../runtime/agent/steps/output-steps';
import type { JobSpec, RunStep } from '../../runtime/config/plan';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { decompressChunk } from '../../runtime/output/log-chunk';
import { createSecretMasker, MASK, maskedForms, maskText, noMasking, type OutputMasker } from '../../runtime/output/masking';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';
import { claimTasks, runnerClass } from '../support/runner-tasks';

/** A secret with a space, `/`, `+`, a 2-byte, a 3-byte and a 4-byte UTF-8 character. */
const TOKEN = 'tok3n/Secret+é€𝄞 42-xyz';

/** Runs `text` through a fresh stream of `masker`, cut at `cuts`, each piece in a buffer the caller then overwrites. */
function through(masker: OutputMasker, text: Buffer, cuts: readonly number[] = []): { out: string; pieces: Buffer[] } {
  const stream = masker.stream();
  const pieces: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, text.length]) {
    const piece = Buffer.from(text.subarray(at, Math.max(at, cut)));
    pieces.push(Buffer.from(stream.push(piece)));
    piece.fill(0x23); // as an executor reusing its read buffer
    at = Math.max(at, cut);
  }
  pieces.push(Buffer.from(stream.end()));
  return { out: Buffer.concat(pieces).toString(), pieces };
}

const mask = (values: string[], text: string, cuts?: number[]) => through(createSecretMasker(values), Buffer.from(text), cuts).out;
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** The masking a test expects: every occurrence of every form found in the whole text, overlapping ones as one. */
function reference(values: string[], text: Buffer): string {
  const forms = [...new Set(values.flatMap(maskedForms))].map((f) => Buffer.from(f));
  const ranges: [number, number][] = [];
  for (const f of forms) for (let i = text.indexOf(f); i !== -1; i = text.indexOf(f, i + 1)) ranges.push([i, i + f.length]);
  ranges.sort((x, y) => x[0] - y[0]);
  const merged: [number, number][] = [];
  for (const [start, end] of ranges) {
    const last = merged[merged.length - 1];
    if (last && start < last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }
  const parts: Buffer[] = [];
  let at = 0;
  for (const [start, end] of merged) {
    parts.push(text.subarray(at, start), Buffer.from(MASK));
    at = end;
  }
  parts.push(text.subarray(at));
  return Buffer.concat(parts).toString('latin1');
}

/** Masks next to each other read as one (a range found in two writes may be masked twice). */
const oneMask = (s: string) => s.replace(/(\*{8})+/g, MASK);

describe('the secret masker', () => {
  test('a value split at every byte, or written a byte at a time, is masked and nothing else changes', () => {
    for (const value of ['hunter2-secret', TOKEN, 'x'.repeat(37) + '-long-value-' + 'y'.repeat(150)]) {
      const masker = createSecretMasker([value]);
      const text = Buffer.from(`login: ${value} done\n`);
      for (let cut = 0; cut <= text.length; cut++) expect(through(masker, text, [cut]).out).toBe(`login: ${MASK} done\n`);
      const bytes = Array.from({ length: text.length }, (_, i) => i);
      expect(through(masker, text, bytes).out).toBe(`login: ${MASK} done\n`);
      expect(through(masker, text, bytes.filter((i) => i % 3 === 1)).out).toBe(`login: ${MASK} done\n`);
    }
  });

  test('base64, URL-encoded and JSON-escaped forms are masked as tools print them', () => {
    const v = TOKEN;
    const plain = (text: string) => mask([v], text);
    expect(plain(`b64 ${b64(v)} end`)).toBe(`b64 ${MASK} end`);
    expect(plain(`url-safe ${Buffer.from(v).toString('base64url')} end`)).toBe(`url-safe ${MASK} end`);
    expect(plain(`uri ${encodeURIComponent(v)} end`)).toBe(`uri ${MASK} end`);
    expect(plain(`form ${new URLSearchParams({ t: v })}&x=1`)).toBe(`form t=${MASK}&x=1`);
    expect(plain(`form ${encodeURIComponent(v).replace(/%20/g, '+')} end`)).toBe(`form ${MASK} end`);
    expect(plain(JSON.stringify({ token: v }))).toBe(`{"token":"${MASK}"}`);
    // Python's json.dumps: \u escapes for non-ASCII, in lower case.
    const python = JSON.stringify({ token: v }).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    expect(plain(python)).toBe(`{"token":"${MASK}"}`);

    // `echo "$TOKEN" | base64`: the newline changes the last characters only.
    const echoed = plain(b64(`${v}\n`));
    expect(echoed).toMatch(/^\*{8}[A-Za-z0-9+/]{0,3}=*$/);
    // Inside a longer base64 text, at each of the three alignments: what is left encodes the
    // neighbours and at most a few bits of the value.
    for (const prefix of ['', 'u', 'us', 'user:']) {
      const encoded = b64(`${prefix}${v}:rest-of-it`);
      const out = plain(`Authorization: Basic ${encoded}`);
      expect(out).toContain(MASK);
      const [before, after] = out.slice('Authorization: Basic '.length).split(MASK);
      expect(encoded.startsWith(before)).toBe(true);
      expect(before.length).toBeLessThanOrEqual(Math.ceil((prefix.length * 8) / 6) + 1);
      expect(encoded.endsWith(after)).toBe(true);
      expect(after.length).toBeLessThanOrEqual(Math.ceil(('rest-of-it'.length * 8) / 6) + 4);
    }
    // `base64` wraps at 76 columns: a long value's lines are masked too.
    const long = `-----BEGIN KEY-----\n${'Zm9vYmFy'.repeat(20)}\n-----END KEY-----\n`;
    const wrapped = b64(long).replace(/(.{76})/g, '$1\n');
    expect(mask([long], wrapped)).not.toMatch(/[A-Za-z0-9+/]{9}/);
  });

  test('overlapping values, and a value that is a prefix of another, leave no part of either', () => {
    expect(mask(['alpha-bravo', 'bravo-charlie'], 'x alpha-bravo-charlie y')).toBe(`x ${MASK} y`);
    expect(mask(['secret', 'secret-token-2'], 'a secret-token-2 b secret c')).toBe(`a ${MASK} b ${MASK} c`);
    expect(mask(['secret-token-2', 'secret'], 'secret-token-')).toBe(`${MASK}-token-`);
    expect(mask(['abcabc'], 'abcabcabcabc')).toBe(MASK);
    // A value inside another's base64 and the other way round.
    const inner = 'c2VjcmV0';
    expect(mask(['secret', inner], `${b64('secret')} ${inner}`)).toBe(`${MASK} ${MASK}`);
  });

  test('values shorter than 4 characters, and true/false, are not masked; 4 characters are', () => {
    expect(createSecretMasker(['abc', 'true', 'False', ''])).toBe(noMasking);
    expect(mask(['abc', 'true', 'abcd'], 'abc true abcd abcde')).toBe(`abc true ${MASK} ${MASK}e`);
    // Characters, not bytes: three 2-byte characters are too short, four are not.
    expect(mask(['éèê'], 'éèê')).toBe('éèê');
    expect(mask(['éèêë'], 'éèêë!')).toBe(`${MASK}!`);
  });

  test('non-ASCII values are masked, and what a stream returns never ends inside a UTF-8 character', () => {
    const values = [TOKEN, 'пароль-секрет', '密码很长的秘密'];
    const masker = createSecretMasker(values);
    const text = Buffer.from(`ü ${TOKEN} € пароль-секрет 𝄞 ${encodeURIComponent('密码很长的秘密')} 密码很长的秘 ñ\n`);
    const strict = new TextDecoder('utf-8', { fatal: true });
    for (let cut = 0; cut <= text.length; cut++) {
      const { out, pieces } = through(masker, text, [cut]);
      expect(out).toBe(`ü ${MASK} € ${MASK} 𝄞 ${MASK} 密码很长的秘 ñ\n`);
      for (const piece of pieces) expect(() => strict.decode(piece)).not.toThrow();
    }
  });

  test('writes of any sizes mask as the whole output masked at once (random values, forms and cuts)', () => {
    const alphabet = fc.constantFrom('a', 'b', 'é', '/', '+', '=', ' ', '"', '\n', 'Y', 'W', 'j');
    const value = fc.array(alphabet, { minLength: 1, maxLength: 24 }).map((a) => a.join(''));
    fc.assert(
      fc.property(fc.array(value, { minLength: 1, maxLength: 5 }), fc.array(fc.oneof(fc.nat(5), alphabet), { maxLength: 80 }), fc.array(fc.nat(400), { maxLength: 10 }), (values, recipe, cuts) => {
        const text = Buffer.from(
          recipe
            .map((r) => {
              if (typeof r === 'string') return r;
              const v = values[r % values.length];
              return [v, b64(v), encodeURIComponent(v), JSON.stringify(v), b64(`x${v}`), v.slice(1)][r];
            })
            .join(''),
        );
        const got = through(createSecretMasker(values), text, [...cuts].sort((x, y) => x - y).map((c) => c % (text.length + 1))).out;
        const actual = oneMask(Buffer.from(got).toString('latin1'));
        const expected = oneMask(reference(values, text));
        if (actual !== expected) {
          // One difference is allowed: a value that overlaps one masked in an earlier write (the
          // base64 of "=aaa" ends in "=", then "aaa" arrives) is not merged into that mask, since
          // the mask was sent. Then no form of any value may be left in what was sent.
          for (const v of values) for (const form of maskedForms(v)) if (v.length >= 4) expect(Buffer.from(got).toString()).not.toContain(form);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('hostile output and values: a value repeated for megabytes, a 64 KiB value, a hundred values', () => {
    const repeated = Buffer.from('pw12'.repeat(256 * 1024) + '\n');
    let started = performance.now();
    const { out } = through(createSecretMasker(['pw12']), repeated, [100_000, 100_001, 700_000]);
    expect(out).not.toContain('pw12');
    expect(out).toMatch(/^(\*{8})+\n$/);
    expect(performance.now() - started).toBeLessThan(5000);

    // A certificate bundle as one value: built and searched in bounded time, masked in any form.
    const bundle = Array.from({ length: 1100 }, (_, i) => `${i.toString(36).padStart(4, '0')}${'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo'.slice(i % 20)}`.padEnd(63, '+')).join('\n');
    expect(Buffer.byteLength(bundle)).toBeGreaterThan(64 * 1024);
    started = performance.now();
    const masker = createSecretMasker([bundle]);
    expect(through(masker, Buffer.from(`cert: ${bundle}\nb64: ${b64(bundle).replace(/(.{76})(?=.)/g, '$1\n')}\n`), [5000, 90_000]).out).toBe(`cert: ${MASK}\nb64: ${MASK}\n`);
    expect(performance.now() - started).toBeLessThan(5000);

    // A hundred values and a megabyte of ordinary output: nothing changes, and quickly.
    const values = Array.from({ length: 100 }, (_, i) => `value-${i}-${(i * 2654435761).toString(36)}`);
    const lines = Buffer.from(Array.from({ length: 20_000 }, (_, n) => `12:00:${n % 60} INFO worker-${n % 16} request id=${(n * 40503).toString(16)} ok\n`).join(''));
    started = performance.now();
    expect(through(createSecretMasker(values), lines, [65_536, 131_072]).out).toBe(lines.toString());
    expect(performance.now() - started).toBeLessThan(5000);
  });

  test('maskText masks a whole text at once, as a step name', () => {
    expect(maskText(createSecretMasker([TOKEN]), `Deploy with ${TOKEN}`)).toBe(`Deploy with ${MASK}`);
    expect(maskText(noMasking, 'Deploy')).toBe('Deploy');
    // The same masker for a text, then a step's output; each of the value's forms, in a text too.
    const masker = createSecretMasker([TOKEN]);
    expect(maskText(masker, 'Deploy to production')).toBe('Deploy to production');
    for (const form of maskedForms(TOKEN)) expect(maskText(masker, `pre ${form} post`)).toBe(`pre ${MASK} post`);
    expect(through(masker, Buffer.from(`token ${TOKEN} twice ${TOKEN}\n`), [7]).out).toBe(`token ${MASK} twice ${MASK}\n`);
    expect(maskText(masker, `${TOKEN}${TOKEN} and ${TOKEN.slice(0, -1)}`)).toBe(`${MASK} and ${TOKEN.slice(0, -1)}`);
  });
});

/** An in-memory reporter: the step names and the output text of each step, as the server would store them. */
function recordingReporter() {
  const names: string[] = [];
  const chunks: Buffer[][] = [];
  const reporter: TaskReporter = {
    heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
    stepStarted: async (step) => void (names[step.index] = step.name),
    async output(step, seq, chunk) {
      (chunks[step] ??= [])[seq] = await decompressChunk(chunk);
    },
    stepFinished: async () => undefined,
    complete: async () => undefined,
  };
  return { reporter, names, output: (step: number) => Buffer.concat(chunks[step] ?? []).toString() };
}

function taskWith(steps: RunStep[], environment: Record<string, string>, secrets: TaskContext['secrets']): TaskContext {
  const spec: JobSpec = { executor: { kind: 'shell' }, steps, environment, workingDirectory: '~/project', parallelism: 1 };
  return {
    taskId: 't-secrets',
    nodeIndex: 0,
    parallelism: 1,
    jobId: 'j-1',
    jobName: 'deploy',
    jobNumber: 1,
    spec,
    workflowId: 'w-1',
    workflowName: 'w',
    pipelineId: 'p-1',
    pipelineNumber: 1,
    projectSlug: 'gh/acme/app',
    projectOrg: 'acme',
    projectName: 'app',
    repoUrl: '/nowhere',
    revision: 'abc',
    secrets,
  };
}

const run = (name: string, command: string): RunStep => ({ type: 'run', name, command, when: 'always' });

describe('the agent with a task that carries secrets', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'gyre-secret-agent-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const log = createLogger({ level: 'silent' });
  const shell = () => createShellExecutor({ taskDir: join(dir, 'task'), isolation: detectIsolation({ mode: 'shell' }) });

  test('sets them below the built-in and config environment, refuses names that are not shell names, and masks output, step names and errors', async () => {
    const task = taskWith(
      [
        run(`Deploy with ${TOKEN}`, 'echo "token=$DEPLOY_TOKEN greeting=$GREETING db=$DB_PASSWORD home=$HOME"; echo "path=$PATH"; env | grep -c "^DEPLOY_TOKEN=" || true'),
        run('fails', 'exit 1'),
      ],
      { GREETING: 'from-config', DB_PASSWORD: 'pg-Pass-9f3k' },
      // A hostile name would put its own PATH first in the environment a step gets.
      { env: { DEPLOY_TOKEN: TOKEN, GREETING: 'from-a-context', HOME: '/tmp/not-the-home', 'PATH=/nowhere:/bin': 'x', 'BAD NAME': 'y' }, names: ['DB_PASSWORD'] },
    );
    const handlers = createStepHandlers({
      run: (step, ctx) => (step.name === 'fails' ? Promise.reject(new Error(`cannot deploy: ${TOKEN} was refused`)) : createStepHandlers().run(step, ctx)),
    });
    const { reporter, names, output } = recordingReporter();
    let home = '';
    const result = await runTask({
      task,
      reporter,
      handlers,
      log,
      heartbeatMs: 10_000,
      executor: async () => {
        const executor: Executor = await shell();
        home = executor.home;
        return executor;
      },
    });
    expect(result).toEqual({ outcome: 'failed' });
    expect(names).toEqual([`Deploy with ${MASK}`, 'fails']);
    const lines = output(0).split('\n');
    expect(lines[0]).toBe(`token=${MASK} greeting=from-config db=${MASK} home=${home}`);
    // The host's PATH, after the job directory's bin (the in-job circleci command).
    expect(lines[1]).toBe(`path=${home}/.gyre-job/bin:${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`);
    expect(lines[2]).toBe('1');
    expect(output(1)).toBe(`\ncannot deploy: ${MASK} was refused\n`);
  });

  /** A reporter whose secrets answer when the test says, and that counts the calls before it did. */
  function heldSecrets(answer: () => Promise<Awaited<ReturnType<NonNullable<TaskReporter['secrets']>>>>) {
    const recording = recordingReporter();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const reporter: TaskReporter = { ...recording.reporter, secrets: () => released.then(answer) };
    return { ...recording, reporter, release };
  }
  const exists = (path: string) => {
    try {
      statSync(path);
      return true;
    } catch {
      return false;
    }
  };

  test('the executor is made and the job directory written while the secrets are read, and the steps then get them, masked', async () => {
    const task = taskWith([run('deploy', 'echo "token=$DEPLOY_TOKEN"; command -v circleci >/dev/null && echo "cli=yes"')], {}, undefined);
    const { reporter, output, release } = heldSecrets(async () => ({ env: { DEPLOY_TOKEN: TOKEN } }));
    let made: Executor | undefined;
    const running = runTask({ task, reporter, log, heartbeatMs: 10_000, executor: async () => (made = await shell()) });
    // The secrets have not answered: the sandbox and the in-job command are there all the same.
    await until('the in-job command', async () => made?.jobDir && exists(join(made.jobDir.path, 'bin', 'circleci')), 30_000, 10);
    expect(output(0)).toBe('');
    release();
    expect(await running).toEqual({ outcome: 'success' });
    expect(output(0)).toBe(`token=${MASK}\ncli=yes\n`);
  });

  test('an executor that needs the secrets (image credentials) waits for them through withSecrets; the task it is first given has none', async () => {
    const task = taskWith([run('pull', 'true')], {}, undefined);
    const { reporter, release } = heldSecrets(async () => ({ env: { REGISTRY_PASSWORD: TOKEN } }));
    const seen: { before?: unknown; after?: string } = {};
    const running = runTask({
      task,
      reporter,
      log,
      heartbeatMs: 10_000,
      executor: async (claimed, withSecrets) => {
        seen.before = claimed.secrets;
        seen.after = (await withSecrets()).secrets?.env.REGISTRY_PASSWORD;
        return shell();
      },
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual({ before: undefined });
    release();
    expect(await running).toEqual({ outcome: 'success' });
    expect(seen.after).toBe(TOKEN);
  });

  test('secrets refused: the job fails with the reason, a waiting executor is never made, and a sandbox made beside is removed', async () => {
    const task = taskWith([run('deploy', 'echo ran')], {}, undefined);
    const waiting = heldSecrets(async () => ({ refused: 'the context deploy-keys is restricted to the main branch' }));
    let pulled = false;
    waiting.release();
    const refusedWaiting = await runTask({
      task,
      reporter: waiting.reporter,
      log,
      heartbeatMs: 10_000,
      executor: async (_claimed, withSecrets) => {
        await withSecrets();
        pulled = true;
        return shell();
      },
    });
    expect(refusedWaiting).toEqual({ outcome: 'failed' });
    expect(pulled).toBe(false);
    expect(waiting.output(0)).toContain('Unauthorized: the context deploy-keys is restricted to the main branch');

    const beside = heldSecrets(async () => ({ refused: 'the context deploy-keys is restricted to the main branch' }));
    let made: Executor | undefined;
    const running = runTask({ task, reporter: beside.reporter, log, heartbeatMs: 10_000, executor: async () => (made = await shell()) });
    await until('the sandbox', async () => made, 30_000, 10);
    expect(exists(made!.home)).toBe(true);
    beside.release();
    expect(await running).toEqual({ outcome: 'failed' });
    expect(beside.output(0)).toBe("The job's environment could not be made: Unauthorized: the context deploy-keys is restricted to the main branch\n");
    expect(exists(made!.home)).toBe(false);
  });

  test('a lease lost while the secrets are read ends the task at once, and the sandbox made beside is removed', async () => {
    const task = taskWith([run('deploy', 'echo ran')], {}, undefined);
    const { reporter, output, release } = heldSecrets(async () => {
      throw new StaleLeaseError('t-secrets', 'lease-1');
    });
    let made: Executor | undefined;
    const running = runTask({ task, reporter, log, heartbeatMs: 10_000, executor: async () => (made = await shell()) });
    await until('the sandbox', async () => made, 30_000, 10);
    release();
    expect(await running).toEqual({ lostLease: true });
    expect(output(0)).toBe('');
    expect(exists(made!.home)).toBe(false);
  });

  test('secrets that take longer than the lease to answer: the lease is renewed meanwhile and the steps run', async () => {
    const task = taskWith([run('deploy', 'echo "token=$DEPLOY_TOKEN"')], {}, undefined);
    const held = heldSecrets(async () => ({ env: { DEPLOY_TOKEN: TOKEN } }));
    let beats = 0;
    const reporter: TaskReporter = { ...held.reporter, heartbeat: async () => (beats++, { leaseExpiresAt: new Date(Date.now() + 2_000), cancelRequested: false }) };
    // The lease was granted as the task was claimed (now): 2 s, renewed every 250 ms. The secrets
    // answer after 1.5 leases (a lease long enough that a stalled event loop does not lose it).
    const running = runTask({ task, reporter, log, heartbeatMs: 250, leaseTtlMs: 2_000, leaseRenewedAt: performance.now(), executor: shell });
    await new Promise((r) => setTimeout(r, 3_000));
    expect(beats).toBeGreaterThanOrEqual(5);
    held.release();
    expect(await running).toEqual({ outcome: 'success' });
    expect(held.output(0)).toBe(`token=${MASK}\n`);
  });

  test('a job environment that cannot be made reports its reason masked, under a masked step name', async () => {
    const task = taskWith([run(`Log in as ${TOKEN}`, 'true')], {}, { env: { REGISTRY_PASSWORD: TOKEN } });
    const { reporter, names, output } = recordingReporter();
    const result = await runTask({ task, reporter, log, heartbeatMs: 10_000, executor: () => Promise.reject(new Error(`pull access denied (password ${TOKEN})`)) });
    expect(result).toEqual({ outcome: 'failed' });
    expect(names).toEqual([`Log in as ${MASK}`]);
    expect(output(0)).toBe(`The job's environment could not be made: pull access denied (password ${MASK})\n`);
  });
});

const RESOURCE_CLASS = 'acme/secrets';
const NODE = process.execPath;

/** One job on a runner class whose step prints the secret in every way, and whose name holds it. */
const CONFIG = `version: 2.1
jobs:
  deploy:
    machine: true
    resource_class: ${RESOURCE_CLASS}
    environment:
      DB_PASSWORD: pg-Pass-9f3k
    steps:
      - run:
          name: "Deploy with ${TOKEN}"
          command: |
            echo "plain=$DEPLOY_TOKEN"
            echo "b64=$(printf '%s' "$DEPLOY_TOKEN" | base64 -w0)"
            echo "echoed=$(echo "$DEPLOY_TOKEN" | base64 -w0)"
            echo "basic=$(printf 'user:%s' "$DEPLOY_TOKEN" | base64 -w0)"
            "${NODE}" -e 'const t = process.env.DEPLOY_TOKEN; console.log("url=" + encodeURIComponent(t)); console.log("form=" + new URLSearchParams({ t })); console.log("json=" + JSON.stringify({ t }))'
            printf 'split=%s' "$(printf '%s' "$DEPLOY_TOKEN" | head -c 7)"; sleep 0.2
            printf '%s' "$(printf '%s' "$DEPLOY_TOKEN" | tail -c +8 | head -c 7)"; sleep 0.2
            printf '%s\\n' "$(printf '%s' "$DEPLOY_TOKEN" | tail -c +15)"
            echo "db=$DB_PASSWORD"
      - run:
          name: after
          command: echo "still $DEPLOY_TOKEN at the end"
workflows:
  main:
    jobs: [deploy]
`;

/** Every file under `dir`, gunzipped when it is gzip, as latin1 text (to find bytes in). */
function storedFiles(dir: string): string[] {
  const texts: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) texts.push(...storedFiles(path));
    else {
      const data = readFileSync(path);
      texts.push((data[0] === 0x1f && data[1] === 0x8b ? gunzipSync(data) : data).toString('latin1'));
    }
  }
  return texts;
}

describe('secrets through a whole Gyre, with an agent that claims over HTTP as `gyre runner` does', () => {
  let g: TestGyre;
  let dir: string;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_RUNNER_SLOTS: '0' } });
    dir = mkdtempSync(join(tmpdir(), 'gyre-secret-e2e-'));
  });
  afterAll(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the stored log and the API show none of the forms, and the step name is masked', async () => {
    const runnerToken = await runnerClass(g, RESOURCE_CLASS);
    await g.addProject('acme/secrets', { '.circleci/config.yml': CONFIG });
    const { id } = await g.trigger('gh/acme/secrets');
    const [{ token, task }] = await claimTasks(g.url, runnerToken, 1);
    const client = createAgentClient({ url: g.url, token, taskId: task.taskId });
    // The claim-time resolution of secrets is another part of the work: the test hands them over.
    const result = await runTask({
      task: { ...task, secrets: { env: { DEPLOY_TOKEN: TOKEN }, names: ['DB_PASSWORD'] } },
      reporter: client.reporter(),
      handlers: createStepHandlers(createOutputStepHandlers(client.output())),
      executor: () => createShellExecutor({ taskDir: join(dir, 'task'), isolation: detectIsolation({ mode: 'shell' }) }),
      log: createLogger({ level: 'silent' }),
      heartbeatMs: 1000,
      webUrl: g.url,
    });
    expect(result).toEqual({ outcome: 'success' });
    const { jobs } = await g.waitForPipeline(id);
    const n = jobs.deploy.job_number;

    const steps = (await g.api('GET', `/api/v2/project/gh/acme/secrets/job/${n}/steps`)).items;
    expect(steps.map((s: { name: string }) => s.name)).toEqual([`Deploy with ${MASK}`, 'after']);
    const first = (await g.raw('GET', `/api/v2/project/gh/acme/secrets/job/${n}/output?step=0`)).text;
    const second = (await g.raw('GET', `/api/v2/project/gh/acme/secrets/job/${n}/output?step=1`)).text;
    const lines = Object.fromEntries(first.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
    expect(lines).toMatchObject({ plain: MASK, b64: MASK, url: MASK, form: `t=${MASK}`, json: `{"t":"${MASK}"}`, split: MASK, db: MASK });
    expect(lines.echoed).toMatch(/^\*{8}[A-Za-z0-9+/]{0,3}=*$/);
    expect(lines.basic).toMatch(new RegExp(`^${b64(`user:${TOKEN}`).slice(0, 7).replace(/[+/]/g, '\\$&')}\\*{8}[A-Za-z0-9+/]{0,3}=*$`));
    expect(second).toBe(`still ${MASK} at the end\n`);

    // Nothing that reached the server holds any form of either secret: not the step output, not
    // the log chunks in the database, not the archived logs in the blob store.
    const forbidden = [TOKEN, 'pg-Pass-9f3k', ...maskedForms(TOKEN), ...maskedForms('pg-Pass-9f3k')].map((f) => Buffer.from(f).toString('latin1'));
    const chunks = await g.gyre.store.query<{ gzip: Uint8Array | null; data: Uint8Array | null }>('SELECT gzip, data FROM log_chunks');
    const stored = [
      Buffer.from(first).toString('latin1'),
      Buffer.from(second).toString('latin1'),
      ...chunks.map((c) => (c.gzip ? gunzipSync(c.gzip) : Buffer.from(c.data!)).toString('latin1')),
      ...storedFiles(join(g.dataDir, 'blobs')),
    ];
    expect(stored.join('').length).toBeGreaterThan(0);
    for (const text of stored) for (const form of forbidden) expect(text).not.toContain(form);
  });
});

describe('a step gone quiet', () => {
  it('gets its output at once, except bytes that may begin a secret, and no part of a secret is released early', () => {
    const secret = 'S3cr3t-Value-Long-Enough-To-Matter-1234567890';
    const quiet = createSecretMasker([secret]).stream();
    // `echo started; sleep 60`: the line is held back by the search, and the flush gives it.
    const first = Buffer.from(quiet.push(Buffer.from('started\n'))).toString();
    expect(first + Buffer.from(quiet.flush!()).toString()).toBe('started\n');
    // A secret printed in two writes with a pause between: the flush in the pause never gives its start.
    for (let cut = 1; cut < secret.length; cut++) {
      const m = createSecretMasker([secret]).stream();
      const before = Buffer.from(m.push(Buffer.from(`x ${secret.slice(0, cut)}`))).toString() + Buffer.from(m.flush!()).toString();
      const after = Buffer.from(m.push(Buffer.from(`${secret.slice(cut)} y\n`))).toString() + Buffer.from(m.flush!()).toString() + Buffer.from(m.end()).toString();
      expect({ cut, text: before + after }).toEqual({ cut, text: 'x ******** y\n' });
      expect(before).toBe('x ');
    }
  });
});
