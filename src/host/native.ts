// Where the native helpers built at install live, and who we run as.
import { accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** native/fanotify/ relative to this file: the same depth from src/host and dist/host. */
const nativeDir = fileURLToPath(new URL('../../native/fanotify/', import.meta.url));

/** `path` when it is an executable file, else undefined. */
export function executableOrUndefined(path: string): string | undefined {
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    return undefined;
  }
}

/** A helper program of native/fanotify/ (esgz-fanotify, esgz-fsops), or undefined when not built. */
export function nativeBinary(name: string): string | undefined {
  return executableOrUndefined(`${nativeDir}${name}`);
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
