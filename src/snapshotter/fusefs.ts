/**
 * A read-only FUSE filesystem for one layer, built from its TOC alone: the directory tree,
 * metadata, links, devices and whiteouts come from the TOC entries, and file contents are pulled
 * on demand through an async `readRange` callback (the chunk cache in lazy pull). The tree is laid
 * out the way overlayfs expects a lower layer: `.wh.NAME` entries become 0/0 character devices
 * named NAME, and `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import Fuse, { type FuseStat } from 'fuse-native';
import { execa } from 'execa';
import { EsgzError } from '../errors.js';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from '../estargz/constants.js';
import { cleanEntryName, type TOCEntry } from '../estargz/toc.js';
import { shieldFuseThreadsFromSignals } from './fuse-signals.js';

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_WHITEOUT = '.wh..wh..opq';
const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;

/** One inode of the layer. Hardlinked names share the same node object. */
export interface FsNode {
  ino: number;
  /** Full st_mode (type bits + permissions incl. setuid/setgid/sticky). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  nlink: number;
  rdev: number;
  /** Symlink target. */
  target?: string;
  xattrs: Map<string, Buffer>;
  /** Directory children by name. */
  children?: Map<string, FsNode>;
  /** For regular files: the TOC entry holding the data (hardlinks resolved), passed to readRange. */
  dataEntry?: TOCEntry;
  /** Cleaned path of the data entry (the name chunk lookups use). */
  dataName?: string;
}

/** Reads `length` bytes at `offset` of a regular file; may return fewer only at end of file. */
export type ReadRange = (name: string, entry: TOCEntry, offset: number, length: number) => Promise<Buffer>;

export function makedev(major: number, minor: number): number {
  // glibc's encoding, truncated to the 32 bits fuse-native passes through.
  return (((major & 0xfff) << 8) | (minor & 0xff) | ((minor & ~0xff) << 12)) >>> 0;
}

function parseModtime(modtime: string | undefined): number {
  if (!modtime) return 0;
  const ms = Date.parse(modtime);
  return Number.isNaN(ms) ? 0 : ms;
}

/**
 * A time as fuse-native can hand it to the kernel. It carries st_[amc]time as unsigned 64-bit
 * milliseconds (index.js splits the number into two uint32 words, fuse-native.c divides the
 * uint64 by 1000 into tv_sec), so every time from 1970 up to year 584 million, past 2038
 * included, arrives exactly, but no value reaches the kernel as a time before 1970: -1 s would
 * wrap to 18446744073709550 s. Such times are shown as the epoch (a file from 1969 stays older
 * than every later file instead of jumping to the far future), and `image rpull` unpacks a
 * layer holding one rather than serving it here (fuseShowsModtime), so `esgz run` shows it exactly.
 */
function fuseTimeMs(ms: number): number {
  return ms < 0 ? 0 : ms;
}

/** Whether a lazily served layer shows this TOC modtime exactly (fuse-native cannot show times before 1970). */
export function fuseShowsModtime(modtime: string | undefined): boolean {
  return parseModtime(modtime) >= 0;
}

/**
 * The in-memory inode tree of a layer. Inode numbers are assigned in TOC order (root is 1), so the
 * same TOC always gives the same numbers.
 */
export class LayerTree {
  readonly root: FsNode;
  private readonly byPath = new Map<string, FsNode>();
  private nextIno = 2;

  constructor(entries: readonly TOCEntry[], where = 'layer') {
    this.root = this.newDir(1);
    this.root.mode = S_IFDIR | 0o755;
    this.byPath.set('', this.root);
    const hardlinks: Array<{ name: string; target: string }> = [];
    const opaqueDirs: string[] = [];

    for (const e of entries) {
      if (e.type === 'chunk') continue;
      const name = cleanEntryName(e.name);
      if (name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK) continue;
      if (name === '') {
        if (e.type === 'dir') this.applyMeta(this.root, e, S_IFDIR);
        continue;
      }
      const slash = name.lastIndexOf('/');
      const parentName = slash < 0 ? '' : name.slice(0, slash);
      const base = name.slice(slash + 1);
      if (base === OPAQUE_WHITEOUT) {
        this.dir(parentName, where);
        opaqueDirs.push(parentName);
        continue;
      }
      if (base.startsWith(WHITEOUT_PREFIX)) {
        const hidden = base.slice(WHITEOUT_PREFIX.length);
        const node = this.newNode(S_IFCHR | 0);
        node.rdev = makedev(0, 0);
        node.mtimeMs = parseModtime(e.modtime);
        this.place(parentName, hidden, node, where);
        continue;
      }
      if (e.type === 'hardlink') {
        hardlinks.push({ name, target: cleanEntryName(e.linkName ?? '') });
        continue;
      }
      if (e.type === 'dir') {
        const existing = this.byPath.get(name);
        const node = existing?.children ? existing : this.newDir(this.nextIno++);
        this.applyMeta(node, e, S_IFDIR);
        if (node !== existing) this.place(parentName, base, node, where);
        continue;
      }
      const typeBits =
        e.type === 'reg'
          ? S_IFREG
          : e.type === 'symlink'
            ? S_IFLNK
            : e.type === 'char'
              ? S_IFCHR
              : e.type === 'block'
                ? S_IFBLK
                : S_IFIFO;
      const node = this.newNode(typeBits);
      this.applyMeta(node, e, typeBits);
      if (e.type === 'reg') {
        node.size = e.size ?? 0;
        node.dataEntry = e;
        node.dataName = name;
      } else if (e.type === 'symlink') {
        // Linux shows every symlink as 0777 whatever the tar says (lchmod does not exist).
        node.mode = S_IFLNK | 0o777;
        node.target = e.linkName ?? '';
        node.size = Buffer.byteLength(node.target);
      } else if (e.type === 'char' || e.type === 'block') {
        node.rdev = makedev(e.devMajor ?? 0, e.devMinor ?? 0);
      }
      this.place(parentName, base, node, where);
    }

    for (const { name, target } of hardlinks) {
      const node = this.byPath.get(target);
      if (!node || node.children) {
        throw new EsgzError(
          'BAD_FORMAT',
          `${where}: hardlink ${JSON.stringify(name)} points at ${node ? 'a directory' : 'a missing entry'} ${JSON.stringify(target)}`,
        );
      }
      const slash = name.lastIndexOf('/');
      this.place(slash < 0 ? '' : name.slice(0, slash), name.slice(slash + 1), node, where);
    }
    for (const dir of opaqueDirs) this.byPath.get(dir)!.xattrs.set(OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
    this.countLinks(this.root);
  }

  private newNode(mode: number): FsNode {
    return { ino: 0, mode, uid: 0, gid: 0, size: 0, mtimeMs: 0, nlink: 0, rdev: 0, xattrs: new Map() };
  }

  private newDir(ino: number): FsNode {
    const node = this.newNode(S_IFDIR | 0o755);
    node.ino = ino;
    node.children = new Map();
    node.size = 4096;
    return node;
  }

  private applyMeta(node: FsNode, e: TOCEntry, typeBits: number): void {
    node.mode = typeBits | ((e.mode ?? 0) & 0o7777);
    node.uid = e.uid ?? 0;
    node.gid = e.gid ?? 0;
    node.mtimeMs = parseModtime(e.modtime);
    node.xattrs = new Map();
    for (const [key, value] of Object.entries(e.xattrs ?? {})) node.xattrs.set(key, Buffer.from(value, 'base64'));
  }

  /** The directory at `name`, creating implicit parents (mode 0755, root-owned) as tar readers do. */
  private dir(name: string, where: string): FsNode {
    const found = this.byPath.get(name);
    if (found) {
      if (!found.children)
        throw new EsgzError('BAD_FORMAT', `${where}: ${JSON.stringify(name)} is used as a directory but is not one`);
      return found;
    }
    const slash = name.lastIndexOf('/');
    const parent = this.dir(slash < 0 ? '' : name.slice(0, slash), where);
    const node = this.newDir(this.nextIno++);
    parent.children!.set(name.slice(slash + 1), node);
    this.byPath.set(name, node);
    return node;
  }

  private place(parentName: string, base: string, node: FsNode, where: string): void {
    const parent = this.dir(parentName, where);
    const path = parentName === '' ? base : `${parentName}/${base}`;
    const previous = parent.children!.get(base);
    // A later entry replaces an earlier one of the same name, as extracting the tar would.
    if (previous?.children && !node.children) this.forget(path);
    if (node.ino === 0) node.ino = this.nextIno++;
    parent.children!.set(base, node);
    this.byPath.set(path, node);
  }

  /**
   * Drops the path index entries of the directory at `path` and everything under it, walking that
   * subtree only (cost proportional to what is removed, so many whiteouts stay linear).
   */
  private forget(path: string): void {
    const stack: string[] = [path];
    for (let p = stack.pop(); p !== undefined; p = stack.pop()) {
      const node = this.byPath.get(p);
      this.byPath.delete(p);
      for (const name of node?.children?.keys() ?? []) stack.push(`${p}/${name}`);
    }
  }

  private countLinks(dir: FsNode): void {
    dir.nlink = 2;
    for (const child of dir.children!.values()) {
      if (child.children) {
        dir.nlink++;
        this.countLinks(child);
      } else {
        child.nlink++;
      }
    }
  }

  /** The node at a FUSE path ("/a/b") or undefined. */
  lookup(path: string): FsNode | undefined {
    return this.byPath.get(path.replace(/^\/+/, '').replace(/\/+$/, ''));
  }
}

export interface MountLayerOptions {
  /** TOC entries of the layer. */
  entries: readonly TOCEntry[];
  /** Serves regular file contents. Errors become EIO for the reader. */
  readRange: ReadRange;
  /** Names the layer in messages. */
  where?: string;
  /** Told about read failures (the reader only sees EIO). */
  onReadError?(path: string, err: unknown): void;
}

export interface MountedLayer {
  readonly mountpoint: string;
  readonly tree: LayerTree;
  unmount(): Promise<void>;
}

function toStat(node: FsNode): FuseStat {
  return {
    mode: node.mode,
    uid: node.uid,
    gid: node.gid,
    size: node.size,
    nlink: node.nlink,
    ino: node.ino,
    rdev: node.rdev,
    blksize: 4096,
    blocks: Math.ceil(node.size / 512),
    atime: fuseTimeMs(node.mtimeMs),
    mtime: fuseTimeMs(node.mtimeMs),
    ctime: fuseTimeMs(node.mtimeMs),
  };
}

/** Mounts the layer's TOC at `mountpoint` (created if missing). The FUSE server runs in this process. */
export async function mountLayer(mountpoint: string, options: MountLayerOptions): Promise<MountedLayer> {
  const where = options.where ?? mountpoint;
  if (!existsSync('/dev/fuse'))
    throw new EsgzError(
      'UNSUPPORTED',
      'cannot serve layers lazily: /dev/fuse does not exist (load the fuse module, or run the container with --device /dev/fuse)',
    );
  const tree = new LayerTree(options.entries, where);
  await mkdir(mountpoint, { recursive: true });
  shieldFuseThreadsFromSignals((message) => process.emitWarning(message));
  const fuse = createFuse(mountpoint, layerOperations(tree, options));
  answerSmallXattrBuffersWithERANGE(fuse, tree);
  await new Promise<void>((resolve, reject) => {
    fuse.mount((err) =>
      err
        ? reject(
            new EsgzError('RUNTIME', `cannot mount FUSE layer ${where} at ${mountpoint}: ${err.message}`, {
              cause: err,
            }),
          )
        : resolve(),
    );
  });
  return mountedLayer(fuse, mountpoint, tree);
}

/** The read-only filesystem operations over `tree`; file contents come from `options.readRange`. */
function layerOperations(tree: LayerTree, options: MountLayerOptions): import('fuse-native').FuseOps {
  // Every operation on a path starts the same way: no node, ENOENT.
  const withNode = <C extends (code: number) => void>(path: string, cb: C, then: (node: FsNode) => void): void => {
    const node = tree.lookup(path);
    if (!node) return cb(Fuse.ENOENT);
    then(node);
  };
  return {
    getattr(path, cb) {
      withNode(path, cb, (node) => cb(0, toStat(node)));
    },
    fgetattr(path, _fd, cb) {
      withNode(path, cb, (node) => cb(0, toStat(node)));
    },
    readdir(path, cb) {
      withNode(path, cb, (node) => {
        if (!node.children) return cb(Fuse.ENOTDIR);
        const names = [...node.children.keys()];
        cb(
          0,
          names,
          names.map((n) => toStat(node.children!.get(n)!)),
        );
      });
    },
    readlink(path, cb) {
      withNode(path, cb, (node) => (node.target === undefined ? cb(Fuse.EINVAL) : cb(0, node.target)));
    },
    open(path, flags, cb) {
      withNode(path, cb, () => ((flags & 3) !== 0 ? cb(Fuse.EROFS) : cb(0, 0)));
    },
    release(_path, _fd, cb) {
      cb(0);
    },
    read(path, _fd, buffer, length, position, cb) {
      withNode(path, cb, (node) => {
        if (!node.dataEntry) return cb(Fuse.EISDIR);
        if (position >= node.size || length === 0) return cb(0);
        const want = Math.min(length, node.size - position);
        options.readRange(node.dataName!, node.dataEntry, position, want).then(
          (data) => {
            const n = Math.min(data.length, want);
            data.copy(buffer, 0, 0, n);
            cb(n);
          },
          (err) => {
            options.onReadError?.(path, err);
            cb(Fuse.EIO);
          },
        );
      });
    },
    getxattr(path, name, _position, cb) {
      withNode(path, cb, (node) => cb(0, node.xattrs.get(name) ?? null));
    },
    listxattr(path, cb) {
      withNode(path, cb, (node) => cb(0, [...node.xattrs.keys()]));
    },
    statfs(_path, cb) {
      cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, namemax: 255 });
    },
  };
}

function createFuse(mountpoint: string, ops: import('fuse-native').FuseOps): Fuse {
  return new Fuse(mountpoint, ops, {
    // fuse-native only knows a fixed set of options; libfuse splits "-o" on commas, so extra ones
    // ride along after fsname: use_ino makes st_ino (and so hardlinks) visible, ro makes writes EROFS.
    fsname: 'esgz,ro,use_ino',
    subtype: 'esgz',
    allowOther: true,
    defaultPermissions: true,
    kernelCache: true,
    // The layer never changes while mounted: let the kernel keep names and attributes.
    entryTimeout: 3600,
    attrTimeout: 3600,
    // Reads are bounded by the chunk fetcher; this is only a last-resort guard against a stuck op.
    timeout: 300_000,
  });
}

/**
 * fuse-native hands getxattr a value buffer but not its size to `ops.getxattr`, then copies a
 * value that does not fit partially and reports its full length; answer ERANGE instead, as the
 * xattr API requires (a size query, length 0, still gets the length).
 */
function answerSmallXattrBuffersWithERANGE(fuse: Fuse, tree: LayerTree): void {
  const internals = fuse as unknown as {
    _op_getxattr(
      signal: (code: number, buf: ArrayBuffer) => void,
      path: string,
      name: string,
      valueBuf: Buffer,
      position: number,
    ): void;
  };
  const originalGetxattr = internals._op_getxattr.bind(fuse);
  internals._op_getxattr = (signal, path, name, valueBuf, position) => {
    const value = tree.lookup(path)?.xattrs.get(name);
    if (value && valueBuf.length !== 0 && value.length > valueBuf.length)
      return signal(-34 /* ERANGE */, valueBuf.buffer as ArrayBuffer);
    return originalGetxattr(signal, path, name, valueBuf, position);
  };
}

/** The handle of a mounted layer: unmount detaches lazily when a process still holds the mount busy. */
function mountedLayer(fuse: Fuse, mountpoint: string, tree: LayerTree): MountedLayer {
  let mounted = true;
  return {
    mountpoint,
    tree,
    async unmount() {
      if (!mounted) return;
      mounted = false;
      await new Promise<void>((resolve) => {
        fuse.unmount((err) => {
          if (!err) return resolve();
          // Busy (a process still has it open): detach lazily so nothing stays behind.
          void execa('fusermount', ['-uz', mountpoint], { reject: false })
            .then(() => execa('umount', ['-l', mountpoint], { reject: false }))
            .then(() => resolve());
        });
      });
    },
  };
}

export async function forceUnmount(mountpoint: string): Promise<void> {
  const r = await execa('fusermount', ['-uz', mountpoint], { reject: false });
  if (r.exitCode !== 0) await execa('umount', ['-l', mountpoint], { reject: false });
}
