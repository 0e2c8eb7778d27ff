import { lstatSync, readlinkSync } from 'node:fs';
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

/**
 * Resolves `path` inside `root` as the container would, without ever leaving `root`: symlinks
 * are read (never followed by the host kernel), absolute targets restart at `root`, ".." stops
 * at `root`. The final component is followed only when `followFinal` is true. Components that
 * do not exist yet are appended as they are. The result is a host path under `root` in which
 * every existing component was seen to be no symlink (the final one excepted when not followed).
 */
export async function resolveInRoot(root: string, path: string, options: { followFinal: boolean }): Promise<string> {
  return resolveInRootSync(root, path, options);
}

/**
 * resolveInRoot without the event-loop hops: one lstat per component is cheaper than a trip
 * through the libuv pool, and layer unpacking resolves a path per entry.
 */
export function resolveInRootSync(root: string, path: string, options: { followFinal: boolean }): string {
  let pending = splitLoosely(path);
  const resolved: string[] = [];
  let symlinks = 0;
  let exists = true;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const isFinal = pending.length === 0;
    if (!exists || (isFinal && !options.followFinal)) {
      resolved.push(part);
      continue;
    }
    const hostPath = join(root, ...resolved, part);
    let stat;
    try {
      stat = lstatSync(hostPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw err;
      exists = false;
      resolved.push(part);
      continue;
    }
    if (!stat.isSymbolicLink()) {
      resolved.push(part);
      continue;
    }
    if (++symlinks > MAX_SYMLINKS) {
      throw new EsgzError('UNSAFE_PATH', `too many levels of symbolic links resolving "${path}" in ${root}`);
    }
    const target = readlinkSync(hostPath);
    if (target.startsWith('/')) resolved.length = 0;
    pending = [...splitLoosely(target), ...pending];
  }
  return join(root, ...resolved);
}

function splitLoosely(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}
