import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthenticationError } from '../domain/errors';
import { TASK_TOKEN_PREFIX, taskTokenBody, type Lease } from '../agent-contract/task-context';
import type { Store } from '../store/store';

/**
 * Task tokens: what an agent presents for every call about its task. A token is the lease itself
 * (task id, lease id, attempt) signed with a server secret, so it is good for that one task and
 * that one attempt only; fencing in the dispatcher refuses it once the lease is gone.
 */
export interface TaskTokens {
  mint(lease: Lease): string;
  /** The lease a token stands for; throws AuthenticationError when the signature is wrong. */
  verify(token: string): Lease;
}

const PREFIX = TASK_TOKEN_PREFIX;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function createTaskTokens(secret: string): TaskTokens {
  const sign = (body: string) => createHmac('sha256', secret).update(body).digest('base64url');
  return {
    mint(lease) {
      const body = taskTokenBody(lease);
      return `${PREFIX}.${body}.${sign(body)}`;
    },
    verify(token) {
      const parts = token.split('.');
      if (parts.length !== 5 || parts[0] !== PREFIX) throw new AuthenticationError('The task token is not valid.');
      const [, taskId, leaseId, attempt, signature] = parts;
      // Checked before the signature only for shape: a token we minted always passes.
      if (!UUID.test(taskId) || !UUID.test(leaseId) || !/^\d{1,9}$/.test(attempt)) throw new AuthenticationError('The task token is not valid.');
      const expected = Buffer.from(sign(`${taskId}.${leaseId}.${attempt}`));
      const given = Buffer.from(signature);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AuthenticationError('The task token is not valid.');
      return { taskId, leaseId, attempt: Number(attempt) };
    },
  };
}

/**
 * The signing secret: GYRE_AGENT_SECRET when set, otherwise one generated once and kept in the
 * database so every server process signs and checks with the same key.
 */
export async function loadTaskTokenSecret(store: Store, configured?: string): Promise<string> {
  if (configured) return configured;
  await store.query(`INSERT INTO execution_secrets (name, value) VALUES ('task_token', $1) ON CONFLICT (name) DO NOTHING`, [
    randomBytes(32).toString('base64url'),
  ]);
  const [row] = await store.query<{ value: string }>(`SELECT value FROM execution_secrets WHERE name = 'task_token'`);
  return row.value;
}
