// Filesystem operations Node has no call for (mknod of devices, lsetxattr), through the small
// native helper esgz-fsops, for unpacking layers as root.
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { EsgzError } from '../errors.js';
import { nativeBinary } from '../host/native.js';

const execFileAsync = promisify(execFile);

function fsopsBinary(): string | undefined {
  return nativeBinary('esgz-fsops');
}

/** mknod without following a symlink at `path` (mknod never follows; the parent is already resolved). */
export async function mknod(
  path: string,
  type: 'c' | 'b' | 'p',
  major: number,
  minor: number,
  mode: number,
): Promise<void> {
  const helper = fsopsBinary();
  try {
    if (helper)
      await execFileAsync(helper, ['mknod', path, type, String(major), String(minor), (mode & 0o7777).toString(8)]);
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
  if (!helper)
    throw new EsgzError(
      'UNSUPPORTED',
      `cannot set extended attribute ${name} on ${path}: native/fanotify/esgz-fsops is not built (run npm run build:native)`,
    );
  try {
    await execFileAsync(helper, ['setxattr', path, name, value.toString('hex')]);
  } catch (err) {
    throw new EsgzError('RUNTIME', `cannot set extended attribute ${name} on ${path}: ${stderrOf(err)}`, {
      cause: err,
    });
  }
}

/**
 * One esgz-fsops process (its `serve` mode) answering mknod and lsetxattr requests in order: an
 * unpack makes one such call per whiteout, and a process per call would cost milliseconds each.
 * Requests made in the same turn of the event loop go out in one write, so a caller that does not
 * wait for each answer (many whiteouts in a row) pays one round trip per batch. Started on first
 * use; `close()` ends it. Without the helper, mknod falls back to the mknod/mkfifo commands and
 * lsetxattr fails as the module-level functions do.
 */
export class FsOps {
  private readonly helper = fsopsBinary();
  private child: ChildProcessByStdio<Writable, Readable, null> | undefined;
  private readonly waiting: Array<{ resolve(): void; reject(err: Error): void }> = [];
  private outbox: string[] = [];
  private partial = '';
  private failure: Error | undefined;

  /** mknod without following anything at `path`; the mode is exact (the helper's umask is 0). */
  async mknod(path: string, type: 'c' | 'b' | 'p', major: number, minor: number, mode: number): Promise<void> {
    if (!this.helper) return mknod(path, type, major, minor, mode);
    const request = `mknod ${hex(path)} ${type} ${major} ${minor} ${(mode & 0o7777).toString(8)}`;
    await this.call(request, (reason) => `cannot create device node ${path}: ${reason}`);
  }

  async lsetxattr(path: string, name: string, value: Buffer): Promise<void> {
    if (!this.helper) return lsetxattr(path, name, value);
    await this.call(
      `setxattr ${hex(path)} ${hex(name)} ${value.toString('hex')}`,
      (reason) => `cannot set extended attribute ${name} on ${path}: ${reason}`,
    );
  }

  /** Ends the helper (it exits at the end of its input) and waits for it. */
  async close(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
      child.stdin.end();
      await exited;
    }
  }

  private call(request: string, describe: (reason: string) => string): Promise<void> {
    const child = this.start();
    return new Promise<void>((resolve, reject) => {
      if (this.failure) {
        reject(new EsgzError('RUNTIME', describe(this.failure.message), { cause: this.failure }));
        return;
      }
      this.waiting.push({
        resolve,
        reject: (err) => reject(new EsgzError('RUNTIME', describe(err.message), { cause: err })),
      });
      if (this.outbox.push(`${request}\n`) === 1) {
        setImmediate(() => {
          const batch = this.outbox.join('');
          this.outbox = [];
          if (!this.failure) child.stdin.write(batch);
        });
      }
    });
  }

  private start(): ChildProcessByStdio<Writable, Readable, null> {
    if (this.child) return this.child;
    const child = spawn(this.helper!, ['serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      const lines = (this.partial + text).split('\n');
      this.partial = lines.pop()!;
      for (const line of lines) {
        const waiter = this.waiting.shift();
        if (!waiter) continue;
        if (line === 'ok') waiter.resolve();
        else waiter.reject(new Error(line.replace(/^err /, '')));
      }
    });
    const fail = (err: Error) => {
      this.failure ??= err;
      for (const waiter of this.waiting.splice(0)) waiter.reject(err);
    };
    child.on('error', fail);
    child.stdin.on('error', fail);
    child.on('close', (code, signal) => fail(new Error(`esgz-fsops exited (${signal ?? `code ${code}`})`)));
    return child;
  }
}

function hex(text: string): string {
  return Buffer.from(text, 'utf8').toString('hex');
}

function stderrOf(err: unknown): string {
  const stderr = (err as { stderr?: string }).stderr?.trim();
  return stderr ? stderr.replace(/^esgz-fsops:\s*/, '') : (err as Error).message;
}
