/**
 * `esgz run`: mount each layer of a lazily pulled image through FUSE (served by this process),
 * stack them under a fresh overlayfs upper dir, and run the command with runc using the same spec
 * builder as optimize. Everything is unmounted when the container exits, fails, or on Ctrl-C.
 *
 * Lifecycle on the state root: under the root's lock, a run sweeps what killed runs left, claims
 * `containers/<id>` (mkdir, so two runs cannot share an ID), marks it with its pid and start time
 * and pins the image's layers (so `image rm` + `prune` cannot delete a lower dir it mounts). Any
 * failure removes the directory again; a finished run without --rm keeps only the upper dir.
 */
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { EsgzError } from '../errors.js';
import { sourceBlobReader } from '../convert/source-reader.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import { openRegistrySource, registryOptionsOf, type RegistryOptions } from '../image/transports/registry.js';
import type { ImageConfig } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';
import { unmount } from '../host/mounts.js';
import { mountOverlay, overlayProblem } from '../rootfs/overlay.js';
import { findRunc, newContainerId, runBundle } from '../runtime/runc.js';
import { buildRuntimeSpec, checkExecutable, writeBundleConfig, type RunOptions } from '../runtime/spec.js';
import { ChunkCache, LazyLayer, RequestLimiter, type FetchPolicy, type FetchStats } from './cache.js';
import { mountLayer, type MountedLayer } from './fusefs.js';
import { normalizeReference, openStoredLayer } from './rpull.js';
import { cleanStaleContainers, claimContainer, markKept } from './manage.js';
import { mkdirPrivate, PRIVATE_FILE_MODE, removeUnlessMounted, StateRoot, type ImageRecord } from './state.js';

/** The upper dir's mode is the container's "/" mode: world-searchable as in every image, whatever the umask. */
const UPPER_DIR_MODE = 0o755;

export interface MountedImage {
  record: ImageRecord;
  config: ImageConfig;
  /** The merged root filesystem (overlayfs over the FUSE / unpacked layers). */
  rootfs: string;
  /** Lazy layers by index (undefined for unpacked ones), for fetch statistics. */
  lazies: Array<LazyLayer | undefined>;
  /** The chunk cache the lazy layers write behind to (release waits for its writes). */
  cache: ChunkCache;
  /** Unmounts the overlay and every FUSE layer; removes the work dir unless `keep`. Safe to call twice. */
  release(options?: { keepUpper?: boolean }): Promise<void>;
}

export interface MountImageOptions extends RegistryOptions {
  reference: string;
  stateRoot?: string;
  /** Directory for this container's mounts and upper dir (created; removed by release). */
  workDir: string;
  /** The image record, when the caller already read it (under the state root's lock). */
  record?: ImageRecord;
  plainHttp?: boolean;
  insecure?: boolean;
  fetchPolicy?: FetchPolicy;
  /** For tests: read blobs from this source instead of the registry. */
  source?: ImageSource;
  onReadError?(message: string): void;
}

/** Mounts a pulled image's layers (FUSE for lazy ones) and the overlay on top. */
export async function mountImage(options: MountImageOptions): Promise<MountedImage> {
  const { reference } = normalizeReference(options.reference);
  const state = new StateRoot(options.stateRoot);
  const record = options.record ?? (await getPulledImage(state, reference));
  const config = JSON.parse((await state.getBlob(record.configDigest)).toString('utf8')) as ImageConfig;

  const problem = await overlayProblem();
  if (problem) throw new EsgzError('UNSUPPORTED', `esgz run needs overlayfs: ${problem}`);

  const ownSource = !options.source;
  const source =
    options.source ??
    (await openRegistrySource(record.repository + `@${record.manifestDigest}`, {
      ...registryOptionsOf(options),
      plainHttp: options.plainHttp || record.plainHttp,
      insecure: options.insecure || record.insecure,
    }));
  const fuseMounts: MountedLayer[] = [];
  const lazies: Array<LazyLayer | undefined> = [];
  let overlayTarget: string | undefined;
  let released = false;
  const cache = new ChunkCache(state.chunksRoot);
  const release = async (opts: { keepUpper?: boolean } = {}) => {
    if (released) return;
    released = true;
    const errors: unknown[] = [];
    // Chunks fetched for this run reach the disk before it ends (a failed write is only a later fetch).
    await cache.drain();
    if (overlayTarget) await unmount(overlayTarget).catch((e: unknown) => errors.push(e));
    for (const m of fuseMounts.reverse()) await m.unmount().catch((e: unknown) => errors.push(e));
    if (ownSource) await source.close().catch(() => undefined);
    // Never through a mount that would not go: that would delete the layers (or host files) it shows.
    const target = opts.keepUpper ? join(options.workDir, 'l') : options.workDir;
    await removeUnlessMounted(target, (m) => errors.push(new EsgzError('RUNTIME', m))).catch((e: unknown) =>
      errors.push(e),
    );
    if (errors.length) throw errors[0];
  };

  try {
    await mkdirPrivate(join(options.workDir, 'l'));
    // One bound on the requests in flight to the registry, shared by every layer.
    const limiter = new RequestLimiter();
    const lowerDirs: string[] = [];
    for (const [i, layer] of record.layers.entries()) {
      const where = `layer ${i} (${layer.digest})`;
      if (layer.kind === 'unpacked') {
        if (!(await state.hasUnpacked(layer.digest)))
          throw new EsgzError('NOT_FOUND', `${where} is not unpacked in ${state.root} (pull the image again)`);
        lowerDirs.push(state.unpackedDir(layer.digest));
        lazies.push(undefined);
        continue;
      }
      const desc = { mediaType: layer.mediaType, digest: layer.digest, size: layer.size };
      const blob = sourceBlobReader(source, desc);
      const reader = await openStoredLayer(state, layer, blob, where);
      const lazy = new LazyLayer(reader, blob, cache, options.fetchPolicy, limiter);
      const mnt = join(options.workDir, 'l', String(i));
      const mounted = await mountLayer(mnt, {
        entries: reader.toc.entries,
        readRange: (name, entry, offset, length) => lazy.readRange(name, entry, offset, length),
        where,
        onReadError: (path, err) =>
          options.onReadError?.(
            `${where}: read of ${path} failed: ${err instanceof Error ? err.message : String(err)}`,
          ),
      });
      fuseMounts.push(mounted);
      lowerDirs.push(mnt);
      lazies.push(lazy);
    }
    const upper = join(options.workDir, 'u');
    const work = join(options.workDir, 'w');
    const rootfs = join(options.workDir, 'm');
    await Promise.all([work, rootfs].map((d) => mkdirPrivate(d)));
    await mkdir(upper, { recursive: true, mode: UPPER_DIR_MODE });
    await chmod(upper, UPPER_DIR_MODE);
    await mountOverlay(lowerDirs, upper, work, rootfs);
    overlayTarget = rootfs;
    return { record, config, rootfs, lazies, cache, release };
  } catch (err) {
    await release().catch(() => undefined);
    throw err;
  }
}

export interface RunContainerOptions extends RegistryOptions {
  reference: string;
  /** Container id (default: esgz-<random>). */
  id?: string;
  stateRoot?: string;
  /** Remove the container's writable layer when it exits (default: keep it under <root>/containers/<id>). */
  rm?: boolean;
  run: RunOptions;
  /** Replaces the image's Entrypoint and Cmd, as `ctr run IMAGE ID CMD...` does. */
  command?: string[];
  plainHttp?: boolean;
  insecure?: boolean;
  stdin?: boolean;
  stdout?: Writable;
  stderr?: Writable;
  signal?: AbortSignal;
  fetchPolicy?: FetchPolicy;
  /** Fetch every remaining chunk while the container runs. */
  backgroundFetch?: boolean;
  source?: ImageSource;
  /** The runc binary (default: runc on PATH). */
  runc?: string;
  onWarning?(message: string): void;
}

export interface RunContainerResult {
  id: string;
  exitCode: number | undefined;
  durationMs: number;
  /** Fetch statistics per layer (undefined for unpacked layers). */
  fetches: Array<FetchStats | undefined>;
  /** The same, summed over the layers, with the time to the workload's first output. */
  stats: RunStats;
}

/** What `esgz run --stats` prints: what the run fetched and how soon the workload answered. */
export interface RunStats {
  /** Compressed bytes received from the registry by this run (on demand and background). */
  bytesFetched: number;
  /** Range requests made. */
  requests: number;
  /** Chunk reads served from what was cached before this run (the prefetch, earlier runs). */
  prefetchHits: number;
  /** Chunk reads that had to wait for a fetch. */
  onDemandMisses: number;
  /** Of `bytesFetched`, what the background fetch received. */
  backgroundBytes: number;
  /** From the start of the run to the workload's first byte on stdout or stderr (none with -t, or no output). */
  firstOutputMs?: number;
  /** With --background-fetch: whether every layer is now wholly in the cache. */
  backgroundComplete?: boolean;
}

export async function runContainer(options: RunContainerOptions): Promise<RunContainerResult> {
  const startedAt = performance.now();
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new EsgzError('RUNTIME', 'esgz run needs root (FUSE mounts, overlayfs and runc)');
  }
  await findRunc(options.runc);
  const state = new StateRoot(options.stateRoot);
  await state.init();
  const id = options.id ?? newContainerId();
  if (!/^[\w][\w.-]{0,63}$/.test(id))
    throw new EsgzError('BAD_FLAG', `container id "${id}" must be letters, digits, '_', '.', '-' (at most 64)`);
  const { containerDir, record, unpin } = await claim(state, id, options);
  let keep = false;
  try {
    const image = await mountImage({
      reference: options.reference,
      stateRoot: options.stateRoot,
      workDir: containerDir,
      record,
      ...registryOptionsOf(options),
      fetchPolicy: options.fetchPolicy,
      source: options.source,
      onReadError: options.onWarning,
    });
    try {
      const result = await runMounted(image, id, containerDir, options, startedAt);
      keep = !options.rm;
      return result;
    } catch (err) {
      // An interrupted container ran: without --rm its upper dir stays, as after a normal exit.
      keep = !options.rm && err instanceof EsgzError && err.code === 'INTERRUPTED';
      throw err;
    } finally {
      await image.release({ keepUpper: keep });
      if (keep) await markKept(containerDir);
    }
  } finally {
    await unpin();
    if (!keep) await removeUnlessMounted(containerDir, options.onWarning);
  }
}

/** The record of a pulled image, or the error that says to pull it. */
async function getPulledImage(state: StateRoot, reference: string): Promise<ImageRecord> {
  const record = await state.getImage(reference);
  if (!record)
    throw new EsgzError(
      'NOT_FOUND',
      `image ${reference} is not pulled into ${state.root}: run "esgz image rpull ${reference}" first`,
    );
  return record;
}

/**
 * Under the state root's lock: cleans up after killed runs, reads the image record, claims the
 * container directory and pins the image's layers and blobs for as long as this run lives.
 */
async function claim(
  state: StateRoot,
  id: string,
  options: RunContainerOptions,
): Promise<{ containerDir: string; record: ImageRecord; unpin(): Promise<void> }> {
  const unlock = await state.lock(`run ${id}`);
  try {
    await cleanStaleContainers(state, options.onWarning, options.runc);
    const record = await getPulledImage(state, normalizeReference(options.reference).reference);
    const containerDir = await claimContainer(state, id);
    try {
      const unpin = await state.pin({
        layers: record.layers.map((l) => ({
          digest: l.digest,
          size: l.size,
          ...(l.tocDigest ? { tocDigest: l.tocDigest } : {}),
        })),
        blobs: [record.manifestDigest, record.configDigest],
      });
      return { containerDir, record, unpin };
    } catch (err) {
      await removeUnlessMounted(containerDir, options.onWarning);
      throw err;
    }
  } finally {
    await unlock();
  }
}

/** Builds the bundle over the mounted image and runs it with runc. */
async function runMounted(
  image: MountedImage,
  id: string,
  containerDir: string,
  options: RunContainerOptions,
  startedAt: number,
): Promise<RunContainerResult> {
  const background = new AbortController();
  const stopBackground = () => background.abort();
  options.signal?.addEventListener('abort', stopBackground, { once: true });
  let backgroundDone: Promise<boolean> | undefined;
  try {
    const host = hostPlatform();
    const wanted = {
      os: image.config.os ?? host.os,
      architecture: image.config.architecture ?? host.architecture,
      ...(image.config.variant ? { variant: image.config.variant } : {}),
    };
    if (!platformMatches(host, wanted)) {
      throw new EsgzError(
        'UNSUPPORTED',
        `${image.record.reference} is for ${formatPlatform(wanted)} but this machine is ${formatPlatform(host)}: it cannot run here`,
      );
    }
    const bundle = join(containerDir, 'b');
    const config: ImageConfig = options.command?.length
      ? { ...image.config, config: { ...image.config.config, Entrypoint: null, Cmd: options.command } }
      : image.config;
    await mkdirPrivate(bundle);
    const spec = await buildRuntimeSpec({ rootfs: image.rootfs, config, options: options.run, bundleDir: bundle });
    await checkExecutable(image.rootfs, spec);
    // config.json holds the --env values (secrets): 0600, inside directories only root can enter.
    await chmod(await writeBundleConfig(bundle, spec), PRIVATE_FILE_MODE);
    if (options.backgroundFetch) backgroundDone = fetchInBackground(image, background.signal, options.onWarning);
    let firstOutputMs: number | undefined;
    const noteOutput = () => (firstOutputMs ??= performance.now() - startedAt);
    const result = await runBundle({
      bundle,
      id,
      stateRoot: join(containerDir, 's'),
      runc: options.runc,
      signal: options.signal,
      stdout: timedOutput(options.stdout ?? process.stdout, noteOutput),
      stderr: timedOutput(options.stderr ?? process.stderr, noteOutput),
      stdin: options.stdin,
      terminal: options.run.terminal,
    });
    // The layers complete after a short workload, as the snapshotter's background fetch would (Ctrl-C stops it).
    const backgroundComplete = await backgroundDone;
    const fetches = image.lazies.map((l) => (l ? { ...l.stats } : undefined));
    return {
      id,
      exitCode: result.exitCode,
      durationMs: result.durationMs,
      fetches,
      stats: {
        ...sumStats(fetches),
        ...(firstOutputMs !== undefined ? { firstOutputMs: Math.round(firstOutputMs) } : {}),
        ...(backgroundComplete !== undefined ? { backgroundComplete } : {}),
      },
    };
  } finally {
    options.signal?.removeEventListener('abort', stopBackground);
    background.abort();
    await backgroundDone;
  }
}

/** Fetches every layer's remaining chunks until done or `signal`; resolves whether all got done. */
async function fetchInBackground(
  image: MountedImage,
  signal: AbortSignal,
  onWarning?: (message: string) => void,
): Promise<boolean> {
  try {
    for (const lazy of image.lazies) if (!signal.aborted) await lazy?.fetchAll({ signal });
    return !signal.aborted;
  } catch (err) {
    onWarning?.(`background fetch stopped: ${err instanceof Error ? err.message : String(err)}`);
    return false;
  }
}

function sumStats(fetches: Array<FetchStats | undefined>): RunStats {
  const total: RunStats = { bytesFetched: 0, requests: 0, prefetchHits: 0, onDemandMisses: 0, backgroundBytes: 0 };
  for (const f of fetches) {
    if (!f) continue;
    total.bytesFetched += f.bytes;
    total.requests += f.requests;
    total.prefetchHits += f.prefetchHits;
    total.onDemandMisses += f.onDemandMisses;
    total.backgroundBytes += f.backgroundBytes;
  }
  return total;
}

/** Passes everything to `target`, calling `onFirstByte` when the first bytes go through. */
function timedOutput(target: Writable, onFirstByte: () => void): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      onFirstByte();
      target.write(chunk, callback);
    },
  });
}
