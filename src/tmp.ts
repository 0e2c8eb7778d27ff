// Temporary directories of one esgz process: named after their owner (pid and start time), removed
// on every way out this process controls (success, error, Ctrl-C, and `exit` as a last resort),
// and swept by the next esgz that makes one in the same place when the owner was killed
// (SIGKILL, OOM, power loss). A directory with a mount under it is never removed.
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mountsUnder, unmount } from './host/mounts.js';
import { processStartTime } from './host/process.js';
import { deleteStaleContainers } from './runtime/runc.js';

/** `esgz-<kind>-<pid>-<start time in clock ticks>-<mkdtemp's 6 characters>`. */
const OWNED_NAME = /^esgz-([a-z]+)-(\d+)-(\d+)-[A-Za-z0-9]{6}$/;

/** A file still being closed by a stream may land while rm empties the dir (ENOTEMPTY): try again. */
const RM_RETRIES = 3;

const ownStartTime = processStartTime(process.pid);
const live = new Set<string>();
let exitHookInstalled = false;
const swept = new Map<string, { pending: Promise<void>; withContainers: boolean }>();

/**
 * Makes `esgz-<kind>-…` under `parent` (default: the OS temp dir, $TMPDIR), first sweeping what
 * dead esgz processes left there. Pass the result to `removeTempDir` when done.
 */
export async function makeTempDir(kind: string, parent: string = tmpdir(), sweep: SweepOptions = {}): Promise<string> {
  await mkdir(parent, { recursive: true });
  await sweepStaleTempDirs(parent, sweep);
  // Without /proc there is no telling owners apart: a plain name, never swept.
  const owner = ownStartTime !== undefined ? `${process.pid}-${ownStartTime}-` : '';
  const dir = await mkdtemp(join(parent, `esgz-${kind}-${owner}`));
  track(dir);
  return dir;
}

/** Registers a directory for the exit-time safety net. */
function track(dir: string): void {
  if (!exitHookInstalled) {
    process.on('exit', removeLeftoversAtExit);
    exitHookInstalled = true;
  }
  live.add(resolve(dir));
}

/** Removes a temp dir (unless something is still mounted under it) and forgets it. */
export async function removeTempDir(dir: string): Promise<void> {
  const path = resolve(dir);
  if (mountsUnder(path).length === 0) await rm(path, { recursive: true, force: true, maxRetries: RM_RETRIES });
  live.delete(path);
}

export interface SweepOptions {
  /**
   * The runc binary: with it, a killed optimize's containers are deleted first (they keep its
   * overlay busy). Without it such a directory is left for a sweep that has one.
   */
  runc?: string;
}

/**
 * Removes `esgz-*` directories under `parent` whose owner process is gone; mounts under them
 * are unmounted first (runc containers of a killed optimize deleted before), and a directory
 * that still has one stays. Runs once per parent per process (once more when a later call can
 * delete containers and the first could not); never fails the caller.
 */
export function sweepStaleTempDirs(parent: string = tmpdir(), options: SweepOptions = {}): Promise<void> {
  const key = resolve(parent);
  if (ownStartTime === undefined) return Promise.resolve(); // no /proc: every owner would look dead
  const previous = swept.get(key);
  if (previous && (previous.withContainers || options.runc === undefined)) return previous.pending;
  const pending = (async () => {
    await previous?.pending;
    await sweep(key, options.runc);
  })().catch(() => undefined);
  swept.set(key, { pending, withContainers: options.runc !== undefined });
  return pending;
}

async function sweep(parent: string, runc: string | undefined): Promise<void> {
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    const match = OWNED_NAME.exec(name);
    if (!match) continue;
    const [, kind, pid, start] = match;
    if (processStartTime(Number(pid)) === start) continue; // its owner is still running
    const dir = join(parent, name);
    if (kind === 'opt') {
      const runcRoot = join(dir, 's');
      if (runc !== undefined) await deleteStaleContainers(runcRoot, runc);
      else if ((await readdir(runcRoot).catch(() => [])).length > 0) continue;
    }
    if (mountsUnder(dir).length > 0) {
      for (const point of mountsUnder(dir)) await unmount(point).catch(() => undefined);
      if (mountsUnder(dir).length > 0) continue;
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** `exit` handlers run synchronously: whatever async cleanup did not get to, minus mounted dirs. */
function removeLeftoversAtExit(): void {
  for (const dir of live) {
    if (mountsUnder(dir).length > 0) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort: the next esgz sweeps it
    }
  }
  live.clear();
}
