import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import { EsgzError } from '../errors.js';
import { unmount } from '../host/mounts.js';
import { canSetXattr } from './fsops.js';
import { isRoot } from '../host/native.js';
import { LayerProvenance } from './provenance.js';
import { unpackLayer, type UnpackStats } from './unpack.js';

const UNPACK_CONCURRENCY = 2;

/**
 * Default size of the tmpfs holding the profiled workload's writable layer: a profile run writes
 * logs, pid files and caches, not gigabytes, and without a bound a hostile workload could fill
 * the host's /dev/shm or temp disk. `upperSizeBytes` (image optimize --upper-size) changes it.
 */
export const DEFAULT_UPPER_SIZE_BYTES = 1024 ** 3;

export interface LayerTar {
  /** A fresh stream of the layer's uncompressed tar. */
  open(): Promise<Readable>;
  /** For messages, e.g. `layer 1 (sha256:ab12…)`. */
  name?: string;
}

export interface PreparedRootfs {
  /** The root filesystem the container sees. */
  rootfs: string;
  /** 'overlay' when the layers are stacked by overlayfs, 'merged' when copied into one directory. */
  mode: 'overlay' | 'merged';
  /** Which layer provides each path of `rootfs`. */
  provenance: LayerProvenance;
  stats: UnpackStats[];
  /** Unmounts and removes everything prepareRootfs created. Safe to call twice. */
  release(): Promise<void>;
  /** Unmounts only (the files stay until release): lets a caller delete them in the background. */
  unmountOnly(): Promise<void>;
}

export interface PrepareRootfsOptions {
  /** An empty directory prepareRootfs may fill; it is removed by release(). Short paths keep the mount options small. */
  workDir: string;
  /** Base layer first. */
  layers: LayerTar[];
  /** 'auto' (default): overlayfs when it mounts here, else merged. */
  mode?: 'auto' | 'overlay' | 'merged';
  signal?: AbortSignal;
  onWarning?(message: string): void;
  /** Overlay mode: size of the private tmpfs for the writable layer (default DEFAULT_UPPER_SIZE_BYTES). */
  upperSizeBytes?: number;
}

/**
 * Unpacks the layers and presents them as one root filesystem: each layer in its own read-only
 * lower directory under an overlayfs mount with a throwaway upper directory on a size-bounded
 * tmpfs, or, when overlayfs is not available (not root, nested overlay, no kernel support), all
 * layers merged into one copy.
 */
export async function prepareRootfs(options: PrepareRootfsOptions): Promise<PreparedRootfs> {
  const mode = await chooseMode(options);
  await mkdir(options.workDir, { recursive: true });
  const mounts = new MountStack(options.workDir);
  try {
    const unpacker = new LayerUnpacker(options);
    const rootfs =
      mode === 'merged' ? await mergeLayers(options, unpacker) : await stackLayers(options, unpacker, mounts);
    const { release, unmountOnly } = mounts;
    return { rootfs, mode, provenance: unpacker.provenance, stats: unpacker.stats, release, unmountOnly };
  } catch (err) {
    await mounts.release().catch(() => undefined);
    throw err;
  }
}

/** overlayfs unless merged is asked for or overlayfs is not usable here (an error when it was asked for). */
async function chooseMode(options: PrepareRootfsOptions): Promise<'overlay' | 'merged'> {
  const requested = options.mode ?? 'auto';
  if (requested === 'merged') return 'merged';
  const problem = await overlayProblem();
  if (!problem) return 'overlay';
  if (requested === 'overlay') throw new EsgzError('UNSUPPORTED', `cannot use overlayfs: ${problem}`);
  options.onWarning?.(`overlayfs is not usable (${problem}); merging the layers into one directory instead`);
  return 'merged';
}

/** The mounts prepareRootfs made, innermost last (the overlay sits on the tmpfs holding its upper dir). */
class MountStack {
  private readonly mounted: string[] = [];
  private released = false;

  constructor(private readonly workDir: string) {}

  push(target: string): void {
    this.mounted.push(target);
  }

  readonly unmountOnly = async (): Promise<void> => {
    while (this.mounted.length > 0) {
      await unmount(this.mounted[this.mounted.length - 1]!);
      this.mounted.pop();
    }
  };

  readonly release = async (): Promise<void> => {
    if (this.released) return;
    await this.unmountOnly();
    await rm(this.workDir, { recursive: true, force: true });
    this.released = true;
  };
}

type PathEvent = [op: 'add', path: string, kind: string, size: number] | [op: 'whiteout' | 'opaque', path: string];

/**
 * Unpacks layers into directories, keeping each layer's path events to replay in layer order
 * afterwards (replayProvenance), so layers that live in their own directories can unpack
 * concurrently. abort() stops every unpack still running.
 */
class LayerUnpacker {
  readonly provenance = new LayerProvenance();
  readonly stats: UnpackStats[] = [];
  private readonly events: PathEvent[][];
  private readonly aborter = new AbortController();
  private readonly signal: AbortSignal;

  constructor(private readonly options: PrepareRootfsOptions) {
    this.events = options.layers.map(() => []);
    this.signal = options.signal ? AbortSignal.any([options.signal, this.aborter.signal]) : this.aborter.signal;
  }

  abort(): void {
    this.aborter.abort();
  }

  async unpackInto(index: number, dir: string, whiteouts: 'overlay' | 'merge'): Promise<void> {
    const layer = this.options.layers[index]!;
    const own = this.events[index]!;
    this.stats[index] = await unpackLayer(await layer.open(), dir, {
      whiteouts,
      layerName: layer.name ?? `layer ${index}`,
      signal: this.signal,
      onAdd: (path, kind, size) => own.push(['add', path, kind, size]),
      onWhiteout: (path) => own.push(['whiteout', path]),
      onOpaque: (path) => own.push(['opaque', path]),
      onWarning: this.options.onWarning,
    });
  }

  replayProvenance(): void {
    this.events.forEach((list, index) => {
      for (const e of list) {
        if (e[0] === 'add') this.provenance.add(e[1], index, e[2], e[3]);
        else if (e[0] === 'whiteout') this.provenance.whiteout(e[1], index);
        else this.provenance.opaque(e[1], index);
      }
      list.length = 0;
    });
  }
}

/** Merged mode: every layer applied in order onto one directory; returns it. */
async function mergeLayers(options: PrepareRootfsOptions, unpacker: LayerUnpacker): Promise<string> {
  const rootfs = join(options.workDir, 'rootfs');
  for (let i = 0; i < options.layers.length; i++) await unpacker.unpackInto(i, rootfs, 'merge');
  if (options.layers.length === 0) await mkdir(rootfs, { recursive: true });
  unpacker.replayProvenance();
  return rootfs;
}

/** Overlay mode: each layer unpacked into its own lower directory, then mounted as one; returns the mount point. */
async function stackLayers(
  options: PrepareRootfsOptions,
  unpacker: LayerUnpacker,
  mounts: MountStack,
): Promise<string> {
  const lowerDirs = await unpackLowerDirs(options, unpacker);
  unpacker.replayProvenance();
  if (lowerDirs.length === 0) {
    const empty = join(options.workDir, 'l', 'empty');
    await mkdir(empty, { recursive: true });
    lowerDirs.push(empty);
  }
  return mountOverlayRootfs(options, lowerDirs, mounts);
}

/** Unpacks the layers into workDir/l/<index>, UNPACK_CONCURRENCY at a time; returns the directories, base first. */
async function unpackLowerDirs(options: PrepareRootfsOptions, unpacker: LayerUnpacker): Promise<string[]> {
  const { layers, workDir } = options;
  const lowerDirs = layers.map((_, i) => join(workDir, 'l', String(i)));
  // Two at a time: one layer's download and decompression overlaps another's disk writes.
  let next = 0;
  const worker = async () => {
    while (next < layers.length) {
      const i = next++;
      await unpacker.unpackInto(i, lowerDirs[i]!, 'overlay');
    }
  };
  // The first failure stops the other worker, and both settle before anything is cleaned up.
  let firstError: { error: unknown } | undefined;
  await Promise.allSettled(
    Array.from({ length: Math.min(UNPACK_CONCURRENCY, layers.length) }, () =>
      worker().catch((error: unknown) => {
        firstError ??= { error };
        next = layers.length;
        unpacker.abort();
      }),
    ),
  );
  if (firstError) throw firstError.error;
  return lowerDirs;
}

/** The bounded tmpfs for the writable layer, then the overlay of `lowerDirs` over it at workDir/m. */
async function mountOverlayRootfs(
  options: PrepareRootfsOptions,
  lowerDirs: string[],
  mounts: MountStack,
): Promise<string> {
  const { workDir } = options;
  // overlayfs needs its upper and work dirs on one filesystem: both go on the bounded tmpfs.
  const scratch = join(workDir, 't');
  const rootfs = join(workDir, 'm');
  await Promise.all([scratch, rootfs].map((d) => mkdir(d, { recursive: true })));
  await mountScratchTmpfs(scratch, options.upperSizeBytes ?? DEFAULT_UPPER_SIZE_BYTES);
  mounts.push(scratch);
  const upper = join(scratch, 'u');
  const work = join(scratch, 'w');
  await Promise.all([upper, work].map((d) => mkdir(d)));
  await mountOverlay(lowerDirs, upper, work, rootfs, workDir);
  mounts.push(rootfs);
  return rootfs;
}

/** Why overlayfs cannot be used here, or undefined when it can. */
export async function overlayProblem(): Promise<string | undefined> {
  if (!isRoot()) return 'mounting needs root';
  if (!canSetXattr()) return 'native/fanotify/esgz-fsops is not built, so opaque directories cannot be marked';
  const filesystems = await readFile('/proc/filesystems', 'utf8').catch(() => '');
  if (!/\boverlay\b/.test(filesystems)) {
    // The module may load on first mount; let the mount attempt decide.
    await execa('modprobe', ['overlay'], { reject: false });
    const again = await readFile('/proc/filesystems', 'utf8').catch(() => '');
    if (!/\boverlay\b/.test(again)) return 'the kernel has no overlay filesystem';
  }
  return undefined;
}

/**
 * A private tmpfs of at most `sizeBytes` at `target`: writes beyond it fail with ENOSPC in the
 * container. Its pages are charged to the memory cgroup of the process that writes them, so the
 * container's memory limit bounds it too.
 */
async function mountScratchTmpfs(target: string, sizeBytes: number): Promise<void> {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0)
    throw new EsgzError('BAD_FLAG', `the writable layer size must be a positive byte count (got ${sizeBytes})`);
  const data = `size=${sizeBytes},mode=0700,nodev,nosuid`;
  const result = await execa('mount', ['-t', 'tmpfs', '-o', data, 'esgz-upper', target], {
    reject: false,
    stdin: 'ignore',
  });
  if (result.exitCode !== 0) {
    throw new EsgzError(
      'RUNTIME',
      `cannot mount a tmpfs at ${target}: ${String(result.stderr).trim() || `mount exited ${result.exitCode}`}`,
    );
  }
}

/**
 * Mounts `lowerDirs` (base first) under a writable `upper` at `target`, `nodev` (device nodes
 * reach a container only through its spec's /dev) and `nosuid`: runc starts every workload with
 * no_new_privileges, which makes setuid bits and file capabilities inert inside the container
 * anyway, so nosuid takes nothing from it, and a host user who reaches the mount cannot use a
 * setuid-root file from a layer either. The directories are named relative to `base` (default:
 * the parent of `upper`), where mount runs: the kernel reads the option string from one page,
 * so many layers under a long temp path would not fit otherwise.
 */
export async function mountOverlay(
  lowerDirs: string[],
  upper: string,
  work: string,
  target: string,
  base = dirname(upper),
): Promise<void> {
  const name = (dir: string) => (relative(base, dir).startsWith('..') ? dir : relative(base, dir));
  for (const dir of [...lowerDirs, upper, work].map(name)) {
    // overlayfs splits its options on "," and lowerdir on ":"; such paths cannot be expressed.
    if (/[,:]/.test(dir))
      throw new EsgzError('UNSUPPORTED', `cannot use "${dir}" in an overlay mount (it contains "," or ":")`);
  }
  // overlayfs lists the topmost lower first.
  const lower = [...lowerDirs].reverse().map(name).join(':');
  const data = `nodev,nosuid,lowerdir=${lower},upperdir=${name(upper)},workdir=${name(work)}`;
  if (data.length >= 4000)
    throw new EsgzError('UNSUPPORTED', `too many layers for one overlay mount (${lowerDirs.length})`);
  const result = await execa('mount', ['-t', 'overlay', 'overlay', '-o', data, target], {
    reject: false,
    stdin: 'ignore',
    cwd: base,
  });
  if (result.exitCode !== 0) {
    throw new EsgzError(
      'RUNTIME',
      `cannot mount overlayfs at ${target}: ${String(result.stderr).trim() || `mount exited ${result.exitCode}`}`,
    );
  }
}
