import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { EsgzError } from '../errors.js';
import { cleanImagePath } from '../rootfs/root-path.js';
import { executableOrUndefined, nativeBinary } from '../host/native.js';

export type AccessKind = 'exec' | 'open' | 'access';

export interface TraceEvent {
  kind: AccessKind;
  pid: number;
  /** The path exactly as the kernel reported it (host path or container-absolute). */
  reported: string;
}

export interface Tracer {
  /** Stops tracing after the queued events are read; returns them in first-access order, one per path. */
  stop(): Promise<TraceEvent[]>;
  /** Problems the helper reported that did not stop it (e.g. a queue overflow that lost events). */
  warnings(): string[];
}

export interface TracerOptions {
  /**
   * For a rootfs that is a plain host directory: the mark then covers the host's whole
   * filesystem and only the container's processes (another pid namespace) count.
   */
  onlyOtherPidNamespaces?: boolean;
  /** The helper program (default: the one built in native/fanotify/). */
  binary?: string;
}

const TRACER_NAME = 'esgz-fanotify';
const KINDS: Record<string, AccessKind> = { X: 'exec', O: 'open', A: 'access' };
const READY_TIMEOUT_MS = 10_000;

/**
 * Starts the fanotify helper on the filesystem holding `rootfs` (the overlay mount) and waits
 * until its mark is in place, so nothing the workload does afterwards is missed.
 */
export async function startTracer(rootfs: string, options: TracerOptions = {}): Promise<Tracer> {
  const binary = tracerBinary(options.binary);
  if (!binary) {
    throw new EsgzError('UNSUPPORTED', tracerMissing(options.binary));
  }
  const child = spawn(binary, [...(options.onlyOtherPidNamespaces ? ['-n'] : []), rootfs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: TraceEvent[] = [];
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-4096)));
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => resolve(code));
    child.on('error', () => resolve(-1));
  });
  const lines = createInterface({ input: child.stdout, crlfDelay: Infinity });
  let readyResolve: () => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  lines.on('line', (line) => {
    if (line === 'READY') {
      readyResolve();
      return;
    }
    const event = parseTraceLine(line);
    if (event) events.push(event);
  });

  const outcome = await Promise.race([
    ready.then(() => 'ready' as const),
    exited.then(() => 'exited' as const),
    sleep(READY_TIMEOUT_MS).then(() => 'timeout' as const),
  ]);
  if (outcome !== 'ready') {
    child.kill('SIGKILL');
    await exited;
    const why =
      stderr.trim().replace(/^esgz-fanotify:\s*/, '') ||
      (outcome === 'timeout' ? 'it did not start in time' : 'it exited');
    throw new EsgzError('RUNTIME', `cannot trace file accesses on ${rootfs}: ${why}`);
  }

  let stopped: Promise<TraceEvent[]> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        child.kill('SIGTERM');
        const code = await Promise.race([exited, sleep(10_000).then(() => 'timeout' as const)]);
        if (code === 'timeout') {
          child.kill('SIGKILL');
          await exited;
        }
        lines.close();
        if (code !== 0 && code !== 'timeout' && stderr.trim()) {
          throw new EsgzError(
            'RUNTIME',
            `file access tracer failed: ${stderr.trim().replace(/^esgz-fanotify:\s*/, '')}`,
          );
        }
        return events;
      })();
      return stopped;
    },
    warnings() {
      return stderr
        .split('\n')
        .map((l) => l.replace(/^esgz-fanotify:\s*/, '').trim())
        .filter((l) => l !== '');
    },
  };
}

/** Parses one helper line `<X|O|A> <pid> <path>` (backslash and newline escaped). */
export function parseTraceLine(line: string): TraceEvent | undefined {
  const match = /^([XOA]) (\d+) (.*)$/.exec(line);
  if (!match) return undefined;
  const reported = match[3]!.replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\'));
  return { kind: KINDS[match[1]!]!, pid: Number(match[2]), reported };
}

/**
 * Maps a reported path to the image path (`bin/busybox`): paths opened before the container's
 * pivot_root carry the host mount point as prefix, later ones are container-absolute. Returns
 * undefined for paths that cannot be image files (deleted files, non-absolute names).
 */
export function toImagePath(reported: string, rootfs: string): string | undefined {
  if (!reported.startsWith('/') || reported.endsWith(' (deleted)')) return undefined;
  const prefix = rootfs.endsWith('/') ? rootfs : `${rootfs}/`;
  const inside = reported.startsWith(prefix) ? reported.slice(prefix.length) : reported === rootfs ? '' : reported;
  const clean = cleanImagePath(inside);
  return clean === null || clean === '' ? undefined : clean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** The fanotify tracer program (`override`, else the built one), or undefined when there is none. */
function tracerBinary(override: string | undefined): string | undefined {
  return override ? executableOrUndefined(override) : nativeBinary(TRACER_NAME);
}

function tracerMissing(override: string | undefined): string {
  if (override) return `the fanotify tracer ${override} is not an executable file`;
  return `the fanotify tracer native/fanotify/${TRACER_NAME} is not built (run npm run build:native; it needs gcc and make)`;
}
