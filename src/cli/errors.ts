import { isEsgzError } from '../errors.js';

/** Exit codes: 1 for a user-facing failure, 2 for bad usage, 130 for Ctrl-C, 70 for a bug. */
export function exitCodeFor(err: unknown): number {
  if (isEsgzError(err)) {
    if (err.code === 'BAD_FLAG' || err.code === 'BAD_REFERENCE') return 2;
    if (err.code === 'INTERRUPTED') return 130;
    if (err.code === 'INTERNAL') return 70;
    return 1;
  }
  return 70;
}

export function debugEnabled(): boolean {
  return /(^|,)\s*(esgz|\*)/.test(process.env.DEBUG ?? '');
}

/** Renders any error as one line on stderr (full detail only with DEBUG=esgz) and exits. */
export function handleFatal(err: unknown): never {
  const anyErr = err as { oclif?: { exit?: number }; message?: string; code?: string } | undefined;
  // oclif's own parse errors (unknown flag, missing arg) and exits carry an exit code already.
  if (anyErr?.oclif?.exit !== undefined && !isEsgzError(err)) {
    if (anyErr.code === 'EEXIT') process.exit(anyErr.oclif.exit);
    process.stderr.write(`esgz: ${oneLine(anyErr.message ?? String(err))}\n`);
    if (debugEnabled()) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    process.exit(anyErr.oclif.exit);
  }
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`esgz: ${firstLine(message)}\n`);
  if (debugEnabled()) {
    process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    const cause = (err as { cause?: unknown })?.cause;
    if (cause) process.stderr.write(`caused by: ${(cause as Error)?.stack ?? String(cause)}\n`);
  }
  process.exit(exitCodeFor(err));
}

/**
 * oclif's parse errors put the reason on the lines after the first: "Parsing --flag" then
 * "Expected an integer less than or equal to 12 …", or "Missing 2 required args:" then a table
 * of them. One line keeps the reason (or the arguments' names).
 */
function oneLine(text: string): string {
  const [first = text, ...rest] = text.replace(/^Error:\s*/, '').split('\n');
  if (/^Parsing /.test(first) && rest[0]) return `${first.trim()}: ${rest[0].trim()}`;
  if (/^Missing \d+ required args?:$/.test(first)) {
    const names = rest.map((l) => /^(\S+)\s{2,}/.exec(l)?.[1]).filter((n) => n !== undefined && n !== 'Note:');
    return `${first} ${names.join(', ')}`;
  }
  return firstLine(text);
}

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim().length > 0) ?? text;
  return line.replace(/^Error:\s*/, '').trim();
}
