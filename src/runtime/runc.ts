import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { execa, type ResultPromise } from 'execa';
import { EsgzError } from '../errors.js';

export type StopReason = 'exited' | 'period' | 'line' | 'signal';

/** The runc binary when the caller names none: `runc` on PATH (the CLI's ESGZ_RUNC overrides it). */
export const DEFAULT_RUNC = 'runc';

export interface RunBundleOptions {
  bundle: string;
  /** The runc binary (default DEFAULT_RUNC). */
  runc?: string;
  /** Container id (default: esgz-<random>); must be unique within `stateRoot`. */
  id?: string;
  /** runc's --root: a private state directory, removed afterwards (default: <bundle>/.runc). */
  stateRoot?: string;
  /** Stop after this many seconds (0 or undefined: only when the workload exits or another condition hits). */
  periodSeconds?: number;
  /** Stop once a stdout line contains this string. */
  waitOnLine?: string;
  /**
   * Keep running until `signal` aborts (Ctrl-C), ignoring the period; the abort is then the
   * normal way to stop, not an error.
   */
  waitOnSignal?: boolean;
  /** Aborting stops the container; without waitOnSignal it ends in an INTERRUPTED error. */
  signal?: AbortSignal;
  /** Where the workload's output goes (default: this process's stdout/stderr). */
  stdout?: Writable;
  stderr?: Writable;
  /** Attach this process's stdin (`-i`); with a terminal spec the whole tty is passed through. */
  stdin?: boolean;
  terminal?: boolean;
  /** Called once runc has been started (before the workload necessarily runs). */
  onStart?(id: string): void;
}

export interface RunBundleResult {
  id: string;
  /** The workload's exit code when it exited by itself, else undefined. */
  exitCode: number | undefined;
  reason: StopReason;
  durationMs: number;
}

/** Checks that `candidate` is a runc this process can use (root), or fails with a clear error. */
export async function findRunc(candidate: string = DEFAULT_RUNC): Promise<string> {
  const result = await execa(candidate, ['--version'], { reject: false, stdin: 'ignore' });
  if (result.failed || result.exitCode !== 0) {
    throw new EsgzError(
      'RUNTIME',
      `runc is not installed (looked for "${candidate}"): install it (Debian: apt-get install runc) or set ESGZ_RUNC`,
    );
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new EsgzError(
      'RUNTIME',
      'running a container needs root (runc with overlayfs and fanotify): run esgz as root',
    );
  }
  return candidate;
}

export function newContainerId(): string {
  return `esgz-${randomBytes(6).toString('hex')}`;
}

/**
 * Runs the bundle with `runc run` in the foreground, streams its output, stops it on the first
 * of: the workload exits, the period ends, the watched line appears, the signal aborts. The
 * container is always killed and deleted and the state directory removed, whatever happened.
 */
export async function runBundle(options: RunBundleOptions): Promise<RunBundleResult> {
  const runc = await findRunc(options.runc);
  const id = options.id ?? newContainerId();
  const stateRoot = options.stateRoot ?? join(options.bundle, '.runc');
  await mkdir(stateRoot, { recursive: true, mode: 0o700 });
  const started = Date.now();
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const tty = options.terminal === true;

  let child: ResultPromise | undefined;
  let stopReason: StopReason | undefined;
  let stopRequested: (() => void) | undefined;
  const stopPromise = new Promise<void>((resolve) => (stopRequested = resolve));
  const requestStop = (reason: StopReason) => {
    stopReason ??= reason;
    stopRequested?.();
  };
  let timer: NodeJS.Timeout | undefined;
  // runc reports its own failures (bad spec, exec not found) on stderr, mixed with the workload's.
  let stderrTail = '';
  const onAbort = () => requestStop('signal');

  try {
    if (options.signal?.aborted) throw new EsgzError('INTERRUPTED', 'interrupted before the workload started');
    child = execa(runc, ['--root', stateRoot, 'run', '--bundle', options.bundle, id], {
      reject: false,
      // A terminal spec makes runc use the caller's tty; otherwise pipes we can watch.
      stdin: tty || options.stdin ? 'inherit' : 'ignore',
      stdout: tty ? 'inherit' : 'pipe',
      stderr: tty ? 'inherit' : 'pipe',
      buffer: false,
      cleanup: true,
      // Its own process group: a terminal's Ctrl-C reaches esgz only, which then stops the
      // container itself (with a tty the workload needs the foreground group, so it stays).
      detached: !tty,
    });
    options.onStart?.(id);
    if (!tty) {
      let pending = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        stdout.write(chunk);
        if (!options.waitOnLine) return;
        pending += chunk.toString('utf8');
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        // Keep a bounded tail so a line split across chunks still matches.
        if (pending.length > 65536) pending = pending.slice(-65536);
        if (lines.some((l) => l.includes(options.waitOnLine!)) || pending.includes(options.waitOnLine))
          requestStop('line');
      });
      child.stderr!.on('data', (chunk: Buffer) => {
        stderr.write(chunk);
        stderrTail = (stderrTail + chunk.toString('utf8')).slice(-4096);
      });
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (!options.waitOnSignal && options.periodSeconds && options.periodSeconds > 0) {
      timer = setTimeout(() => requestStop('period'), options.periodSeconds * 1000);
    }

    const exited = child.then((r) => r);
    const first = await Promise.race([exited.then(() => 'exited' as const), stopPromise.then(() => 'stop' as const)]);
    if (first === 'stop') {
      await killContainer(runc, stateRoot, id);
      const done = await Promise.race([exited, sleep(10_000).then(() => undefined)]);
      if (!done) child.kill('SIGKILL');
      await exited;
    }
    const result = await exited;
    if (first === 'exited') stopReason = 'exited';
    if ((stopReason === 'signal' || options.signal?.aborted) && !options.waitOnSignal)
      throw new EsgzError('INTERRUPTED', 'interrupted');
    if (stopReason === 'exited') {
      const exitCode = result.exitCode ?? (result.signal ? 128 : 1);
      const runcError = /runc run failed: (.*)/.exec(stderrTail);
      if (runcError) throw new EsgzError('RUNTIME', `runc could not start the container: ${runcError[1]!.trim()}`);
      return { id, exitCode, reason: 'exited', durationMs: Date.now() - started };
    }
    return { id, exitCode: undefined, reason: stopReason!, durationMs: Date.now() - started };
  } finally {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    await killContainer(runc, stateRoot, id).catch(() => undefined);
    await execa(runc, ['--root', stateRoot, 'delete', '--force', id], { reject: false, stdin: 'ignore' });
    if (child && child.exitCode === null) {
      child.kill('SIGKILL');
      await child.catch(() => undefined);
    }
    await rm(stateRoot, { recursive: true, force: true });
  }
}

async function killContainer(runc: string, stateRoot: string, id: string): Promise<void> {
  // --all reaches every process of the container, not only its init.
  await execa(runc, ['--root', stateRoot, 'kill', '--all', id, 'KILL'], { reject: false, stdin: 'ignore' });
}

/** Ids of containers runc knows under `stateRoot` (for leak checks). */
export async function listContainers(stateRoot?: string, runc: string = DEFAULT_RUNC): Promise<string[]> {
  const args = stateRoot ? ['--root', stateRoot, 'list', '--quiet'] : ['list', '--quiet'];
  const result = await execa(runc, args, { reject: false, stdin: 'ignore' });
  return String(result.stdout ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/**
 * Force-deletes containers a killed esgz left under the runc root `stateRoot` (all of them, or
 * the one named `id`): their processes are killed and runc's state removed. Never fails.
 */
export async function deleteStaleContainers(stateRoot: string, runc = DEFAULT_RUNC, id?: string): Promise<void> {
  const ids = id !== undefined ? [id] : await readdir(stateRoot).catch(() => [] as string[]);
  for (const each of ids) {
    await execa(runc, ['--root', stateRoot, 'delete', '--force', each], { reject: false, stdin: 'ignore' });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
