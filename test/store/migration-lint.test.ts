import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { knownMigrations, MIGRATIONS_DIR } from '../../runtime/store/migrate';
import { contractRelease, KNOWN_BREAKS, lintMigration } from '../support/migration-lint';

const previous = JSON.parse(readFileSync(join(__dirname, '../fixtures/previous-release/queries.json'), 'utf8')) as { release: string; migrations: string[] };

describe('migrations follow expand/contract', () => {
  const since = knownMigrations().filter((m) => !previous.migrations.includes(m));

  it('every migration since the previous release is additive, or a contract step naming the release it follows', () => {
    const offending: string[] = [];
    for (const file of since) {
      const sql = readFileSync(join(MIGRATIONS_DIR, file), 'utf8');
      const findings = lintMigration(sql);
      if (findings.length === 0 || contractRelease(sql) || KNOWN_BREAKS.some((b) => b.migration === file)) continue;
      offending.push(`${file}:\n${findings.map((f) => `  ${f.statement}\n    → ${f.rule}`).join('\n')}`);
    }
    expect(offending).toEqual([]);
  });

  it('a known break is still one (or it comes off the list)', () => {
    for (const { migration } of KNOWN_BREAKS) {
      expect(since).toContain(migration);
      expect(lintMigration(readFileSync(join(MIGRATIONS_DIR, migration), 'utf8'))).not.toEqual([]);
    }
  });

  it('new migrations are numbered 400 and up, after every earlier one', () => {
    const numbers = knownMigrations().map((m) => Number(m.split('_')[0]));
    expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
    expect(new Set(numbers).size).toBe(numbers.length);
    for (const file of since.filter((m) => !KNOWN_BREAKS.some((b) => b.migration === m))) expect(Number(file.split('_')[0])).toBeGreaterThanOrEqual(400);
  });
});

describe('the migration lint', () => {
  it.each([
    ['ALTER TABLE jobs DROP COLUMN spec', /DROP COLUMN/],
    ['ALTER TABLE jobs DROP spec', /DROP COLUMN/],
    ['DROP TABLE caches', /DROP TABLE/],
    ['DROP INDEX caches_key', /DROP TABLE, VIEW, TYPE, FUNCTION, INDEX/],
    ['ALTER TABLE caches DROP CONSTRAINT caches_project_id_key_key', /DROP CONSTRAINT/],
    ['ALTER TABLE jobs RENAME COLUMN spec TO definition', /RENAME/],
    ['ALTER TABLE jobs RENAME TO job', /RENAME/],
    ['ALTER TABLE jobs ALTER COLUMN number TYPE bigint', /type/],
    ['ALTER TABLE jobs ALTER number SET DATA TYPE bigint', /type/],
    ['ALTER TYPE job_status RENAME VALUE \'a\' TO \'b\'', /ALTER TYPE|RENAME/],
    ['ALTER TABLE jobs ALTER COLUMN name SET NOT NULL', /SET NOT NULL/],
    ['ALTER TABLE jobs ADD COLUMN owner text NOT NULL', /NOT NULL column without a DEFAULT/],
    ['ALTER TABLE jobs ADD COLUMN a text, ADD COLUMN owner text NOT NULL', /NOT NULL column without a DEFAULT/],
    ['TRUNCATE log_chunks', /TRUNCATE/],
  ])('refuses %s', (sql, rule) => {
    const findings = lintMigration(`-- a migration\n${sql};\n`);
    expect(findings.map((f) => f.rule).join('\n')).toMatch(rule);
  });

  it.each([
    'CREATE TABLE retention (project_id uuid PRIMARY KEY, days int)',
    'ALTER TABLE jobs ADD COLUMN owner text',
    'ALTER TABLE caches ADD COLUMN protected boolean NOT NULL DEFAULT false',
    'ALTER TABLE jobs ADD COLUMN n numeric(10, 2) NOT NULL DEFAULT 0, ADD COLUMN m text',
    'CREATE INDEX jobs_created ON jobs (created_at)',
    'ALTER TABLE jobs ALTER COLUMN owner DROP NOT NULL',
    'ALTER TABLE jobs ALTER COLUMN owner DROP DEFAULT',
    "ALTER TYPE job_status ADD VALUE 'blocked'",
    'UPDATE jobs SET owner = \'\' WHERE owner IS NULL',
  ])('allows %s', (sql) => {
    expect(lintMigration(`${sql};\n`)).toEqual([]);
  });

  it('allows SET NOT NULL on a column the same migration gives a default', () => {
    expect(lintMigration('ALTER TABLE jobs ALTER COLUMN owner SET DEFAULT \'\';\nUPDATE jobs SET owner = \'\' WHERE owner IS NULL;\nALTER TABLE jobs ALTER COLUMN owner SET NOT NULL;\n')).toEqual([]);
  });

  it('reads the contract marker and the release it names', () => {
    expect(contractRelease('-- contract: after v0.3.0\nALTER TABLE jobs DROP COLUMN spec;\n')).toBe('v0.3.0');
    expect(contractRelease('-- a contract step, sometime\nALTER TABLE jobs DROP COLUMN spec;\n')).toBeUndefined();
  });
});
