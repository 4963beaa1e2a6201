/**
 * Domain errors carry fields, not formatted prose only; `runtime/api/http-errors.ts` is the one
 * place that maps them to HTTP statuses.
 */
export class GyreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Something the caller named does not exist. */
export class NotFoundError extends GyreError {
  constructor(
    readonly kind: string,
    readonly id: string,
  ) {
    super(`${kind} not found: ${id}`);
  }
}

/** The caller's input is malformed; `field` names what was wrong. */
export class InputError extends GyreError {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/**
 * The input is larger than a limit allows (a body, an upload, an archive, test results);
 * `limit` says the limit in the unit of the message. Answered 413.
 */
export class TooLargeError extends InputError {
  constructor(
    message: string,
    field?: string,
    readonly limit?: number,
  ) {
    super(message, field);
  }
}

/** The caller sent too many requests; `retryAfterSeconds` says when to try again. Answered 429. */
export class RateLimitError extends GyreError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** A part Gyre needs cannot take the request now (shutting down, or busy); try again later. Answered 503. */
export class UnavailableError extends GyreError {
  constructor(
    message: string,
    readonly retryAfterSeconds = 5,
  ) {
    super(message);
  }
}

/** The request is valid but conflicts with the current state (e.g. cancel a finished workflow). */
export class ConflictError extends GyreError {}

/** No or bad credentials. */
export class AuthenticationError extends GyreError {
  constructor(message = 'You must log in first.') {
    super(message);
  }
}

/** Credentials are fine but do not allow this. */
export class PermissionError extends GyreError {}

/** An agent wrote under a lease that is no longer current (expired, or the task was re-claimed). */
export class StaleLeaseError extends GyreError {
  constructor(
    readonly taskId: string,
    readonly leaseId: string,
  ) {
    super(`lease ${leaseId} is not the current lease of task ${taskId}; the write was refused`);
  }
}

/** A setting read at start-up is invalid; start-up stops with this message. */
export class ConfigurationError extends GyreError {
  constructor(
    readonly setting: string,
    reason: string,
  ) {
    super(`${setting}: ${reason}`);
  }
}
