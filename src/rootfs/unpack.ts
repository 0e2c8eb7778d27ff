import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join, relative, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { readTar, type TarEntry, type TarHeader } from '../estargz/tar.js';
import { EsgzError, isEsgzError } from '../errors.js';
import { cleanComponents, resolveInRootSync } from './root-path.js';
import { canSetXattr, FsOps } from './fsops.js';
import { isRoot } from '../host/native.js';

/** OCI image-spec layer.md whiteout markers. */
export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** Other `.wh..wh.` names are AUFS internals (hardlink dirs) that never belong in a rootfs. */
const AUFS_META_PREFIX = '.wh..wh.';
const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/**
 * overlayfs keeps its own state in trusted.overlay.* (opaque, redirect, metacopy, origin...): a
 * layer must not forge it, since it would hide or redirect lower layers' files outside what the
 * OCI whiteout markers say. esgz writes the opaque marker itself, from `.wh..wh..opq`.
 */
const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
const PAX_XATTR_PREFIX = 'SCHILY.xattr.';
/** Files up to this size are written with synchronous calls instead of through the event loop. */
const SMALL_FILE_BYTES = 1 << 20;
/** Piece size when copying a large file's payload. */
const COPY_PIECE_BYTES = 1 << 20;
/** Whiteout device nodes requested from the helper before waiting for their answers. */
const MAX_PENDING_WHITEOUTS = 4096;
/** O_CREAT|O_EXCL never opens what is already there, O_NOFOLLOW says so twice for a symlink. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/** Opens a directory itself: fails on a symlink or anything else planted at the path. */
const DIRECTORY_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** Tar typeflags (POSIX ustar, plus GNU's contiguous file). */
const TYPE = {
  file: '0',
  link: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
  contiguous: '7',
} as const;

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
  /** Told about each path this layer provides (`kind` is the entry type, e.g. 'file', 'directory', 'link') or hides. */
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

/** A directory's metadata, applied after the whole layer, to the very directory the entry made. */
interface PendingDirectory {
  mode: number;
  mtime: number;
  dev: number;
  ino: number;
}

/**
 * Streams one decompressed layer tar into `root`. No entry can create or change anything outside
 * `root`: ".." that climbs out is refused, absolute names are taken relative to `root` (as
 * containerd does), symlinks met on the way to an entry are resolved inside `root` (never by the
 * host kernel), the entry's own final component is never followed, and hardlink targets must be
 * inside `root`. Every later change to an entry (owner, mode, times, xattrs) goes through a file
 * descriptor of the entry or a non-following call on a path resolved at that moment.
 */
export async function unpackLayer(input: Readable, root: string, options: UnpackOptions): Promise<UnpackStats> {
  if (options.whiteouts === 'overlay' && !canSetXattr()) {
    throw new EsgzError(
      'UNSUPPORTED',
      'overlay layer directories need native/fanotify/esgz-fsops to mark opaque directories (run npm run build:native)',
    );
  }
  root = resolve(root);
  mkdirSync(root, { recursive: true });
  const state: EntryState = {
    root,
    options,
    sameOwner: options.sameOwner ?? isRoot(),
    stats: { entries: 0, files: 0, bytes: 0, whiteouts: 0, skipped: 0 },
    knownDirs: new DirTrie(),
    directories: new Map(),
    addedHere: new Set(),
    fsops: new FsOps(),
    pending: { paths: new Set(), answers: [] },
  };
  try {
    for await (const entry of readTar(input, options.layerName)) {
      if (options.signal?.aborted) throw new EsgzError('INTERRUPTED', 'interrupted');
      state.stats.entries++;
      try {
        // Only a run of whiteouts may go on before their device nodes exist.
        if (!basename(entry.header.name).startsWith(WHITEOUT_PREFIX)) await settlePending(state);
        await applyEntry(entry, state);
      } catch (err) {
        if (isEsgzError(err)) throw err;
        throw new EsgzError(
          'BAD_LAYER',
          `${options.layerName}: entry "${entry.header.name}": ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
    await settlePending(state);
  } catch (err) {
    input.destroy();
    if (isEsgzError(err)) throw err;
    if ((err as Error).name === 'AbortError') throw new EsgzError('INTERRUPTED', 'interrupted', { cause: err });
    throw new EsgzError('BAD_LAYER', `${options.layerName}: not a valid tar stream: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await state.fsops.close();
  }
  try {
    applyDirectoryMetadata(state);
  } catch (err) {
    throw new EsgzError(
      'BAD_LAYER',
      `${options.layerName}: cannot set directory modes and times: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return state.stats;
}

interface EntryState {
  root: string;
  options: UnpackOptions;
  sameOwner: boolean;
  stats: UnpackStats;
  knownDirs: DirTrie;
  /** Directories this layer made or set metadata on, by path relative to the root. */
  directories: Map<string, PendingDirectory>;
  /** Paths (relative to the root) this layer put in place: a merge-mode opaque marker keeps them. */
  addedHere: Set<string>;
  fsops: FsOps;
  /** Whiteout device nodes asked for and not yet confirmed (overlay mode); see settlePending. */
  pending: { paths: Set<string>; answers: Array<Promise<void>>; error?: unknown };
}

/** Waits for every pending whiteout device node; throws the first failure. */
async function settlePending(state: EntryState): Promise<void> {
  const { pending } = state;
  if (pending.answers.length > 0) await Promise.all(pending.answers);
  pending.answers = [];
  pending.paths.clear();
  if (pending.error !== undefined) throw pending.error;
}

/**
 * The directories of this unpack that are real directories reached from the root without any
 * symlink, as a trie of path components (relative to the root). For them the host path is just
 * root + path, with nothing to resolve. Whatever removes or replaces a path drops its node, and
 * with it the whole subtree, in time proportional to the path's depth.
 */
class DirTrie {
  private readonly top: DirNode = new Map();

  has(parts: readonly string[]): boolean {
    let node: DirNode | undefined = this.top;
    for (const part of parts) {
      node = node.get(part);
      if (!node) return false;
    }
    return true;
  }

  /** Only for a path whose every component was just seen to be a directory, not a symlink. */
  add(parts: readonly string[]): void {
    let node = this.top;
    for (const part of parts) {
      let child = node.get(part);
      if (!child) node.set(part, (child = new Map()));
      node = child;
    }
  }

  /** Forgets `parts` and everything under it (`keepSelf`: only what is under it). */
  forget(parts: readonly string[], keepSelf = false): void {
    let node: DirNode | undefined = this.top;
    const last = keepSelf ? parts.length : parts.length - 1;
    for (let i = 0; i < last && node; i++) node = node.get(parts[i]!);
    if (!node) return;
    if (keepSelf || parts.length === 0) node.clear();
    else node.delete(parts[parts.length - 1]!);
  }
}

type DirNode = Map<string, DirNode>;

// Host paths are built by hand: the root is absolute and normalized, components are clean (no
// "", ".", ".." or "/"), and path.join/relative cost more than the rest of a whiteout.
function under(root: string, parts: readonly string[]): string {
  return parts.length === 0 ? root : `${root}/${parts.join('/')}`;
}

/** `host` (root or under it) relative to the root, "" for the root itself. */
function relTo(root: string, host: string): string {
  return host === root ? '' : host.slice(root.length + 1);
}

function partsOf(rel: string): string[] {
  return rel === '' ? [] : rel.split('/');
}

async function applyEntry(entry: TarEntry, state: EntryState): Promise<void> {
  const { header } = entry;
  const parts = entryComponents(header, state);
  const type = typeOf(header);
  if (parts.length === 0) {
    // "./" itself: only its metadata matters.
    if (type === TYPE.directory) rememberDirectory(state, '', state.root, header);
    return;
  }
  const name = parts[parts.length - 1]!;
  const parentParts = parts.slice(0, -1);
  if (name.startsWith(WHITEOUT_PREFIX)) {
    state.stats.whiteouts++;
    await applyWhiteout(parentParts, name, state);
    return;
  }
  const dest = clearDestination(parentParts, name, type, header.name, state);
  const added = await createEntry(entry, type, dest, state);
  if (added === undefined) return;
  state.addedHere.add(dest.rel);
  state.options.onAdd?.(parts.join('/'), added.kind, added.size);
}

/** The entry's clean path components inside the root ([] for the root itself); refuses names that climb out. */
function entryComponents(header: TarHeader, state: EntryState): string[] {
  const parts = cleanComponents(header.name);
  if (parts === null) {
    throw new EsgzError('UNSAFE_PATH', `${state.options.layerName}: entry "${header.name}" escapes the root`);
  }
  return parts;
}

/** Where an entry goes: its host path, that path relative to the root, and what was there before. */
interface Destination {
  host: string;
  rel: string;
  /** A directory an entry of type directory keeps (its contents stay); undefined when nothing is there now. */
  existing: Stats | undefined;
}

/**
 * Resolves the entry's parent inside the root and removes whatever is at its name, except a
 * directory that a directory entry reuses.
 */
function clearDestination(
  parentParts: string[],
  name: string,
  type: string,
  entryName: string,
  state: EntryState,
): Destination {
  const host = `${parentDirectory(parentParts, state, entryName)}/${name}`;
  // Synchronous metadata calls: a layer is thousands of tiny operations, and a hop through the
  // libuv pool for each costs more than the syscall itself.
  const existing = lstatSync(host, { throwIfNoEntry: false });
  const keep = existing?.isDirectory() && type === TYPE.directory;
  if (existing && !keep) removePath(host, existing, state);
  return { host, rel: relTo(state.root, host), existing: keep ? existing : undefined };
}

/** What an entry put in place, for onAdd; undefined when it was skipped. */
type Added = { kind: string; size: number } | undefined;

/** Creates the entry at `dest` by its type, with owner, xattrs and times. */
async function createEntry(entry: TarEntry, type: string, dest: Destination, state: EntryState): Promise<Added> {
  const { header } = entry;
  switch (type) {
    case TYPE.directory:
      await makeDirectory(header, dest, state);
      return { kind: KIND[type]!, size: 0 };
    case TYPE.file:
    case TYPE.contiguous:
      await writeFile(entry, dest.host, state);
      state.stats.files++;
      state.stats.bytes += header.size;
      return { kind: KIND[type]!, size: header.size };
    case TYPE.symlink:
      // The target is stored as written: it is only ever resolved inside the container.
      symlinkSync(header.linkname, dest.host);
      await setOwnerXattrsTimes(dest.host, header, state);
      return { kind: KIND[type]!, size: 0 };
    case TYPE.link:
      // A hardlink shares the target's inode: its metadata is the target's.
      return { kind: 'link', size: hardlink(header, dest.host, state) };
    case TYPE.char:
    case TYPE.block:
    case TYPE.fifo:
      return makeDeviceNode(header, type, dest.host, state);
    default:
      state.stats.skipped++;
      state.options.onWarning?.(
        `${state.options.layerName}: skipped entry "${header.name}" of unsupported type ${JSON.stringify(header.typeflag)}`,
      );
      return undefined;
  }
}

async function makeDirectory(header: TarHeader, dest: Destination, state: EntryState): Promise<void> {
  if (!dest.existing) mkdirSync(dest.host, { mode: 0o700 });
  state.knownDirs.add(dest.rel.split('/'));
  if (state.sameOwner) lchownSync(dest.host, header.uid, header.gid);
  await setXattrs(dest.host, header, state);
  rememberDirectory(state, dest.rel, dest.host, header);
}

async function makeDeviceNode(header: TarHeader, type: string, dest: string, state: EntryState): Promise<Added> {
  const { options } = state;
  if (type !== TYPE.fifo && !isRoot()) {
    state.stats.skipped++;
    options.onWarning?.(
      `${options.layerName}: skipped device node "${header.name}" (creating device nodes needs root)`,
    );
    return undefined;
  }
  // Device nodes keep their numbers and modes (setuid too): they are only reachable inside
  // the 0700 state root and the container, whose runtime decides what it may open.
  const kind = type === TYPE.fifo ? 'p' : type === TYPE.char ? 'c' : 'b';
  await state.fsops.mknod(dest, kind, header.devmajor, header.devminor, header.mode & 0o7777);
  await setOwnerXattrsTimes(dest, header, state);
  return { kind: KIND[type]!, size: 0 };
}

/**
 * A tar time (seconds, maybe fractional or negative) as node's utimes functions take it: they
 * replace a negative number by the current time, so a time before 1970 goes as a Date
 * (millisecond precision); others stay numbers, which keep microseconds.
 */
function fsTime(seconds: number): number | Date {
  return seconds < 0 ? new Date(seconds * 1000) : seconds;
}

/** Owner, xattrs and times of a symlink or device node, never following it. */
async function setOwnerXattrsTimes(dest: string, header: TarHeader, state: EntryState): Promise<void> {
  if (state.sameOwner) lchownSync(dest, header.uid, header.gid);
  await setXattrs(dest, header, state);
  lutimesSync(dest, fsTime(header.mtime), fsTime(header.mtime));
}

/** The names onAdd reports (tar-stream's, which the provenance map and its callers know). */
const KIND: Record<string, string> = {
  [TYPE.file]: 'file',
  [TYPE.contiguous]: 'contiguous-file',
  [TYPE.symlink]: 'symlink',
  [TYPE.directory]: 'directory',
  [TYPE.char]: 'character-device',
  [TYPE.block]: 'block-device',
  [TYPE.fifo]: 'fifo',
};

function typeOf(header: TarHeader): string {
  // Pre-POSIX tars mark directories only by the trailing slash of a regular-file entry.
  if (header.typeflag === TYPE.file && header.name.endsWith('/')) return TYPE.directory;
  return header.typeflag;
}

/**
 * The host directory that holds an entry: from the trie when the path is a known symlink-free
 * directory, else resolved inside the root now (and created), and remembered when that
 * resolution is itself a symlink-free path (its every component was just checked).
 */
function parentDirectory(parentParts: string[], state: EntryState, entryName: string): string {
  const { root } = state;
  if (state.knownDirs.has(parentParts)) return under(root, parentParts);
  const host = resolveInRootSync(root, parentParts.join('/'), { followFinal: true });
  ensureDirectory(root, host, state.options.layerName, entryName);
  state.knownDirs.add(partsOf(relTo(root, host)));
  return host;
}

/** Removes what is at `host` (never following it) and forgets it as a directory. */
function removePath(host: string, existing: Stats, state: EntryState): void {
  if (existing.isDirectory()) {
    state.knownDirs.forget(partsOf(relTo(state.root, host)));
    // rmSync never follows a symlink it meets inside the tree: it unlinks the link.
    rmSync(host, { recursive: true, force: true });
  } else {
    rmSync(host, { force: true });
  }
}

function rememberDirectory(state: EntryState, rel: string, host: string, header: TarHeader): void {
  const st = lstatSync(host);
  state.directories.set(rel, { mode: header.mode & 0o7777, mtime: header.mtime, dev: st.dev, ino: st.ino });
}

/**
 * Directory modes and times are applied last: adding children changes a directory's mtime, and a
 * read-only directory mode would stop an unprivileged unpack from filling it. Each is applied
 * through a descriptor of the path resolved inside the root now, and only when that is still the
 * directory the entry made (same inode): a later entry may have replaced it or any parent with a
 * symlink, and a path remembered from before must never reach outside the root.
 */
function applyDirectoryMetadata(state: EntryState): void {
  // Deepest first, so a read-only parent never stops an unprivileged unpack changing a child.
  const deepestFirst = [...state.directories].sort((a, b) => b[0].length - a[0].length);
  for (const [rel, meta] of deepestFirst) {
    const host = resolveInRootSync(state.root, rel, { followFinal: false });
    let fd: number;
    try {
      fd = openSync(host, DIRECTORY_FLAGS);
    } catch (err) {
      // Replaced by a symlink (ELOOP), a file (ENOTDIR) or removed (ENOENT): nothing to apply.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENOENT') continue;
      throw err;
    }
    try {
      const st = fstatSync(fd);
      if (st.dev !== meta.dev || st.ino !== meta.ino) continue;
      fchmodSync(fd, meta.mode);
      futimesSync(fd, fsTime(meta.mtime), fsTime(meta.mtime));
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Creates the file (never opening anything already there) and sets owner, mode, xattrs and times.
 * Owner, mode and times go through the new file's descriptor.
 */
async function writeFile(entry: TarEntry, dest: string, state: EntryState): Promise<void> {
  const { header } = entry;
  if (header.size <= SMALL_FILE_BYTES) {
    const data = header.size > 0 ? await entry.read(header.size) : Buffer.alloc(0);
    const fd = openSync(dest, CREATE_FLAGS, 0o600);
    try {
      for (let done = 0; done < data.length;) done += writeSync(fd, data, done);
      // chmod after chown: chown clears setuid/setgid bits.
      if (state.sameOwner) fchownSync(fd, header.uid, header.gid);
      await setXattrs(dest, header, state);
      fchmodSync(fd, header.mode & 0o7777);
      futimesSync(fd, fsTime(header.mtime), fsTime(header.mtime));
    } finally {
      closeSync(fd);
    }
    return;
  }
  const file = await open(dest, CREATE_FLAGS, 0o600);
  try {
    while (entry.remaining() > 0) {
      const piece = await entry.readSome(COPY_PIECE_BYTES);
      for (let done = 0; done < piece.length;) done += (await file.write(piece, done)).bytesWritten;
    }
    if (state.sameOwner) await file.chown(header.uid, header.gid);
    await setXattrs(dest, header, state);
    await file.chmod(header.mode & 0o7777);
    await file.utimes(fsTime(header.mtime), fsTime(header.mtime));
  } finally {
    await file.close();
  }
}

/** Links `dest` to an earlier entry of the layer; returns the target's size. */
function hardlink(header: TarHeader, dest: string, state: EntryState): number {
  const { root, options } = state;
  const targetParts = cleanComponents(header.linkname);
  if (targetParts === null || targetParts.length === 0) {
    throw new EsgzError(
      'UNSAFE_PATH',
      `${options.layerName}: hardlink "${header.name}" to "${header.linkname}" escapes the root`,
    );
  }
  const targetHost = resolveInRootSync(root, targetParts.join('/'), { followFinal: false });
  const target = lstatSync(targetHost, { throwIfNoEntry: false });
  if (!target || target.isDirectory()) {
    throw new EsgzError(
      'BAD_LAYER',
      `${options.layerName}: hardlink "${header.name}" points to "${header.linkname}", which is not a file in the layer`,
    );
  }
  // link(2) never follows a symlink at the target: the new name is for the link itself.
  linkSync(targetHost, dest);
  return target.size;
}

/** Sets the entry's `SCHILY.xattr.*` records, byte for byte, on `dest` itself (never following it). */
async function setXattrs(dest: string, header: TarHeader, state: EntryState): Promise<void> {
  const { options } = state;
  for (const [key, value] of header.pax) {
    if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
    const xattr = key.slice(PAX_XATTR_PREFIX.length);
    if (xattr.startsWith(OVERLAY_XATTR_PREFIX)) {
      // Skipped, not fatal: tars of overlay upper directories carry these innocently, and the
      // OCI markers (.wh.*) already say everything a layer may say about lower layers.
      options.onWarning?.(
        `${options.layerName}: skipped extended attribute ${xattr} on "${header.name}" (overlayfs metadata cannot come from a layer)`,
      );
      continue;
    }
    // trusted.* and security.* need root; an unprivileged unpack keeps going without them.
    if (!isRoot() && !xattr.startsWith('user.')) continue;
    if (!canSetXattr()) {
      options.onWarning?.(
        `${options.layerName}: skipped extended attribute ${xattr} on "${header.name}" (native helper not built)`,
      );
      continue;
    }
    await state.fsops.lsetxattr(dest, xattr, value);
  }
}

async function applyWhiteout(parentParts: string[], name: string, state: EntryState): Promise<void> {
  const { root, options } = state;
  const parentPath = parentParts.join('/');
  const parentKnown = state.knownDirs.has(parentParts);
  // A whiteout may skip waiting for the ones before it only when nothing it looks at can be one of
  // their device nodes: its parent is a known directory (never a pending node: making one forgets
  // the path) and its target is not pending itself.
  if (!parentKnown || name === OPAQUE_WHITEOUT || state.pending.answers.length >= MAX_PENDING_WHITEOUTS)
    await settlePending(state);
  const parentHost = parentKnown
    ? under(root, parentParts)
    : resolveInRootSync(root, parentPath, { followFinal: true });
  const parentRelParts = partsOf(relTo(root, parentHost));
  if (name === OPAQUE_WHITEOUT) {
    options.onOpaque?.(parentPath);
    if (options.whiteouts === 'overlay') {
      ensureDirectory(root, parentHost, options.layerName, `${parentPath}/${name}`);
      state.knownDirs.add(parentRelParts);
      await state.fsops.lsetxattr(parentHost, OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
      return;
    }
    // Opaque hides the lower layers' children, not what this layer already put there.
    if (!lstatSync(parentHost, { throwIfNoEntry: false })?.isDirectory()) return;
    for (const child of readdirSync(parentHost)) {
      const childHost = `${parentHost}/${child}`;
      if (state.addedHere.has(relTo(root, childHost))) continue;
      const st = lstatSync(childHost, { throwIfNoEntry: false });
      if (st) removePath(childHost, st, state);
    }
    return;
  }
  if (name.startsWith(AUFS_META_PREFIX)) return;
  const hidden = name.slice(WHITEOUT_PREFIX.length);
  if (hidden === '' || hidden === '.' || hidden === '..') {
    throw new EsgzError('UNSAFE_PATH', `${options.layerName}: whiteout "${parentPath}/${name}" names no file`);
  }
  options.onWhiteout?.(parentPath === '' ? hidden : `${parentPath}/${hidden}`);
  const target = `${parentHost}/${hidden}`;
  if (state.pending.paths.has(target)) await settlePending(state);
  if (options.whiteouts === 'overlay' && !parentKnown) {
    ensureDirectory(root, parentHost, options.layerName, `${parentPath}/${name}`);
    state.knownDirs.add(parentRelParts);
  }
  const existing = lstatSync(target, { throwIfNoEntry: false });
  if (existing) removePath(target, existing, state);
  if (options.whiteouts === 'overlay') {
    // Not awaited here: the next entry that is not such a whiteout waits for all of them.
    state.pending.paths.add(target);
    state.pending.answers.push(
      state.fsops.mknod(target, 'c', 0, 0, 0).catch((err: unknown) => void (state.pending.error ??= err)),
    );
  }
}

/** Creates `dir` (already resolved inside `root`) and its missing parents; refuses non-directories in the way. */
function ensureDirectory(root: string, dir: string, layerName: string, entryName: string): void {
  const rel = relative(root, dir);
  if (rel === '..' || rel.startsWith('../') || rel.startsWith('/')) {
    throw new EsgzError('INTERNAL', `${layerName}: entry "${entryName}" resolved outside the root`);
  }
  let host = root;
  for (const part of rel === '' ? [] : rel.split('/')) {
    host = join(host, part);
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (st?.isDirectory()) continue;
    if (st)
      throw new EsgzError(
        'BAD_LAYER',
        `${layerName}: entry "${entryName}" needs "/${relative(root, host)}" to be a directory, but it is not`,
      );
    mkdirSync(host, { mode: 0o755 });
  }
}
