/**
 * `esgz run`: mount each layer of a lazily pulled image through FUSE (served by this process),
 * stack them under a fresh overlayfs upper dir, and run the command with runc using the same spec
 * builder as optimize. Everything is unmounted when the container exits, fails, or on Ctrl-C.
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { EsgzError } from '../errors.js';
import { sourceBlobReader } from '../estargz/reader.js';
import { formatPlatform, hostPlatform, platformMatches } from '../image/platform.js';
import { openRegistrySource } from '../image/transports/registry.js';
import type { ImageConfig, ImageSource } from '../image/types.js';
import { mountOverlay, overlayProblem, unmount } from '../optimizer/overlay.js';
import { findRunc, newContainerId, runBundle } from '../runtime/runc.js';
import { buildRuntimeSpec, checkExecutable, writeBundleConfig, type RunOptions } from '../runtime/spec.js';
import { ChunkCache, LazyLayer, type FetchPolicy, type FetchStats } from './cache.js';
import { mountLayer, type MountedLayer } from './fusefs.js';
import { normalizeReference, openStoredLayer } from './rpull.js';
import { processIdentity } from './manage.js';
import { StateRoot, writeFileAtomic, type ImageRecord } from './state.js';

export interface MountedImage {
  record: ImageRecord;
  config: ImageConfig;
  /** The merged root filesystem (overlayfs over the FUSE / unpacked layers). */
  rootfs: string;
  /** Lazy layers by index (undefined for unpacked ones), for fetch statistics. */
  lazies: Array<LazyLayer | undefined>;
  /** Unmounts the overlay and every FUSE layer; removes the work dir unless `keep`. Safe to call twice. */
  release(options?: { keepUpper?: boolean }): Promise<void>;
}

export interface MountImageOptions {
  reference: string;
  stateRoot?: string;
  /** Directory for this container's mounts and upper dir (created; removed by release). */
  workDir: string;
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
  const record = await state.getImage(reference);
  if (!record) throw new EsgzError('NOT_FOUND', `image ${reference} is not pulled into ${state.root}: run "esgz image rpull ${reference}" first`);
  const config = JSON.parse((await state.getBlob(record.configDigest)).toString('utf8')) as ImageConfig;

  const problem = await overlayProblem();
  if (problem) throw new EsgzError('UNSUPPORTED', `esgz run needs overlayfs: ${problem}`);

  const ownSource = !options.source;
  const source =
    options.source ??
    (await openRegistrySource(record.repository + `@${record.manifestDigest}`, {
      plainHttp: options.plainHttp || record.plainHttp,
      insecure: options.insecure || record.insecure,
    }));
  const fuseMounts: MountedLayer[] = [];
  const lazies: Array<LazyLayer | undefined> = [];
  let overlayTarget: string | undefined;
  let released = false;
  const release = async (opts: { keepUpper?: boolean } = {}) => {
    if (released) return;
    released = true;
    const errors: unknown[] = [];
    if (overlayTarget) await unmount(overlayTarget).catch((e: unknown) => errors.push(e));
    for (const m of fuseMounts.reverse()) await m.unmount().catch((e: unknown) => errors.push(e));
    if (ownSource) await source.close().catch(() => undefined);
    if (!opts.keepUpper) await rm(options.workDir, { recursive: true, force: true }).catch((e: unknown) => errors.push(e));
    else await rm(join(options.workDir, 'l'), { recursive: true, force: true }).catch(() => undefined);
    if (errors.length) throw errors[0];
  };

  try {
    await mkdir(options.workDir, { recursive: true });
    const cache = new ChunkCache(state.chunksRoot);
    const lowerDirs: string[] = [];
    for (const [i, layer] of record.layers.entries()) {
      const where = `layer ${i} (${layer.digest})`;
      if (layer.kind === 'unpacked') {
        if (!(await state.hasUnpacked(layer.digest))) throw new EsgzError('NOT_FOUND', `${where} is not unpacked in ${state.root} (pull the image again)`);
        lowerDirs.push(state.unpackedDir(layer.digest));
        lazies.push(undefined);
        continue;
      }
      const desc = { mediaType: layer.mediaType, digest: layer.digest, size: layer.size };
      const blob = sourceBlobReader(source, desc);
      const reader = await openStoredLayer(state, layer, blob, where);
      const lazy = new LazyLayer(reader, blob, cache, options.fetchPolicy);
      const mnt = join(options.workDir, 'l', String(i));
      const mounted = await mountLayer(mnt, {
        entries: reader.toc.entries,
        readRange: (name, entry, offset, length) => lazy.readRange(name, entry, offset, length),
        where,
        onReadError: (path, err) => options.onReadError?.(`${where}: read of ${path} failed: ${err instanceof Error ? err.message : String(err)}`),
      });
      fuseMounts.push(mounted);
      lowerDirs.push(mnt);
      lazies.push(lazy);
    }
    const upper = join(options.workDir, 'u');
    const work = join(options.workDir, 'w');
    const rootfs = join(options.workDir, 'm');
    await Promise.all([upper, work, rootfs].map((d) => mkdir(d, { recursive: true })));
    await mountOverlay(lowerDirs, upper, work, rootfs);
    overlayTarget = rootfs;
    return { record, config, rootfs, lazies, release };
  } catch (err) {
    await release().catch(() => undefined);
    throw err;
  }
}

export interface RunContainerOptions {
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
  onWarning?(message: string): void;
}

export interface RunContainerResult {
  id: string;
  exitCode: number | undefined;
  durationMs: number;
  /** Fetch statistics per layer (undefined for unpacked layers). */
  fetches: Array<FetchStats | undefined>;
}

export async function runContainer(options: RunContainerOptions): Promise<RunContainerResult> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new EsgzError('RUNTIME', 'esgz run needs root (FUSE mounts, overlayfs and runc)');
  }
  await findRunc();
  const state = new StateRoot(options.stateRoot);
  await state.init();
  const id = options.id ?? newContainerId();
  if (!/^[\w][\w.-]{0,63}$/.test(id)) throw new EsgzError('BAD_FLAG', `container id "${id}" must be letters, digits, '_', '.', '-' (at most 64)`);
  const containerDir = join(state.containersDir(), id);
  if (await stat(containerDir).then(() => true, () => false)) {
    throw new EsgzError('BAD_FLAG', `container ${id} already exists in ${state.containersDir()} (pick another ID or remove it)`);
  }
  await mkdir(containerDir, { recursive: true });
  // Lets `esgz image prune` tell this container from one whose esgz run died (see manage.ts).
  await writeFileAtomic(join(containerDir, 'owner'), `${(await processIdentity()) ?? process.pid}\n`);
  const image = await mountImage({
    reference: options.reference,
    stateRoot: options.stateRoot,
    workDir: containerDir,
    plainHttp: options.plainHttp,
    insecure: options.insecure,
    fetchPolicy: options.fetchPolicy,
    source: options.source,
    onReadError: options.onWarning,
  });
  let background: Promise<void> | undefined;
  try {
    const host = hostPlatform();
    const wanted = { os: image.config.os ?? host.os, architecture: image.config.architecture ?? host.architecture, ...(image.config.variant ? { variant: image.config.variant } : {}) };
    if (!platformMatches(host, wanted)) {
      throw new EsgzError('UNSUPPORTED', `${image.record.reference} is for ${formatPlatform(wanted)} but this machine is ${formatPlatform(host)}: it cannot run here`);
    }
    const bundle = join(containerDir, 'b');
    const config: ImageConfig = options.command?.length ? { ...image.config, config: { ...image.config.config, Entrypoint: null, Cmd: options.command } } : image.config;
    const spec = await buildRuntimeSpec({ rootfs: image.rootfs, config, options: options.run, bundleDir: bundle });
    await checkExecutable(image.rootfs, spec);
    await writeBundleConfig(bundle, spec);
    if (options.backgroundFetch) {
      background = (async () => {
        for (const lazy of image.lazies) await lazy?.fetchAll();
      })().catch((err: unknown) => options.onWarning?.(`background fetch stopped: ${err instanceof Error ? err.message : String(err)}`));
    }
    const result = await runBundle({
      bundle,
      id,
      stateRoot: join(containerDir, 's'),
      signal: options.signal,
      stdout: options.stdout,
      stderr: options.stderr,
      stdin: options.stdin,
      terminal: options.run.terminal,
    });
    return { id, exitCode: result.exitCode, durationMs: result.durationMs, fetches: image.lazies.map((l) => (l ? { ...l.stats } : undefined)) };
  } finally {
    await image.release({ keepUpper: !options.rm });
    void background;
  }
}
