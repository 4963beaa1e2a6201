import { VARIABLE_TABLES } from './contexts';
import type { SealedTable } from './rewrap';
import { SSH_KEY_TABLES } from './ssh-keys';
import { NOTIFICATION_TABLES } from '../notifications/webhooks';

/**
 * Every table of sealed secrets: contexts' and projects' variables, the OIDC signing keys, projects'
 * SSH keys, and webhooks' signing secrets and Slack URLs.
 */
export const SEALED_TABLES: readonly SealedTable[] = [...VARIABLE_TABLES, { table: 'oidc_signing_keys', keyColumns: ['kid'] }, ...SSH_KEY_TABLES, ...NOTIFICATION_TABLES];
