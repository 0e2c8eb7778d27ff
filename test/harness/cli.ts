import { join } from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';

/** The checkout the tests run in; the built CLI is `bin/run.js` over `dist/`. */
export const repoRoot = new URL('../../', import.meta.url).pathname;

/** Runs the built CLI as a user would (no DEBUG, no stdin); never throws on a non-zero exit. */
export function esgz(...args: string[]) {
  return execa('node', [join(repoRoot, 'bin/run.js'), ...args], { reject: false, env: { DEBUG: '' }, stdin: 'ignore' });
}

/**
 * The error contract of every command: it exits with `exitCode` (or any non-zero code), prints
 * exactly one line on stderr, `esgz: …` matching `pattern`, and no stack trace.
 */
export function expectOneLineError(result: { exitCode?: number; stderr: string }, exitCode: number | 'nonzero', pattern: RegExp): void {
  if (exitCode === 'nonzero') expect(result.exitCode).not.toBe(0);
  else expect(result.exitCode).toBe(exitCode);
  const lines = result.stderr.split('\n').filter((l) => l.length > 0);
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^esgz: /);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}
