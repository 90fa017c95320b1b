/**
 * A UserError is a problem with what the user asked for (bad argument, missing path,
 * unusable data). CLIs print its message as one line and exit non-zero; anything else
 * is a bug and keeps its stack trace.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
