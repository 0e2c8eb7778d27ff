import path from 'node:path';

/**
 * The name the binary was started as. The same entry point is installed as `esgz` and as
 * `ctr-remote`; under the second name esgz behaves as ctr-remote does (bare image names mean the
 * local store, stdout carries only what ctr-remote prints), so a user's script does not notice
 * the switch.
 */
export type InvocationName = 'esgz' | 'ctr-remote';

export const CTR_REMOTE_NAME = 'ctr-remote';

/** Read from the path the process was started with (argv[1] keeps the symlink's own name). */
export function invocationName(scriptPath: string = process.argv[1] ?? ''): InvocationName {
  return path.basename(scriptPath) === CTR_REMOTE_NAME ? 'ctr-remote' : 'esgz';
}

export function invokedAsCtrRemote(): boolean {
  return invocationName() === 'ctr-remote';
}
