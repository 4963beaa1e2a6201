import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CANARY_CONFIG } from './doctor-canary';
import { createDoctorHttp } from './doctor-http';
import { runDoctor, type CheckResult } from './doctor';
import type { CliIo } from './main';
import { UsageError } from './main';

/**
 * `gyre doctor [--runner-class C] [--nomad-class C] [--ops-url U …] [--project S | --repo R]
 * [--claim-timeout S] [--timeout S] [--ca-file PEM] [--no-canary] [--print-canary-config]`.
 * Prints one line per check (ok, FAILED, skipped, warn) with what to check next; exit 0 when
 * nothing FAILED, 1 otherwise, 2 for bad usage.
 */
export async function doctorCommand(args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: false,
      strict: true,
      options: {
        'runner-class': { type: 'string' },
        'nomad-class': { type: 'string' },
        'ops-url': { type: 'string', multiple: true },
        project: { type: 'string' },
        repo: { type: 'string' },
        'claim-timeout': { type: 'string' },
        timeout: { type: 'string' },
        'ca-file': { type: 'string' },
        'no-canary': { type: 'boolean' },
        'print-canary-config': { type: 'boolean' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = parsed.values;
  if (v['print-canary-config']) {
    io.stdout(CANARY_CONFIG);
    return 0;
  }
  const secondsOf = (flag: string, fallback: number, max: number) => {
    const raw = v[flag as keyof typeof v] as string | undefined;
    if (raw === undefined) return fallback * 1000;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max) throw new UsageError(`--${flag} '${raw}' must be a number of seconds above 0 and at most ${max}`);
    return n * 1000;
  };
  const claimTimeoutMs = secondsOf('claim-timeout', 60, 3600);
  const timeoutMs = secondsOf('timeout', 300, 7200);
  const project = v.project as string | undefined;
  if (project !== undefined && !/^gh\/[^/]+\/[^/]+$/.test(project)) throw new UsageError(`--project '${project}' must be a project slug gh/<org>/<repo>`);
  if (project !== undefined && v.repo !== undefined) throw new UsageError('--project and --repo do not go together: --repo is the repository of the project doctor makes itself');
  const opsUrls = [...((v['ops-url'] as string[] | undefined) ?? []), ...(io.env.GYRE_DOCTOR_OPS_URLS ?? '').split(',').map((u) => u.trim()).filter(Boolean)];
  for (const u of opsUrls) if (!/^https?:\/\/[^/]+/.test(u)) throw new UsageError(`--ops-url '${u}' must be an http(s) URL such as http://127.0.0.1:9090`);
  const caFile = v['ca-file'] as string | undefined;
  if (caFile !== undefined && !existsSync(caFile)) throw new UsageError(`--ca-file ${caFile}: no such file`);
  const caPem = caFile ? readFileSync(caFile, 'utf8') : undefined;
  if (caPem !== undefined && !caPem.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`--ca-file ${caFile} holds no PEM certificate`);

  const url = io.env.GYRE_URL || 'http://localhost:8080';
  io.stdout(`gyre doctor: ${url}\n`);
  const results = await runDoctor(
    {
      url,
      token: io.env.GYRE_TOKEN || undefined,
      opsUrls,
      runnerClass: v['runner-class'] as string | undefined,
      nomadClass: v['nomad-class'] as string | undefined,
      canary: !v['no-canary'],
      project,
      repo: (v.repo as string | undefined) ?? join(homedir(), '.gyre', 'doctor-canary'),
      claimTimeoutMs,
      timeoutMs,
      caPem,
    },
    createDoctorHttp({ caPem }),
    (check) => io.stdout(formatCheck(check)),
  );
  const failed = results.filter((r) => r.status === 'FAILED').length;
  const skipped = results.filter((r) => r.status === 'skipped').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  const tally = [`${results.length - failed - skipped - warned} ok`, failed && `${failed} FAILED`, warned && `${warned} warn`, skipped && `${skipped} skipped`].filter(Boolean).join(', ');
  io.stdout(`\n${tally}\n`);
  return failed ? 1 : 0;
}

export function formatCheck(check: CheckResult): string {
  const head = `  ${check.status.padEnd(8)}${check.name.padEnd(40)} ${check.detail}\n`;
  return check.next && check.status !== 'ok' ? `${head}  ${' '.repeat(8)}→ ${check.next}\n` : head;
}
