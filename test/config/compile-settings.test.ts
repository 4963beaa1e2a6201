import path from 'node:path';
import { runConfigCommand } from '../../runtime/config/cli';
import { readSettings } from '../../runtime/settings';

/** The compilation settings: documented defaults, overrides, and bad values named with their range. */
describe('compilation settings', () => {
  it('default to the documented budgets and pool size', () => {
    expect(readSettings({}).compile).toEqual({ maxBytes: 16 * 1024 * 1024, maxNodes: 1_000_000, timeoutMs: 10_000, memoryMb: 256, workers: 2 });
  });

  it('are read from GYRE_COMPILE_*', () => {
    const s = readSettings({ GYRE_COMPILE_MAX_BYTES: '33554432', GYRE_COMPILE_MAX_NODES: '50000', GYRE_COMPILE_TIMEOUT_MS: '2500', GYRE_COMPILE_MEMORY_MB: '512', GYRE_COMPILE_WORKERS: '1' });
    expect(s.compile).toEqual({ maxBytes: 32 * 1024 * 1024, maxNodes: 50_000, timeoutMs: 2500, memoryMb: 512, workers: 1 });
  });

  it.each([
    ['GYRE_COMPILE_MAX_BYTES', '1000', /^GYRE_COMPILE_MAX_BYTES: 1000 is out of range \(allowed: 1048576 to 1073741824\)$/],
    ['GYRE_COMPILE_MAX_NODES', '10k', /^GYRE_COMPILE_MAX_NODES: '10k' is not a whole number \(allowed: 10000 to 100000000\)$/],
    ['GYRE_COMPILE_TIMEOUT_MS', '0', /^GYRE_COMPILE_TIMEOUT_MS: 0 is out of range \(allowed: 100 to 600000\)$/],
    ['GYRE_COMPILE_MEMORY_MB', '32', /^GYRE_COMPILE_MEMORY_MB: 32 is out of range \(allowed: 64 to 16384\)$/],
    ['GYRE_COMPILE_WORKERS', '0', /^GYRE_COMPILE_WORKERS: 0 is out of range \(allowed: 1 to 64\)$/],
  ])('a bad %s (%s) stops start-up naming the setting and its range', (name, value, message) => {
    expect(() => readSettings({ [name]: value })).toThrow(message);
  });

  it('gyre config validate applies the byte budget from the environment', async () => {
    const out: string[] = [];
    const io = { stdout: (s: string) => out.push(s), stderr: (s: string) => out.push(s), env: { GYRE_COMPILE_MAX_BYTES: String(1024 * 1024) } };
    const code = await runConfigCommand(['validate', path.resolve(__dirname, '../fixtures/hostile/doubling.yml')], io);
    expect(code).toBe(1);
    expect(out.join('')).toMatch(/doubling\.yml: commands\.c\d+\.steps\[0\]\.c\d+\.x: the config expands to more than 1 MiB \(GYRE_COMPILE_MAX_BYTES\)/);
  });
});
