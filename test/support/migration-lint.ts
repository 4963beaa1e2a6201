import { splitStatements } from '../../runtime/store/migrate';

/**
 * The expand/contract rule for migrations (README, "Upgrades and migrations"): during a rolling
 * upgrade the previous release's code runs on the new schema, so a migration may add (tables,
 * nullable columns or columns with a default, indexes, values of an enum) but not take away or
 * change what that code reads and writes. A statement that does is allowed only in a file marked
 * as a contract step, a release after the one that stopped needing the old shape:
 *
 *   -- contract: after <release>
 *
 * where <release> names the release whose code no longer uses what the file drops or changes
 * (it must be fully rolled out before this migration runs).
 */
export interface LintFinding {
  readonly statement: string;
  readonly rule: string;
}

const RULES: readonly { readonly rule: string; readonly test: (sql: string) => boolean }[] = [
  { rule: 'DROP TABLE, VIEW, TYPE, FUNCTION, INDEX or SCHEMA removes what the previous release reads', test: (s) => /\bDROP\s+(TABLE|VIEW|MATERIALIZED\s+VIEW|TYPE|FUNCTION|INDEX|SCHEMA|SEQUENCE)\b/i.test(s) },
  { rule: 'DROP COLUMN removes what the previous release reads and writes', test: (s) => /^\s*ALTER\s+TABLE/i.test(s) && /\bDROP\s+(?!CONSTRAINT\b|DEFAULT\b|NOT\s+NULL\b|IDENTITY\b|EXPRESSION\b)/i.test(s) },
  { rule: 'DROP CONSTRAINT can break the previous release (ON CONFLICT needs its unique constraint)', test: (s) => /\bDROP\s+CONSTRAINT\b/i.test(s) },
  { rule: 'RENAME changes a name the previous release uses', test: (s) => /\bRENAME\b/i.test(s) },
  { rule: 'changing a column\'s type (ALTER COLUMN … TYPE) can break the previous release\'s reads and writes', test: (s) => /\bALTER\s+(COLUMN\s+)?\w+\s+(SET\s+DATA\s+)?TYPE\b/i.test(s) && /^\s*ALTER\s+TABLE/i.test(s) },
  { rule: 'ALTER TYPE other than ADD VALUE changes a type the previous release uses', test: (s) => /^\s*ALTER\s+TYPE\b/i.test(s) && !/\bADD\s+VALUE\b/i.test(s) },
  { rule: 'SET NOT NULL refuses the previous release\'s writes that leave the column out, unless the column has a default', test: (s) => /\bSET\s+NOT\s+NULL\b/i.test(s) },
  {
    rule: 'a new NOT NULL column without a DEFAULT refuses the previous release\'s inserts',
    test: (s) => /^\s*ALTER\s+TABLE/i.test(s) && s.split(/,(?![^()]*\))/).some((part) => /\bADD\s+(COLUMN\s+)?/i.test(part) && /\bNOT\s+NULL\b/i.test(part) && !/\bDEFAULT\b/i.test(part) && !/\bGENERATED\b/i.test(part)),
  },
  { rule: 'TRUNCATE deletes the previous release\'s data', test: (s) => /^\s*TRUNCATE\b/i.test(s) },
];

/** The contract marker of a migration, if it has one: the release it follows. */
export function contractRelease(sql: string): string | undefined {
  return /^--\s*contract:\s*after\s+([\w.+-]+)\s*$/im.exec(sql)?.[1];
}

/** Statements of a migration that break the previous release, unless the file is a marked contract step. */
export function lintMigration(sql: string): LintFinding[] {
  const findings: LintFinding[] = [];
  for (const statement of splitStatements(sql)) {
    const flat = statement.replace(/\s+/g, ' ');
    for (const { rule, test } of RULES) {
      if (!test(flat)) continue;
      // `SET NOT NULL` is fine where the same file gives the column a default.
      if (rule.startsWith('SET NOT NULL') && setsDefaultFor(sql, flat)) continue;
      findings.push({ statement: flat.slice(0, 200), rule });
    }
  }
  return findings;
}

function setsDefaultFor(sql: string, statement: string): boolean {
  const column = /ALTER\s+(?:COLUMN\s+)?(\w+)\s+SET\s+NOT\s+NULL/i.exec(statement)?.[1];
  return column !== undefined && new RegExp(`ALTER\\s+(COLUMN\\s+)?${column}\\s+SET\\s+DEFAULT\\b`, 'i').test(sql);
}

/**
 * Migrations written since the previous release that break it anyway: what breaks (the previous
 * release's queries that fail on the new schema, by a piece of their text) and why it was accepted.
 * The tests fail when one stops breaking, so the entry comes off the list.
 */
export const KNOWN_BREAKS: readonly { readonly migration: string; readonly queries: readonly string[]; readonly why: string }[] = [];
