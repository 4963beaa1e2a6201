import type { FastifyError } from 'fastify';
import {
  AuthenticationError,
  ConflictError,
  GyreError,
  InputError,
  NotFoundError,
  PermissionError,
  RateLimitError,
  StaleLeaseError,
  TooLargeError,
  UnavailableError,
} from '../domain/errors';

/**
 * The one place errors become HTTP statuses and `{ "message": … }` bodies: domain errors by their
 * class, the framework's own (validation, body parsing, limits) by their code. Anything else is a
 * 500 whose message says nothing of the cause (the cause goes to the server's log).
 */
export interface HttpFailure {
  readonly status: number;
  readonly message: string;
  /** Seconds, for 429 and 503 answers. */
  readonly retryAfter?: number;
}

export function failureOf(error: unknown): HttpFailure {
  if (error instanceof GyreError) {
    const retryAfter = error instanceof RateLimitError || error instanceof UnavailableError ? error.retryAfterSeconds : undefined;
    return { status: statusOfDomainError(error), message: error.message, ...(retryAfter === undefined ? {} : { retryAfter }) };
  }
  const e = error as Partial<FastifyError> & { validation?: ValidationIssue[]; validationContext?: string };
  if (Array.isArray(e.validation)) return { status: 400, message: validationMessage(e.validation, e.validationContext) };
  const code = typeof e.code === 'string' ? e.code : '';
  const byCode = FRAMEWORK_CODES[code];
  if (byCode) return { status: byCode.status, message: byCode.message ?? String(e.message) };
  // Errors from the rate limiter carry their status (429) and nothing else we need.
  if (e.statusCode === 429) return { status: 429, message: String(e.message || 'Too many requests.'), retryAfter: 60 };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { status: e.statusCode, message: String(e.message || 'Bad request.') };
  return { status: 500, message: 'Internal server error' };
}

function statusOfDomainError(error: GyreError): number {
  if (error instanceof TooLargeError) return 413;
  if (error instanceof InputError) return 400;
  if (error instanceof AuthenticationError) return 401;
  if (error instanceof PermissionError) return 403;
  if (error instanceof NotFoundError) return 404;
  if (error instanceof ConflictError) return 409;
  if (error instanceof StaleLeaseError) return 409;
  if (error instanceof RateLimitError) return 429;
  if (error instanceof UnavailableError) return 503;
  return 500;
}

/** What the framework reports by code, with the status we answer and, where its text is vague, ours. */
const FRAMEWORK_CODES: Record<string, { status: number; message?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, message: 'The request body is larger than this route accepts.' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415 },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, message: 'Content-Length does not match the body that was sent.' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, message: 'The request body is empty but Content-Type says JSON.' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, message: 'The request body is not valid JSON.' },
  FST_ERR_CTP_INVALID_TYPE: { status: 400 },
  FST_ERR_CTP_INVALID_PARSE_TYPE: { status: 400 },
  FST_ERR_BAD_URL: { status: 400, message: 'The request path is not valid URL encoding.' },
  FST_ERR_ASYNC_CONSTRAINT: { status: 400 },
  FST_ERR_HANDLER_TIMEOUT: { status: 503, message: 'The server took too long to answer; try again.' },
};

interface ValidationIssue {
  readonly instancePath?: string;
  readonly keyword?: string;
  readonly message?: string;
  readonly params?: Record<string, unknown>;
}

const PART_NAMES: Record<string, string> = { body: 'body', querystring: 'query', params: 'path', headers: 'header' };

/**
 * A validation failure as a sentence that names the field and what is allowed:
 * `body.branch must be string`, `query.node_index must be <= 9999`,
 * `body has no property 'foo' (allowed: branch, tag, parameters)`.
 */
function validationMessage(issues: ValidationIssue[], context = 'body'): string {
  const part = PART_NAMES[context] ?? context;
  const first = issues[0] ?? {};
  const path = (first.instancePath ?? '')
    .split('/')
    .filter(Boolean)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const where = [part, ...path].join('.');
  const params = first.params ?? {};
  switch (first.keyword) {
    case 'required':
      return `${where}.${String(params.missingProperty)} is required`;
    case 'additionalProperties':
      return `${where} has a property '${String(params.additionalProperty)}' that is not allowed here`;
    case 'enum':
      return `${where} must be one of ${(params.allowedValues as unknown[] | undefined)?.map((v) => JSON.stringify(v)).join(', ') ?? 'the allowed values'}`;
    case 'type':
      return `${where} must be ${article(String(params.type))}`;
    default:
      return `${where} ${first.message ?? 'is not valid'}`;
  }
}

function article(type: string): string {
  const names: Record<string, string> = { string: 'a string', integer: 'a whole number', number: 'a number', boolean: 'true or false', object: 'an object', array: 'a list', null: 'null' };
  return type
    .split(',')
    .map((t) => names[t] ?? t)
    .join(' or ');
}
