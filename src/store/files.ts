/**
 * Private, crash-consistent files under the state root (shared by the content store and the lazy
 * pull's records): every directory 0700 and every file 0600 whatever the umask, written under a
 * temp name, fsynced, renamed into place and the directory fsynced, so after a power cut a name
 * holds either nothing or the complete file. Temp names carry the writer's pid and start time;
 * those of dead writers are swept by `image prune`.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { identityAlive, processIdentity } from '../host/process.js';

export const DEFAULT_STATE_ROOT = '/var/lib/esgz';

/** Mode of every directory esgz creates in the state root (containerd's snapshotter uses 0700 too). */
export const PRIVATE_DIR_MODE = 0o700;
/** Mode of every file esgz writes in the state root. */
export const PRIVATE_FILE_MODE = 0o600;

let ownTag: string | undefined;

/** `<pid>.<start time>-<random>`: a unique suffix for temp names that tells whose they are. */
export async function tempTag(): Promise<string> {
  ownTag ??= (processIdentity() ?? String(process.pid)).replace(' ', '.');
  return `${ownTag}-${randomBytes(4).toString('hex')}`;
}

/** Temp names esgz writes: `<name>.tmp-<pid>[.<start>]-<hex>` (the start time since pids get reused). */
export const TEMP_NAME = /\.tmp-(\d+)(?:\.(\d+))?(?:-[0-9a-f]+)?$/;

/** True for a temp name whose writing process is gone (so it can never be completed). */
export async function isDeadTemp(name: string): Promise<boolean> {
  const m = TEMP_NAME.exec(name);
  if (!m) return false;
  return !identityAlive(m[2] === undefined ? m[1]! : `${m[1]} ${m[2]}`);
}

/** Removes the temp files and directories of dead writers directly in `dir`; returns how many. */
export async function sweepDeadTemps(dir: string): Promise<number> {
  let swept = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!(await isDeadTemp(name))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    swept++;
  }
  return swept;
}

/** Creates `dir` (and missing parents) 0700, and makes an existing one 0700: the umask cannot widen it. */
export async function mkdirPrivate(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(dir, PRIVATE_DIR_MODE);
}

/** fsyncs a directory, so a rename or unlink in it survives a power cut. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Makes `path` appear complete or not at all: `write` fills a temp name next to it (created
 * 0600), which is fsynced, renamed into place, and the directory fsynced. After a crash the name
 * holds the old file, the new one, or nothing, never a part; on an error the temp name goes.
 */
export async function replaceAtomically(path: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${path}.tmp-${await tempTag()}`;
  try {
    await write(tmp);
    const handle = await open(tmp, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(join(path, '..'));
}

/** Writes a file (0600) through replaceAtomically. */
export async function writeFileAtomic(path: string, data: Buffer | string): Promise<void> {
  await replaceAtomically(path, async (tmp) => {
    const handle = await open(tmp, 'wx', PRIVATE_FILE_MODE);
    try {
      await handle.writeFile(data);
      await handle.chmod(PRIVATE_FILE_MODE);
    } finally {
      await handle.close();
    }
  });
}
