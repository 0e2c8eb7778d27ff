import { chmodSync, createWriteStream, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, rm, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { EsgzError, isEsgzError } from '../errors.js';
import { cleanComponents, resolveInRoot } from '../runtime/root-path.js';
import { canSetXattr, isRoot, lsetxattr, mknod } from './native.js';

/** OCI image-spec layer.md whiteout markers. */
export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** Other `.wh..wh.` names are AUFS internals (hardlink dirs) that never belong in a rootfs. */
const AUFS_META_PREFIX = '.wh..wh.';
const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
const PAX_XATTR_PREFIX = 'SCHILY.xattr.';
/** Files up to this size are written with one synchronous call instead of a stream. */
const SMALL_FILE_BYTES = 1 << 20;

export type WhiteoutMode =
  /** Layer goes into its own directory for overlayfs: whiteouts become 0/0 char devices, opaque dirs get trusted.overlay.opaque=y. */
  | 'overlay'
  /** Layer is applied on top of the lower layers already in the directory: whiteouts delete. */
  | 'merge';

export interface UnpackOptions {
  whiteouts: WhiteoutMode;
  /** Names the layer in messages, e.g. `layer 2 (sha256:ab12…)`. */
  layerName: string;
  /** Restore uid/gid (default: when running as root). */
  sameOwner?: boolean;
  signal?: AbortSignal;
  /** Told about each path this layer provides (`kind` is the tar entry type) or hides. */
  onAdd?(path: string, kind: string, size: number): void;
  onWhiteout?(path: string): void;
  onOpaque?(dir: string): void;
  /** Non-fatal problems, e.g. a device node skipped because esgz is not root. */
  onWarning?(message: string): void;
}

export interface UnpackStats {
  entries: number;
  files: number;
  bytes: number;
  whiteouts: number;
  skipped: number;
}

type TarHeader = Omit<tar.Header, 'type' | 'pax'> & { type: string | null; pax?: Record<string, string> | null };

/**
 * Streams one decompressed layer tar into `root`. No entry can create or change anything outside
 * `root`: ".." that climbs out is refused, absolute names are taken relative to `root`, symlinks
 * met on the way to an entry are resolved inside `root` (never by the host kernel), the entry's
 * own final component is never followed, and hardlink targets must be inside `root`.
 */
export async function unpackLayer(input: Readable, root: string, options: UnpackOptions): Promise<UnpackStats> {
  const sameOwner = options.sameOwner ?? isRoot();
  const stats: UnpackStats = { entries: 0, files: 0, bytes: 0, whiteouts: 0, skipped: 0 };
  // Directory modes and times are applied last: adding children changes a directory's mtime,
  // and a read-only directory mode would stop an unprivileged unpack from filling it.
  const directories = new Map<string, { mode: number; mtime: Date }>();
  const addedHere = new Set<string>();
  if (options.whiteouts === 'overlay' && !canSetXattr()) {
    throw new EsgzError('UNSUPPORTED', 'overlay layer directories need native/fanotify/esgz-fsops to mark opaque directories (run npm run build:native)');
  }

  await mkdir(root, { recursive: true });
  const state: EntryState = { knownDirs: new Map([['', root]]), sameOwner, stats, directories, addedHere };
  const extract = tar.extract();
  const consume = (async () => {
    for await (const entry of extract) {
      if (options.signal?.aborted) throw new EsgzError('INTERRUPTED', 'interrupted');
      const header = entry.header as TarHeader;
      stats.entries++;
      try {
        await applyEntry(header, entry as AsyncIterable<Buffer>, root, options, state);
      } catch (err) {
        entry.resume();
        if (isEsgzError(err)) throw err;
        throw new EsgzError('BAD_LAYER', `${options.layerName}: entry "${header.name}": ${(err as Error).message}`, { cause: err });
      }
      // Drain whatever the entry handler did not read (links, dirs) so the parser moves on.
      entry.resume();
    }
  })();
  try {
    await Promise.all([feed(input, extract, options.signal), consume]);
  } catch (err) {
    input.destroy();
    extract.destroy();
    await consume.catch(() => undefined);
    if (isEsgzError(err)) throw err;
    if ((err as Error).name === 'AbortError') throw new EsgzError('INTERRUPTED', 'interrupted', { cause: err });
    throw new EsgzError('BAD_LAYER', `${options.layerName}: not a valid tar stream: ${(err as Error).message}`, { cause: err });
  }

  const deepestFirst = [...directories].sort((a, b) => b[0].length - a[0].length);
  for (const [path, meta] of deepestFirst) {
    // A later entry of the same layer may have replaced the directory with something else.
    if (!(await lstatOrUndefined(path))?.isDirectory()) continue;
    await chmod(path, meta.mode & 0o7777);
    await utimes(path, meta.mtime, meta.mtime);
  }
  return stats;
}

interface EntryState {
  /** Directories of this unpack known to be real directories: clean path → host path. */
  knownDirs: Map<string, string>;
  sameOwner: boolean;
  stats: UnpackStats;
  directories: Map<string, { mode: number; mtime: Date }>;
  addedHere: Set<string>;
}

/** Writes `input` into tar-stream's (streamx) parser with backpressure. */
async function feed(input: Readable, extract: tar.Extract, signal: AbortSignal | undefined): Promise<void> {
  for await (const chunk of input) {
    if (signal?.aborted) throw new EsgzError('INTERRUPTED', 'interrupted');
    if (!extract.write(chunk as Buffer)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => { extract.off('error', onError); resolve(); };
        const onError = (err: Error) => { extract.off('drain', onDrain); reject(err); };
        extract.once('drain', onDrain);
        extract.once('error', onError);
      });
    }
  }
  await new Promise<void>((resolve, reject) => {
    extract.once('error', reject);
    extract.end(() => resolve());
  });
}

async function applyEntry(header: TarHeader, body: AsyncIterable<Buffer>, root: string, options: UnpackOptions, state: EntryState): Promise<void> {
  const parts = cleanComponents(header.name);
  if (parts === null) {
    throw new EsgzError('UNSAFE_PATH', `${options.layerName}: entry "${header.name}" escapes the root`);
  }
  const type = header.type ?? 'file';
  if (type === 'pax-global-header' || type === 'pax-header' || type === 'gnu-long-path' || type === 'gnu-long-link-path') return;
  if (parts.length === 0) {
    // "./" itself: only its metadata matters.
    if (type === 'directory') state.directories.set(root, { mode: header.mode ?? 0o755, mtime: header.mtime ?? new Date(0) });
    return;
  }
  const path = parts.join('/');
  const name = parts[parts.length - 1]!;
  const parentPath = parts.slice(0, -1).join('/');

  if (name.startsWith(WHITEOUT_PREFIX)) {
    state.stats.whiteouts++;
    await applyWhiteout(root, parentPath, name, options, state);
    return;
  }

  let parentHost = state.knownDirs.get(parentPath);
  if (parentHost === undefined) {
    parentHost = await resolveInRoot(root, parentPath, { followFinal: true });
    await ensureDirectory(root, parentHost, options.layerName, header.name);
    state.knownDirs.set(parentPath, parentHost);
  }
  const dest = join(parentHost, name);
  // Synchronous metadata calls: a layer is thousands of tiny operations, and a hop through the
  // libuv pool for each costs more than the syscall itself.
  const existing = lstatSync(dest, { throwIfNoEntry: false });
  if (existing && !(existing.isDirectory() && type === 'directory')) {
    if (existing.isDirectory() || existing.isSymbolicLink()) forgetDirs(state.knownDirs, path, dest);
    await rm(dest, { recursive: true, force: true });
  }

  const mode = header.mode ?? (type === 'directory' ? 0o755 : 0o644);
  const mtime = header.mtime ?? new Date(0);
  switch (type) {
    case 'directory':
      if (!existing?.isDirectory()) mkdirSync(dest, { mode: 0o700 });
      state.directories.set(dest, { mode, mtime });
      state.knownDirs.set(path, dest);
      break;
    case 'file':
    case 'contiguous-file':
      // 'wx' = O_CREAT|O_EXCL: fails instead of following anything planted at `dest`.
      if ((header.size ?? 0) <= SMALL_FILE_BYTES) {
        const chunks: Buffer[] = [];
        for await (const chunk of body) chunks.push(chunk);
        writeFileSync(dest, Buffer.concat(chunks), { flag: 'wx', mode: 0o600 });
      } else {
        await pipeline(body, createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
      }
      state.stats.files++;
      state.stats.bytes += header.size ?? 0;
      break;
    case 'symlink':
      // The target is stored as written: it is only ever resolved inside the container.
      symlinkSync(header.linkname ?? '', dest);
      break;
    case 'link': {
      const targetParts = cleanComponents(header.linkname ?? '');
      if (targetParts === null || targetParts.length === 0) {
        throw new EsgzError('UNSAFE_PATH', `${options.layerName}: hardlink "${header.name}" to "${header.linkname}" escapes the root`);
      }
      const targetHost = await resolveInRoot(root, targetParts.join('/'), { followFinal: false });
      const target = lstatSync(targetHost, { throwIfNoEntry: false });
      if (!target || target.isDirectory()) {
        throw new EsgzError('BAD_LAYER', `${options.layerName}: hardlink "${header.name}" points to "${header.linkname}", which is not a file in the layer`);
      }
      linkSync(targetHost, dest);
      // A hardlink shares the target's inode: its metadata is the target's.
      state.addedHere.add(path);
      options.onAdd?.(path, 'link', target.size);
      return;
    }
    case 'character-device':
    case 'block-device':
    case 'fifo':
      if (type !== 'fifo' && !isRoot()) {
        state.stats.skipped++;
        options.onWarning?.(`${options.layerName}: skipped device node "${header.name}" (creating device nodes needs root)`);
        return;
      }
      await mknod(dest, type === 'fifo' ? 'p' : type === 'character-device' ? 'c' : 'b', header.devmajor ?? 0, header.devminor ?? 0, mode);
      break;
    default:
      state.stats.skipped++;
      options.onWarning?.(`${options.layerName}: skipped entry "${header.name}" of unsupported type ${type}`);
      return;
  }

  if (state.sameOwner) lchownSync(dest, header.uid ?? 0, header.gid ?? 0);
  for (const [key, value] of Object.entries(header.pax ?? {})) {
    if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
    const xattr = key.slice(PAX_XATTR_PREFIX.length);
    // trusted.* and security.* need root; an unprivileged unpack keeps going without them.
    if (!isRoot() && !xattr.startsWith('user.')) continue;
    if (!canSetXattr()) {
      options.onWarning?.(`${options.layerName}: skipped extended attribute ${xattr} on "${header.name}" (native helper not built)`);
      continue;
    }
    await lsetxattr(dest, xattr, Buffer.from(value, 'utf8'));
  }
  if (type !== 'directory') {
    // chmod after chown: chown clears setuid/setgid bits. Symlinks have no mode of their own.
    if (type !== 'symlink') chmodSync(dest, mode & 0o7777);
    lutimesSync(dest, mtime, mtime);
  }
  state.addedHere.add(path);
  options.onAdd?.(path, type, type === 'file' || type === 'contiguous-file' ? (header.size ?? 0) : 0);
}

async function applyWhiteout(root: string, parentPath: string, name: string, options: UnpackOptions, state: EntryState): Promise<void> {
  const parentHost = await resolveInRoot(root, parentPath, { followFinal: true });
  if (name === OPAQUE_WHITEOUT) {
    if (options.whiteouts === 'merge') forgetDirs(state.knownDirs, parentPath, parentHost, true);
    options.onOpaque?.(parentPath);
    if (options.whiteouts === 'overlay') {
      await ensureDirectory(root, parentHost, options.layerName, `${parentPath}/${name}`);
      await lsetxattr(parentHost, OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
      return;
    }
    // Opaque hides the lower layers' children, not what this layer already put there.
    const children = await readdir(parentHost).catch(() => [] as string[]);
    for (const child of children) {
      const childPath = parentPath === '' ? child : `${parentPath}/${child}`;
      if (!state.addedHere.has(childPath)) await rm(join(parentHost, child), { recursive: true, force: true });
    }
    return;
  }
  if (name.startsWith(AUFS_META_PREFIX)) return;
  const hidden = name.slice(WHITEOUT_PREFIX.length);
  if (hidden === '' || hidden === '.' || hidden === '..') {
    throw new EsgzError('UNSAFE_PATH', `${options.layerName}: whiteout "${parentPath}/${name}" names no file`);
  }
  const hiddenPath = parentPath === '' ? hidden : `${parentPath}/${hidden}`;
  options.onWhiteout?.(hiddenPath);
  const target = join(parentHost, hidden);
  forgetDirs(state.knownDirs, hiddenPath, target);
  if (options.whiteouts === 'overlay') {
    await ensureDirectory(root, parentHost, options.layerName, hiddenPath);
    await rm(target, { recursive: true, force: true });
    await mknod(target, 'c', 0, 0, 0);
    return;
  }
  await rm(target, { recursive: true, force: true });
}

/**
 * Drops cached directories at or below a path that is being removed (by tar path and by host
 * path, since a cached directory may have been reached through a symlink).
 */
function forgetDirs(knownDirs: Map<string, string>, path: string, host: string, keepSelf = false): void {
  for (const [key, value] of knownDirs) {
    if (key === '') continue;
    const underKey = key === path ? !keepSelf : key.startsWith(`${path}/`) || path === '';
    const underHost = value === host ? !keepSelf : value.startsWith(`${host}/`);
    if (underKey || underHost) knownDirs.delete(key);
  }
}

/** Creates `dir` (already resolved inside `root`) and its missing parents; refuses non-directories in the way. */
async function ensureDirectory(root: string, dir: string, layerName: string, entryName: string): Promise<void> {
  if (!dir.startsWith(root)) {
    throw new EsgzError('INTERNAL', `${layerName}: entry "${entryName}" resolved outside the root`);
  }
  const st = await lstatOrUndefined(dir);
  if (st?.isDirectory()) return;
  if (st) throw new EsgzError('BAD_LAYER', `${layerName}: entry "${entryName}" needs "${dir.slice(root.length) || '/'}" to be a directory, but it is not`);
  await ensureDirectory(root, dirname(dir), layerName, entryName);
  await mkdir(dir, { mode: 0o755 });
}

async function lstatOrUndefined(path: string) {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}
