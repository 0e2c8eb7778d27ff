import { lstatSync, readlinkSync } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError } from '../errors.js';

/** Linux's own limit on symlinks followed during one lookup (MAXSYMLINKS is 40). */
const MAX_SYMLINKS = 40;

/**
 * Splits a path from a tar entry or the image into clean components, the way a container sees
 * it: leading "/" and "./" dropped, "." and empty parts skipped, ".." applied lexically.
 * Returns null when ".." would climb above the root (the caller decides whether that is an error).
 */
export function cleanComponents(name: string): string[] | null {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) return null;
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}

/** "bin/busybox" form (no leading slash, no "./"), or null when the path escapes the root. */
export function cleanImagePath(name: string): string | null {
  const parts = cleanComponents(name);
  return parts === null ? null : parts.join('/');
}

/** What resolution needs to know about one host path (from lstat, and readlink for a symlink). */
type Lookup = { kind: 'missing' } | { kind: 'symlink'; target: string } | { kind: 'other' };

/**
 * Resolves `path` inside `root` as the container would, without ever leaving `root`: symlinks
 * are read (never followed by the host kernel), absolute targets restart at `root`, ".." stops
 * at `root`. The final component is followed only when `followFinal` is true. Components that
 * do not exist yet are appended as they are. The result is a host path under `root` in which
 * every existing component was seen to be no symlink (the final one excepted when not followed).
 * Asynchronous on purpose: `root` may be served by a FUSE filesystem in this very process, which
 * a synchronous lstat would deadlock.
 */
export async function resolveInRoot(root: string, path: string, options: { followFinal: boolean }): Promise<string> {
  const steps = resolution(root, path, options.followFinal);
  let step = steps.next();
  while (!step.done) step = steps.next(await lookUp(step.value));
  return step.value;
}

/**
 * resolveInRoot without the event-loop hops, for layer unpacking (one resolution per entry, on
 * a local directory): one lstat is cheaper than a trip through the libuv pool.
 */
export function resolveInRootSync(root: string, path: string, options: { followFinal: boolean }): string {
  const steps = resolution(root, path, options.followFinal);
  let step = steps.next();
  while (!step.done) step = steps.next(lookUpSync(step.value));
  return step.value;
}

/** The resolution itself: yields each host path it needs looked up, returns the result. */
function* resolution(root: string, path: string, followFinal: boolean): Generator<string, string, Lookup> {
  let pending = splitLoosely(path);
  const resolved: string[] = [];
  let symlinks = 0;
  let exists = true;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const isFinal = pending.length === 0;
    if (!exists || (isFinal && !followFinal)) {
      resolved.push(part);
      continue;
    }
    const found: Lookup = yield join(root, ...resolved, part);
    if (found.kind !== 'symlink') {
      exists = found.kind === 'other';
      resolved.push(part);
      continue;
    }
    if (++symlinks > MAX_SYMLINKS) {
      throw new EsgzError('UNSAFE_PATH', `too many levels of symbolic links resolving "${path}" in ${root}`);
    }
    if (found.target.startsWith('/')) resolved.length = 0;
    pending = [...splitLoosely(found.target), ...pending];
  }
  return join(root, ...resolved);
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

async function lookUp(hostPath: string): Promise<Lookup> {
  try {
    const stat = await lstat(hostPath);
    return stat.isSymbolicLink() ? { kind: 'symlink', target: await readlink(hostPath) } : { kind: 'other' };
  } catch (err) {
    if (isMissing(err)) return { kind: 'missing' };
    throw err;
  }
}

function lookUpSync(hostPath: string): Lookup {
  try {
    const stat = lstatSync(hostPath);
    return stat.isSymbolicLink() ? { kind: 'symlink', target: readlinkSync(hostPath) } : { kind: 'other' };
  } catch (err) {
    if (isMissing(err)) return { kind: 'missing' };
    throw err;
  }
}

function splitLoosely(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}
