/**
 * Keeps libfuse's threads from ever running a signal handler.
 *
 * libuv's signal handlers take a process-wide lock (a one-byte token in a pipe). libfuse2's
 * multi-threaded loop lets its workers receive SIGCHLD and pthread_cancel()s them at unmount, so a
 * SIGCHLD from runc exiting while the layers unmount can be handled on a worker that is then
 * cancelled with the token in hand; every later signal registration in the process (execa's
 * cleanup handlers, Ctrl-C handling) then blocks forever. Threads inherit their creator's signal
 * mask, so creating the FUSE thread with every signal blocked (native/sigmask) makes libfuse's
 * threads immune, while the main thread and libuv's own threads keep handling signals.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const SIGMASK_ADDON = fileURLToPath(new URL('../../native/sigmask/build/Release/esgz_sigmask.node', import.meta.url));

type Binding = { fuse_native_mount?: ((...args: unknown[]) => unknown) & { shielded?: boolean } };

let state: 'unchecked' | 'shielded' | 'unavailable' = 'unchecked';

/** Wraps fuse-native's native mount so its threads start with signals blocked. Idempotent. */
export function shieldFuseThreadsFromSignals(onWarning?: (message: string) => void): void {
  if (state !== 'unchecked') return;
  if (!existsSync(SIGMASK_ADDON)) {
    state = 'unavailable';
    onWarning?.(
      `native/sigmask is not built (${SIGMASK_ADDON}); run "npm run build:native": without it a container exit can hang esgz`,
    );
    return;
  }
  const addon = { exports: {} as { callWithSignalsBlocked<T>(fn: () => T): T } };
  process.dlopen(addon as unknown as NodeJS.Module, SIGMASK_ADDON);
  // fuse-native keeps its binding in node-gyp-build's module cache: the same object it calls.
  const require = createRequire(import.meta.url);
  const fuseDir = dirname(require.resolve('fuse-native/package.json'));
  const binding = createRequire(`${fuseDir}/index.js`)('node-gyp-build')(fuseDir) as Binding;
  const mount = binding.fuse_native_mount;
  if (typeof mount !== 'function') {
    state = 'unavailable';
    onWarning?.('fuse-native has no fuse_native_mount to wrap; FUSE threads may receive signals');
    return;
  }
  if (!mount.shielded) {
    const shielded = Object.assign(
      function (this: unknown, ...args: unknown[]) {
        return addon.exports.callWithSignalsBlocked(() => mount.apply(this, args));
      },
      { shielded: true },
    );
    binding.fuse_native_mount = shielded;
  }
  state = 'shielded';
}

/** Whether FUSE threads are being started with signals blocked (for tests and `--json`). */
export function fuseThreadsShielded(): boolean {
  return state === 'shielded';
}
