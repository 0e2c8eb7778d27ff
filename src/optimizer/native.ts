import { accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { EsgzError } from '../errors.js';

const execFileAsync = promisify(execFile);

/** native/fanotify/ relative to this file: the same depth from src/optimizer and dist/optimizer. */
const nativeDir = fileURLToPath(new URL('../../native/fanotify/', import.meta.url));

function executable(path: string): string | undefined {
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    return undefined;
  }
}

/** The fanotify tracer program, or undefined when the native build did not produce it. */
export function tracerBinary(): string | undefined {
  return executable(process.env.ESGZ_FANOTIFY_BIN ?? `${nativeDir}esgz-fanotify`);
}

export function fsopsBinary(): string | undefined {
  return executable(`${nativeDir}esgz-fsops`);
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** mknod without following a symlink at `path` (mknod never follows; the parent is already resolved). */
export async function mknod(path: string, type: 'c' | 'b' | 'p', major: number, minor: number, mode: number): Promise<void> {
  const helper = fsopsBinary();
  try {
    if (helper) await execFileAsync(helper, ['mknod', path, type, String(major), String(minor), (mode & 0o7777).toString(8)]);
    else if (type === 'p') await execFileAsync('mkfifo', ['-m', (mode & 0o7777).toString(8), path]);
    else await execFileAsync('mknod', ['-m', (mode & 0o7777).toString(8), path, type, String(major), String(minor)]);
  } catch (err) {
    throw new EsgzError('RUNTIME', `cannot create device node ${path}: ${stderrOf(err)}`, { cause: err });
  }
}

/** True when extended attributes can be written (the native helper is built). */
export function canSetXattr(): boolean {
  return fsopsBinary() !== undefined;
}

/** lsetxattr: sets an extended attribute on `path` itself, never on a symlink's target. */
export async function lsetxattr(path: string, name: string, value: Buffer): Promise<void> {
  const helper = fsopsBinary();
  if (!helper) throw new EsgzError('UNSUPPORTED', `cannot set extended attribute ${name} on ${path}: native/fanotify/esgz-fsops is not built (run npm run build:native)`);
  try {
    await execFileAsync(helper, ['setxattr', path, name, value.toString('hex')]);
  } catch (err) {
    throw new EsgzError('RUNTIME', `cannot set extended attribute ${name} on ${path}: ${stderrOf(err)}`, { cause: err });
  }
}

function stderrOf(err: unknown): string {
  const stderr = (err as { stderr?: string }).stderr?.trim();
  return stderr ? stderr.replace(/^esgz-fsops:\s*/, '') : (err as Error).message;
}
