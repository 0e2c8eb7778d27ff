/**
 * The one error type every esgz module throws for conditions a user can act on.
 * `message` is a single line meant for the terminal; `code` is stable for scripts and `--json`;
 * `cause` keeps the underlying error for `DEBUG=esgz` output.
 */
export type ErrorCode =
  | 'BAD_REFERENCE'
  | 'BAD_FLAG'
  | 'NOT_FOUND'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'REGISTRY'
  | 'NETWORK'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'BAD_LAYOUT'
  | 'BAD_ARCHIVE'
  | 'BAD_MANIFEST'
  | 'BAD_LAYER'
  | 'BAD_FORMAT'
  | 'UNSAFE_PATH'
  | 'UNSUPPORTED'
  | 'RUNTIME'
  | 'INTERRUPTED'
  | 'INTERNAL';

export class EsgzError extends Error {
  readonly code: ErrorCode;
  override readonly cause?: unknown;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(oneLine(message));
    this.name = 'EsgzError';
    this.code = code;
    this.cause = options.cause;
  }
}

export function isEsgzError(err: unknown): err is EsgzError {
  return err instanceof EsgzError;
}

/** Wraps any thrown value so callers can add context ("layer sha256:…: ") without losing the cause. */
export function withContext(context: string, err: unknown): EsgzError {
  if (err instanceof EsgzError) {
    const wrapped = new EsgzError(err.code, `${context}: ${err.message}`, { cause: err.cause ?? err });
    return wrapped;
  }
  const message = err instanceof Error ? err.message : String(err);
  return new EsgzError('INTERNAL', `${context}: ${message}`, { cause: err });
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}
