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

/** `esgz-<kind>-<pid>-<start time in clock ticks>-<mkdtemp's 6 characters>`. */
const OWNED_NAME = /^esgz-([a-z]+)-(\d+)-(\d+)-[A-Za-z0-9]{6}$/;

/** A file still being closed by a stream may land while rm empties the dir (ENOTEMPTY): try again. */
const RM_RETRIES = 3;

const ownStartTime = processStartTime(process.pid);
const live = new Set<string>();
let exitHookInstalled = false;
const swept = new Map<string, Promise<void>>();

/**
 * Makes `esgz-<kind>-…` under `parent` (default: the OS temp dir, $TMPDIR), first sweeping what
 * dead esgz processes left there. Pass the result to `removeTempDir` when done.
 */
export async function makeTempDir(kind: string, parent: string = tmpdir()): Promise<string> {
  await mkdir(parent, { recursive: true });
  await sweepStaleTempDirs(parent);
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

/**
 * Removes `esgz-*` directories under `parent` whose owner process is gone; mounts under them
 * are unmounted first (runc containers of a killed optimize deleted before), and a directory
 * that still has one stays. Runs once per parent per process; never fails the caller.
 */
export function sweepStaleTempDirs(parent: string = tmpdir()): Promise<void> {
  const key = resolve(parent);
  let pending = swept.get(key);
  if (ownStartTime === undefined) return Promise.resolve(); // no /proc: every owner would look dead
  if (!pending) {
    pending = sweep(key).catch(() => undefined);
    swept.set(key, pending);
  }
  return pending;
}

async function sweep(parent: string): Promise<void> {
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    const match = OWNED_NAME.exec(name);
    if (!match) continue;
    const [, kind, pid, start] = match;
    if (processStartTime(Number(pid)) === start) continue; // its owner is still running
    const dir = join(parent, name);
    if (kind === 'opt') await deleteContainers(join(dir, 's'));
    if (mountsUnder(dir).length > 0) {
      for (const point of mountsUnder(dir)) await unmount(point).catch(() => undefined);
      if (mountsUnder(dir).length > 0) continue;
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** A killed optimize may leave its workload's container behind; it keeps the overlay busy. */
async function deleteContainers(runcRoot: string): Promise<void> {
  const ids = await readdir(runcRoot).catch(() => [] as string[]);
  if (ids.length === 0) return;
  const { execa } = await import('execa');
  for (const id of ids) {
    await execa(process.env.ESGZ_RUNC ?? 'runc', ['--root', runcRoot, 'delete', '--force', id], { reject: false, stdin: 'ignore' });
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
