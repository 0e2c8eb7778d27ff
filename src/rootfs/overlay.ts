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
  const { workDir, layers } = options;
  const requested = options.mode ?? 'auto';
  let mode: 'overlay' | 'merged' = requested === 'merged' ? 'merged' : 'overlay';
  if (mode === 'overlay') {
    const problem = await overlayProblem();
    if (problem) {
      if (requested === 'overlay') throw new EsgzError('UNSUPPORTED', `cannot use overlayfs: ${problem}`);
      options.onWarning?.(`overlayfs is not usable (${problem}); merging the layers into one directory instead`);
      mode = 'merged';
    }
  }
  await mkdir(workDir, { recursive: true });
  // Mount points, innermost last: the overlay sits on top of the tmpfs holding its upper dir.
  const mounted: string[] = [];
  let released = false;
  const unmountOnly = async () => {
    while (mounted.length > 0) {
      await unmount(mounted[mounted.length - 1]!);
      mounted.pop();
    }
  };
  const release = async () => {
    if (released) return;
    await unmountOnly();
    await rm(workDir, { recursive: true, force: true });
    released = true;
  };

  try {
    const provenance = new LayerProvenance();
    const stats: UnpackStats[] = [];
    // Each layer's path events are kept and replayed in layer order afterwards, so layers that
    // live in their own directories can unpack concurrently.
    type PathEvent = [op: 'add', path: string, kind: string, size: number] | [op: 'whiteout' | 'opaque', path: string];
    const events: PathEvent[][] = layers.map(() => []);
    const unpackAbort = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, unpackAbort.signal]) : unpackAbort.signal;
    const unpackInto = async (index: number, dir: string, whiteouts: 'overlay' | 'merge') => {
      const layer = layers[index]!;
      const layerName = layer.name ?? `layer ${index}`;
      const stream = await layer.open();
      const own = events[index]!;
      stats[index] = await unpackLayer(stream, dir, {
        whiteouts,
        layerName,
        signal,
        onAdd: (path, kind, size) => own.push(['add', path, kind, size]),
        onWhiteout: (path) => own.push(['whiteout', path]),
        onOpaque: (path) => own.push(['opaque', path]),
        onWarning: options.onWarning,
      });
    };
    const replayProvenance = () => {
      events.forEach((list, index) => {
        for (const e of list) {
          if (e[0] === 'add') provenance.add(e[1], index, e[2], e[3]);
          else if (e[0] === 'whiteout') provenance.whiteout(e[1], index);
          else provenance.opaque(e[1], index);
        }
        list.length = 0;
      });
    };

    if (mode === 'merged') {
      const rootfs = join(workDir, 'rootfs');
      for (let i = 0; i < layers.length; i++) await unpackInto(i, rootfs, 'merge');
      if (layers.length === 0) await mkdir(rootfs, { recursive: true });
      replayProvenance();
      return { rootfs, mode, provenance, stats, release, unmountOnly };
    }

    const lowerDirs = layers.map((_, i) => join(workDir, 'l', String(i)));
    // Two at a time: one layer's download and decompression overlaps another's disk writes.
    let next = 0;
    const worker = async () => {
      while (next < layers.length) {
        const i = next++;
        await unpackInto(i, lowerDirs[i]!, 'overlay');
      }
    };
    // The first failure stops the other worker, and both settle before anything is cleaned up.
    let firstError: { error: unknown } | undefined;
    await Promise.allSettled(
      Array.from({ length: Math.min(UNPACK_CONCURRENCY, layers.length) }, () =>
        worker().catch((error: unknown) => {
          firstError ??= { error };
          next = layers.length;
          unpackAbort.abort();
        }),
      ),
    );
    if (firstError) throw firstError.error;
    replayProvenance();
    if (lowerDirs.length === 0) {
      const empty = join(workDir, 'l', 'empty');
      await mkdir(empty, { recursive: true });
      lowerDirs.push(empty);
    }
    // overlayfs needs its upper and work dirs on one filesystem: both go on the bounded tmpfs.
    const scratch = join(workDir, 't');
    const rootfs = join(workDir, 'm');
    await Promise.all([scratch, rootfs].map((d) => mkdir(d, { recursive: true })));
    await mountScratchTmpfs(scratch, options.upperSizeBytes ?? DEFAULT_UPPER_SIZE_BYTES);
    mounted.push(scratch);
    const upper = join(scratch, 'u');
    const work = join(scratch, 'w');
    await Promise.all([upper, work].map((d) => mkdir(d)));
    await mountOverlay(lowerDirs, upper, work, rootfs, workDir);
    mounted.push(rootfs);
    return { rootfs, mode, provenance, stats, release, unmountOnly };
  } catch (err) {
    await release().catch(() => undefined);
    throw err;
  }
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
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new EsgzError('BAD_FLAG', `the writable layer size must be a positive byte count (got ${sizeBytes})`);
  const data = `size=${sizeBytes},mode=0700,nodev,nosuid`;
  const result = await execa('mount', ['-t', 'tmpfs', '-o', data, 'esgz-upper', target], { reject: false, stdin: 'ignore' });
  if (result.exitCode !== 0) {
    throw new EsgzError('RUNTIME', `cannot mount a tmpfs at ${target}: ${String(result.stderr).trim() || `mount exited ${result.exitCode}`}`);
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
export async function mountOverlay(lowerDirs: string[], upper: string, work: string, target: string, base = dirname(upper)): Promise<void> {
  const name = (dir: string) => (relative(base, dir).startsWith('..') ? dir : relative(base, dir));
  for (const dir of [...lowerDirs, upper, work].map(name)) {
    // overlayfs splits its options on "," and lowerdir on ":"; such paths cannot be expressed.
    if (/[,:]/.test(dir)) throw new EsgzError('UNSUPPORTED', `cannot use "${dir}" in an overlay mount (it contains "," or ":")`);
  }
  // overlayfs lists the topmost lower first.
  const lower = [...lowerDirs].reverse().map(name).join(':');
  const data = `nodev,nosuid,lowerdir=${lower},upperdir=${name(upper)},workdir=${name(work)}`;
  if (data.length >= 4000) throw new EsgzError('UNSUPPORTED', `too many layers for one overlay mount (${lowerDirs.length})`);
  const result = await execa('mount', ['-t', 'overlay', 'overlay', '-o', data, target], { reject: false, stdin: 'ignore', cwd: base });
  if (result.exitCode !== 0) {
    throw new EsgzError('RUNTIME', `cannot mount overlayfs at ${target}: ${String(result.stderr).trim() || `mount exited ${result.exitCode}`}`);
  }
}
