import { VARIABLE_TABLES } from './contexts';
import type { SealedTable } from './rewrap';

/** Every table of sealed secrets: contexts' and projects' variables, and the OIDC signing keys. */
export const SEALED_TABLES: readonly SealedTable[] = [...VARIABLE_TABLES, { table: 'oidc_signing_keys', keyColumns: ['kid'] }];
