import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { archiveLocal } from '../../runtime/agent/file-transfer';
import { openBlobStore } from '../../runtime/blob/open-blob-store';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { createOutputService } from '../../runtime/output/output-service';
import type { TarEntry } from '../../runtime/output/tar';
import { END_OF_ARCHIVE, entryHeader, padding } from '../support/tar';
import { startRunner, type Runner } from '../../runtime/scheduler/runner';
import { BUSYBOX_IMAGE, containerSocket } from '../support/container-engine';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

// Caches of paths outside $HOME, on the built-in runner (each task has its own home under the data
// directory) and in containers: absolute paths restore to the same place, paths under $HOME into the
// new task's home; a cache saved before (entries relative to $HOME, no layout marker) still restores;
// a crafted cache writes nowhere but under the paths it names.

/** `absolute` and `workingDirectory` are siblings. */
function config(workingDirectory: string, absolute: string): string {
  return `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    working_directory: ${workingDirectory}
    steps:
      - restore_cache: { keys: ['paths-v1-'] }
      - run:
          name: show
          command: |
            echo "home=$HOME"
            for f in vendor/lib.txt vendor/sub/deep.txt vendor/link.txt ${absolute}/data.txt ${absolute}/nested/more.txt ${absolute}/nested/up.txt; do
              printf '%s=%s\\n' "$f" "$(cat "$f" 2>/dev/null || echo missing)"
            done
            printf 'home deps=%s\\n' "$(cat ~/.deps/dep.txt 2>/dev/null || echo missing)"
      - run:
          name: make
          command: |
            mkdir -p vendor/sub ${absolute}/nested ~/.deps
            [ -e vendor/lib.txt ] || echo "vendor of $CIRCLE_BUILD_NUM" > vendor/lib.txt
            [ -e vendor/sub/deep.txt ] || echo "deep of $CIRCLE_BUILD_NUM" > vendor/sub/deep.txt
            [ -L vendor/link.txt ] || ln -s lib.txt vendor/link.txt
            [ -e vendor/tool ] || { printf '#!/bin/sh\\necho tool\\n' > vendor/tool; chmod 755 vendor/tool; }
            [ -e ${absolute}/data.txt ] || echo "absolute of $CIRCLE_BUILD_NUM" > ${absolute}/data.txt
            [ -e ${absolute}/nested/more.txt ] || echo "more of $CIRCLE_BUILD_NUM" > ${absolute}/nested/more.txt
            # A relative link that climbs above the saved path's parent and stays inside /.
            [ -L ${absolute}/nested/up.txt ] || ln -s ../../../${basename(dirname(workingDirectory))}/${basename(workingDirectory)}/vendor/lib.txt ${absolute}/nested/up.txt
            [ -e ~/.deps/dep.txt ] || echo "home dep of $CIRCLE_BUILD_NUM" > ~/.deps/dep.txt
      - save_cache: { key: 'paths-v1-{{ .BuildNum }}', paths: [vendor, ${absolute}, ~/.deps, /nonexistent-gyre-path] }
workflows:
  main:
    jobs: [build]
`;
}

// A job that restores the newest cache whose key starts with `key`, then runs `script`.
const RESTORE_ONLY = (key: string, script: string) => `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - restore_cache: { keys: ['${key}'] }
      - run:
          name: check
          command: |
${script
  .trim()
  .split('\n')
  .map((line) => `            ${line}`)
  .join('\n')}
workflows:
  main:
    jobs: [build]
`;

async function stepOutputs(g: TestGyre, slug: string, number: number): Promise<Record<string, string>> {
  const steps = (await g.api('GET', `/api/v2/project/${slug}/job/${number}/steps`)).items;
  const out: Record<string, string> = {};
  for (const s of steps) out[s.name] = (await g.raw('GET', `/api/v2/project/${slug}/job/${number}/output?step=${s.index}`)).text;
  return out;
}

/** `name=value` lines of a step's output. */
function lines(output: string): Record<string, string> {
  return Object.fromEntries(output.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/** A gzip tar of these entries (files with content), as raw as a crafted upload could be. */
function craftedCache(entries: { entry: TarEntry; content?: string }[]): AsyncIterable<Uint8Array> {
  const parts: Buffer[] = [];
  for (const { entry, content } of entries) {
    const body = Buffer.from(content ?? '');
    parts.push(entryHeader({ ...entry, size: entry.type === 'file' ? body.length : 0 }));
    if (entry.type === 'file') parts.push(body, padding(body.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Readable.from([Buffer.concat(parts)]).pipe(createGzip());
}

const file = (name: string, content: string) => ({ entry: { name, type: 'file' as const, size: 0, mode: 0o644, mtime: 1_700_000_000 }, content });
const marker = (root: string[], home: string[] = []) => file('.gyre-cache.json', JSON.stringify({ layout: 2, home, root }));

describe.each(flowStore())('cache paths outside $HOME on %s', (store) => {
  let g: TestGyre;
  const temp = mkdtempSync(join(tmpdir(), 'gyre-cache-paths-'));
  const workingDirectory = join(temp, 'app');
  const absolute = join(temp, 'usr-local-bundle');

  // Stores a cache through the output service, as a job of `slug` would.
  async function storeCache(slug: string, jobId: string, key: string, archive: AsyncIterable<Uint8Array>) {
    const output = createOutputService({ store: g.gyre.store, blobs: openBlobStore({ kind: 'local' }, g.dataDir), log: createLogger({ level: 'silent' }) });
    expect(await output.client.saveCache({ jobId, projectSlug: slug } as TaskContext, key, archive)).toBe('saved');
  }

  beforeAll(async () => {
    g = await startTestGyre({ store });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    rmSync(temp, { recursive: true, force: true });
  });

  test('a relative path under an outside working_directory, an absolute path and ~/.deps each restore to their place in the next pipeline', async () => {
    await g.addProject('acme/paths', { '.circleci/config.yml': config(workingDirectory, absolute) });
    const first = (await g.waitForPipeline((await g.trigger('gh/acme/paths')).id, 60_000)).jobs.build;
    expect(first.status).toBe('success');
    const firstOut = await stepOutputs(g, 'gh/acme/paths', first.job_number);
    expect(firstOut['Restoring Cache']).toContain('No cache is found for keys: paths-v1-');
    const saved = firstOut['Saving Cache'];
    expect(saved).toContain('Warning: could not find /nonexistent-gyre-path');
    expect(saved).toMatch(/~\/\.deps: \d+ entr(y|ies), relative to \$HOME/);
    expect(saved).toContain(`${workingDirectory}/vendor: `);
    expect(saved).toContain(`${absolute}: `);
    expect(saved).not.toContain('outside the home directory');

    // Nothing of the first run is left where the second restores it.
    rmSync(workingDirectory, { recursive: true, force: true });
    rmSync(absolute, { recursive: true, force: true });

    const second = (await g.waitForPipeline((await g.trigger('gh/acme/paths')).id, 60_000)).jobs.build;
    expect(second.status).toBe('success');
    const out = await stepOutputs(g, 'gh/acme/paths', second.job_number);
    const made = first.job_number;
    const shown = lines(out.show);
    expect(shown).toEqual({
      home: expect.any(String),
      'vendor/lib.txt': `vendor of ${made}`,
      'vendor/sub/deep.txt': `deep of ${made}`,
      'vendor/link.txt': `vendor of ${made}`,
      [`${absolute}/data.txt`]: `absolute of ${made}`,
      [`${absolute}/nested/more.txt`]: `more of ${made}`,
      [`${absolute}/nested/up.txt`]: `vendor of ${made}`,
      'home deps': `home dep of ${made}`,
    });
    // The home part went into this task's home, which is not the first task's.
    expect(shown.home).not.toBe(lines(firstOut.show).home);
    expect(out['Restoring Cache']).toContain(`Restored ~/.deps into $HOME (${shown.home}): `);
    expect(out['Restoring Cache']).toContain(`Restored ${[absolute, `${workingDirectory}/vendor`].sort().join(', ')} (same paths as saved): `);

    // On disk, at the same absolute places: content, the link as a link, the mode.
    expect(readFileSync(join(workingDirectory, 'vendor/sub/deep.txt'), 'utf8')).toBe(`deep of ${made}\n`);
    expect(readlinkSync(join(workingDirectory, 'vendor/link.txt'))).toBe('lib.txt');
    expect(lstatSync(join(workingDirectory, 'vendor/tool')).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(absolute, 'nested/more.txt'), 'utf8')).toBe(`more of ${made}\n`);
  }, 120_000);

  test('a link a restore would refuse (absolute, as in a virtualenv) is left out with a warning; the rest is cached and restores', async () => {
    const slug = 'gh/acme/links';
    const venv = join(temp, 'venv');
    await g.addProject('acme/links', {
      '.circleci/config.yml': `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: rm -rf ${venv}
      - restore_cache: { keys: ['links-'] }
      - run: |
          if [ -f ${venv}/lib/site.txt ]; then echo "restored: $(cat ${venv}/lib/site.txt)"; test ! -e ${venv}/bin/python && echo "no python link"; fi
          rm -rf ${venv} && mkdir -p ${venv}/bin ${venv}/lib && ln -sf /bin/sh ${venv}/bin/python && echo "site of $CIRCLE_BUILD_NUM" > ${venv}/lib/site.txt
      - save_cache: { key: 'links-{{ .BuildNum }}', paths: [${venv}] }
workflows:
  main:
    jobs: [build]
`,
    });
    const first = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    expect(first.status).toBe('success');
    const saved = (await stepOutputs(g, slug, first.job_number))['Saving Cache'];
    expect(saved).toContain(`Warning: not cached (a restore would refuse it): refused '${venv.slice(1)}/bin/python': the symlink points to the absolute path '/bin/sh'`);
    expect(saved).toContain('Stored cache');
    const second = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    expect(second.status).toBe('success');
    const out = Object.values(await stepOutputs(g, slug, second.job_number)).join('');
    expect(out).toContain(`restored: site of ${first.job_number}`);
    expect(out).toContain('no python link');
  }, 120_000);

  test('a cache saved before the layout marker (entries relative to $HOME) still restores into home', async () => {
    const slug = 'gh/acme/legacy';
    await g.addProject('acme/legacy', {
      '.circleci/config.yml': RESTORE_ONLY('legacy-', 'printf "deps=%s\\n" "$(cat ~/project/deps/lib.txt)"; printf "tool=%s\\n" "$(cat ~/.tool/bin/t)"'),
    });
    const first = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    expect((await stepOutputs(g, slug, first.job_number))['Restoring Cache']).toContain('No cache is found for keys: legacy-');

    // Made as the agent made every cache before: the executor's archive of $HOME's paths, gzipped.
    const oldHome = join(temp, 'old-home');
    mkdirSync(join(oldHome, 'project/deps'), { recursive: true });
    mkdirSync(join(oldHome, '.tool/bin'), { recursive: true });
    writeFileSync(join(oldHome, 'project/deps/lib.txt'), 'legacy lib');
    writeFileSync(join(oldHome, '.tool/bin/t'), 'legacy tool');
    const { tar } = await archiveLocal(oldHome, ['project/deps', '.tool']);
    await storeCache(slug, first.id, 'legacy-v1', Readable.from(tar).pipe(createGzip()));

    const second = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    const out = await stepOutputs(g, slug, second.job_number);
    expect(second.status).toBe('success');
    expect(lines(out.check)).toEqual({ deps: 'legacy lib', tool: 'legacy tool' });
    expect(out['Restoring Cache']).toMatch(/Restored \d+ entries into \$HOME \(.+\); the cache was saved by an earlier Gyre/);
  }, 120_000);

  test('a crafted cache writes to / only what lies under the paths its marker names, and never through ..', async () => {
    const slug = 'gh/acme/crafted';
    const saved = join(temp, 'crafted', 'saved');
    const root = (path: string) => `root${path}`;
    await g.addProject('acme/crafted', {
      '.circleci/config.yml': RESTORE_ONLY(
        'crafted-',
        `printf "saved=%s\\n" "$(cat ${saved}/ok.txt)"
printf "other=%s\\n" "$(cat ${temp}/crafted/other.txt 2>/dev/null || echo absent)"
printf "home=%s\\n" "$(cat "$HOME${temp}/crafted/in-home.txt")"
printf "home-at-root=%s\\n" "$(cat ${temp}/crafted/in-home.txt 2>/dev/null || echo absent)"`,
      ),
    });
    const first = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;

    await storeCache(
      slug,
      first.id,
      'crafted-a',
      craftedCache([
        marker([saved], ['tmp-looking']),
        file(`home${temp}/crafted/in-home.txt`, 'under home'),
        file(root(`${saved}/ok.txt`), 'restored'),
        file(root(`${temp}/crafted/other.txt`), 'not a saved path'),
      ]),
    );
    const second = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    expect(second.status).toBe('success');
    expect(lines((await stepOutputs(g, slug, second.job_number)).check)).toEqual({ saved: 'restored', other: 'absent', home: 'under home', 'home-at-root': 'absent' });

    // `..` in a name, and a symlink leading out of `/`: refused, the step fails, nothing lands outside.
    const escape = join(temp, 'escaped.txt');
    const up = '../'.repeat(temp.split('/').length + 3);
    await storeCache(slug, first.id, 'crafted-b', craftedCache([marker([saved]), file(root(`${saved}/../../escaped.txt`), 'escaped')]));
    const third = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    expect(third.status).toBe('failed');
    expect((await stepOutputs(g, slug, third.job_number))['Restoring Cache']).toMatch(/refused .*'\.\.' would leave the root/);
    expect(existsSync(escape)).toBe(false);

    await storeCache(slug, first.id, 'crafted-c', craftedCache([marker([saved]), { entry: { name: root(`${saved}/link`), type: 'symlink', size: 0, mode: 0o777, mtime: 0, linkname: `${up}etc` } }]));
    const fourth = (await g.waitForPipeline((await g.trigger(slug)).id, 60_000)).jobs.build;
    expect(fourth.status).toBe('failed');
    expect((await stepOutputs(g, slug, fourth.job_number))['Restoring Cache']).toMatch(/the symlink points outside the root/);
    expect(existsSync(join(saved, 'link'))).toBe(false);
  }, 180_000);
});

// The same through the Docker executor (a runner with an Engine socket): each job gets a fresh
// container, so what the second finds at /app/vendor, /usr/local/bundle and ~/.deps came from the cache.
const socket = containerSocket();
if (!socket) console.log('test/output/cache-paths: Docker part skipped, no Docker Engine API socket (set GYRE_TEST_DOCKER_SOCKET or start `podman system service`)');
(socket ? describe : describe.skip)('cache paths outside $HOME in containers', () => {
  let g: TestGyre;
  let runner: Runner;
  const work = mkdtempSync(join(tmpdir(), 'gyre-cache-docker-'));
  beforeAll(async () => {
    g = await startTestGyre();
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/containers', cpu: 1, memory_mb: 1024, driver: 'runner' });
    const token = (await g.api('POST', '/api/v2/resource-classes/acme%2Fcontainers/tokens', {})).token;
    runner = startRunner({ url: g.url, token, log: createLogger({ level: 'silent' }), workRoot: work, executor: { choice: 'docker', dockerSocket: socket }, pollMs: 500 });
  }, 60_000);
  afterAll(async () => {
    runner?.stop();
    await runner?.done;
    await g?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test('working_directory /app caches vendor, /usr/local/bundle and ~/.deps; a new container restores each to its place', async () => {
    await g.addProject('acme/dock-cache', {
      '.circleci/config.yml': `version: 2.1
jobs:
  build:
    resource_class: acme/containers
    docker: [{ image: ${BUSYBOX_IMAGE} }]
    working_directory: /app
    steps:
      - restore_cache: { keys: ['dock-v1-'] }
      - run:
          name: show
          command: |
            printf 'vendor=%s\\n' "$(cat vendor/lib.txt 2>/dev/null || echo missing)"
            printf 'bundle=%s\\n' "$(cat /usr/local/bundle/gems/g.txt 2>/dev/null || echo missing)"
            printf 'deps=%s\\n' "$(cat ~/.deps/d.txt 2>/dev/null || echo missing)"
      - run: |
          mkdir -p vendor /usr/local/bundle/gems ~/.deps
          [ -e vendor/lib.txt ] || echo "vendor of $CIRCLE_BUILD_NUM" > vendor/lib.txt
          [ -e /usr/local/bundle/gems/g.txt ] || echo "bundle of $CIRCLE_BUILD_NUM" > /usr/local/bundle/gems/g.txt
          [ -e ~/.deps/d.txt ] || echo "deps of $CIRCLE_BUILD_NUM" > ~/.deps/d.txt
      - save_cache: { key: 'dock-v1-{{ .BuildNum }}', paths: [vendor, /usr/local/bundle, ~/.deps] }
workflows:
  main:
    jobs: [build]
`,
    });
    const first = (await g.waitForPipeline((await g.trigger('gh/acme/dock-cache')).id, 120_000)).jobs.build;
    expect(first.status).toBe('success');
    const second = (await g.waitForPipeline((await g.trigger('gh/acme/dock-cache')).id, 120_000)).jobs.build;
    expect(second.status).toBe('success');
    const out = await stepOutputs(g, 'gh/acme/dock-cache', second.job_number);
    const made = first.job_number;
    expect(lines(out.show)).toEqual({ vendor: `vendor of ${made}`, bundle: `bundle of ${made}`, deps: `deps of ${made}` });
    expect(out['Restoring Cache']).toContain('Restored /app/vendor, /usr/local/bundle (same paths as saved)');
  }, 300_000);
});
