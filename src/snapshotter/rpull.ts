/**
 * Lazy pull: resolve the image for this platform, keep its manifest and config, and for each
 * eStargz / zstd:chunked layer fetch only the footer and the TOC (Range requests), verified
 * against the layer's `containerd.io/snapshot/stargz/toc.digest` annotation. Layers that cannot be
 * pulled lazily are downloaded and unpacked in full. Then, unless told not to, each layer's
 * prioritized range (everything before `.prefetch.landmark`) is fetched in one Range request into
 * the chunk cache, and with `backgroundFetch` the rest too.
 */
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError, withContext } from '../errors.js';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_DIGEST_ANNOTATION, TOC_TAR_NAME } from '../estargz/constants.js';
import { announcesTOC, tocVerification } from '../estargz/zstdchunked/dialect.js';
import { EstargzReader, ExternalTOCRequiredError, type BlobReader } from '../estargz/reader.js';
import { ExternalTOCImage } from '../convert/external-toc.js';
import { sourceBlobReader } from '../convert/source-reader.js';
import { resolveImages, type ResolvedImage } from '../image/resolve.js';
import { openRegistrySource, type RegistryOptions } from '../image/transports/registry.js';
import type { Descriptor, Platform } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';
import { unpackLayer } from '../rootfs/unpack.js';
import { openLayerTar } from './full-pull.js';
import { formatReference, parseReference } from '../registry/reference.js';
import { ChunkCache, LazyLayer, RequestLimiter, type FetchPolicy } from './cache.js';
import { fuseShowsModtime } from './fusefs.js';
import {
  mkdirPrivate,
  PrimedBlobReader,
  StateRoot,
  syncFilesystem,
  tempTag,
  type ImageRecord,
  type LayerRecord,
} from './state.js';

/** The registry options (`plainHttp`, `insecure`, hosts.toml, TLS, credentials, trace) come from RegistryOptions. */
export interface RpullOptions extends RegistryOptions {
  reference: string;
  stateRoot?: string;
  platform?: Platform;
  /** Skip fetching the prioritized ranges. */
  noPrefetch?: boolean;
  /** False: every layer is downloaded and unpacked, none lazily pulled (`run --snapshotter overlayfs`). */
  lazy?: boolean;
  /** After the prefetch, fetch every remaining chunk too. */
  backgroundFetch?: boolean;
  fetchPolicy?: FetchPolicy;
  /** For tests: use this source instead of opening the registry. */
  source?: ImageSource;
  onProgress?(message: string): void;
  signal?: AbortSignal;
}

export interface RpullLayerReport {
  digest: string;
  kind: 'lazy' | 'unpacked';
  size: number;
  /** Bytes fetched for this layer (footer + TOC, prefetch, background). */
  fetchedBytes: number;
  prefetchedBytes: number;
  /** Why the prefetch of this layer failed (the pull still succeeds; reads fetch on demand). */
  prefetchError?: string;
  /** Size of the TOC blob fetched from the `-esgztoc` TOC image, for external-TOC layers. */
  externalTOCBytes?: number;
}

export interface RpullReport {
  reference: string;
  manifestDigest: string;
  platform?: string;
  layers: RpullLayerReport[];
  /** Time until the image was usable (metadata + TOCs + full downloads of non-lazy layers). */
  resolveMs: number;
  prefetchMs: number;
  backgroundMs: number;
}

/** Normalised form of a registry reference, the key of the image record. */
export function normalizeReference(reference: string): { reference: string; repository: string } {
  const spec = reference.startsWith('docker://') ? reference.slice('docker://'.length) : reference;
  const ref = parseReference(spec);
  return { reference: formatReference(ref), repository: `${ref.registry}/${ref.repository}` };
}

/** Opens a lazy layer's TOC from what rpull stored, without a request (run, prune). */
export async function openStoredLayer(
  state: StateRoot,
  layer: LayerRecord,
  inner: BlobReader,
  where: string,
): Promise<EstargzReader> {
  const saved = await state.getLayerMeta(layer.digest);
  if (!saved)
    throw new EsgzError(
      'NOT_FOUND',
      `${where}: the TOC of layer ${layer.digest} is not in the state root (pull the image again)`,
    );
  const primed = new PrimedBlobReader(inner, saved.ranges);
  return EstargzReader.open(primed, {
    expectedTOCDigest: layer.tocDigest,
    where,
    ...(saved.externalTOC ? { externalTOC: saved.externalTOC } : {}),
  });
}

/** What the phases of one pull share. */
interface Pull {
  options: RpullOptions;
  reference: string;
  state: StateRoot;
  source: ImageSource;
  image: ResolvedImage;
  progress: (message: string) => void;
  /** The `-esgztoc` TOC image, opened when the first external-TOC layer needs it. */
  externalTOCs?: ExternalTOCImage;
}

/** A layer's TOC, read and verified in phase 1 (lazy layers only). */
interface LayerTOC {
  record: LayerRecord;
  report: RpullLayerReport;
  reader?: EstargzReader;
  /** An eStargz / zstd:chunked layer unpacked instead of served lazily: its TOC and landmark files are left out. */
  formatFiles?: boolean;
}

export async function rpull(options: RpullOptions): Promise<RpullReport> {
  const started = Date.now();
  const { reference, repository } = normalizeReference(options.reference);
  const state = new StateRoot(options.stateRoot);
  await state.init();
  const source = options.source ?? (await openRegistrySource(reference, options));
  let pull: Pull | undefined;
  let unpin: (() => Promise<void>) | undefined;
  try {
    const image = await resolvePulledImage(source, reference, options.platform);
    pull = { options, reference, state, source, image, progress: options.onProgress ?? (() => undefined) };
    unpin = await pinImage(pull);
    // Phase 1: every lazy layer's TOC, verified, before anything is stored or unpacked: a bad TOC
    // fails the pull while nothing of this image exists yet.
    const tocs: LayerTOC[] = [];
    for (const [i, desc] of image.manifest.layers.entries()) tocs.push(await readLayerTOC(pull, desc, i));
    await state.putBlob(image.raw.digest, image.raw.bytes);
    await state.putBlob(image.manifest.config.digest, image.configBytes);
    // Phase 2: layers that are not lazily pullable, downloaded (digest-verified while streaming) and unpacked.
    for (const [i, toc] of tocs.entries()) await unpackEagerLayer(pull, toc, i);
    const record = await storeImageRecord(
      pull,
      repository,
      tocs.map((t) => t.record),
    );
    const resolveMs = Date.now() - started;
    // Phase 3: prioritized ranges, one Range request per layer; then, if asked, everything else.
    const cache = new ChunkCache(state.chunksRoot);
    const limiter = new RequestLimiter();
    const lazies = tocs.map(({ reader }, i) => {
      if (!reader) return undefined;
      const blob = sourceBlobReader(source, image.manifest.layers[i]!);
      return new LazyLayer(reader, blob, cache, options.fetchPolicy, limiter);
    });
    const prefetchStart = Date.now();
    if (!options.noPrefetch) await prefetchLayers(pull, tocs, lazies);
    const prefetchMs = Date.now() - prefetchStart;
    const backgroundStart = Date.now();
    if (options.backgroundFetch) await fetchRemaining(pull, tocs, lazies);
    await writeCache(pull, cache);
    return {
      reference,
      manifestDigest: image.raw.digest,
      ...(record.platform ? { platform: record.platform } : {}),
      layers: tocs.map((t) => t.report),
      resolveMs,
      prefetchMs,
      backgroundMs: Date.now() - backgroundStart,
    };
  } finally {
    await unpin?.();
    await pull?.externalTOCs?.close();
    if (!options.source) await source.close();
  }
}

/** The image manifest for `platform` (this machine's by default) and its config, checked for a pull. */
async function resolvePulledImage(source: ImageSource, reference: string, platform?: Platform): Promise<ResolvedImage> {
  const [image] = await resolveImages(source, { platform });
  const { manifest, config } = image!;
  const diffIDs = config.rootfs?.diff_ids;
  if (!Array.isArray(diffIDs))
    throw new EsgzError('BAD_MANIFEST', `config ${manifest.config.digest} has no rootfs.diff_ids`);
  if (diffIDs.length !== manifest.layers.length) {
    const counts = `manifest has ${manifest.layers.length} layers but the config lists ${diffIDs.length} diff_ids`;
    throw new EsgzError('BAD_MANIFEST', `${reference}: ${counts}`);
  }
  return image!;
}

/** Pins the image's layers and blobs: nothing of it is stored before, so prune keeps what a live pull writes. */
async function pinImage({ state, reference, image }: Pull): Promise<() => Promise<void>> {
  const unlock = await state.lock(`image rpull ${reference}`);
  try {
    return await state.pin({
      layers: image.manifest.layers.map((l) => {
        const tocDigest = l.annotations?.[TOC_DIGEST_ANNOTATION];
        return { digest: l.digest, size: l.size, ...(tocDigest ? { tocDigest } : {}) };
      }),
      blobs: [image.raw.digest, image.manifest.config.digest],
    });
  } finally {
    await unlock();
  }
}

/**
 * Phase 1 for one layer: without a TOC digest annotation (`toc.digest`, or a zstd:chunked
 * manifest-checksum of either key family) it is not lazily pullable (unpacked in phase 2);
 * otherwise its footer and TOC are read (recorded for `run`) and verified, the TOC coming from the
 * TOC image when the footer says it is external. A zstd:chunked layer announced only by its
 * manifest checksum whose TOC esgz cannot read (BAD_FORMAT) is pulled in full instead.
 */
async function readLayerTOC(pull: Pull, desc: Descriptor, i: number): Promise<LayerTOC> {
  const { digest, mediaType, size } = desc;
  // `run --snapshotter overlayfs`: every layer pulled whole and unpacked, none mounted lazily.
  if (pull.options.lazy === false || !announcesTOC(desc.annotations)) return unpackedLayer(desc);
  const verification = tocVerification(desc.annotations);
  const where = `layer ${i} (${digest})`;
  const primed = new PrimedBlobReader(sourceBlobReader(pull.source, desc));
  primed.recording = true;
  let reader: EstargzReader;
  let externalTOC: Buffer | undefined;
  try {
    try {
      reader = await EstargzReader.open(primed, { ...verification, where });
    } catch (err) {
      if (!(err instanceof ExternalTOCRequiredError)) throw err;
      // The footer says the TOC lives in the "-esgztoc" TOC image (ctr-remote --estargz-external-toc).
      pull.externalTOCs ??= ExternalTOCImage.ofRegistryImage(pull.reference, pull.options, {
        platform: pull.options.platform,
      });
      externalTOC = await pull.externalTOCs.tocFor(digest);
      reader = await EstargzReader.open(primed, { ...verification, where, externalTOC });
      pull.progress(`${where}: TOC taken from the TOC image`);
    }
  } catch (err) {
    if (!verification.expectedTOCDigest && err instanceof EsgzError && err.code === 'BAD_FORMAT') {
      pull.progress(`${where}: zstd:chunked TOC not readable lazily (${err.message})`);
      return unpackedLayer(desc);
    }
    throw withContext(pull.reference, err);
  }
  // The TOC JSON digest, verified directly (toc.digest) or through the compressed TOC's checksum:
  // `run` re-checks the stored TOC against it.
  const tocDigest = reader.tocDigest;
  primed.recording = false;
  if (!reader.entries().every((e) => fuseShowsModtime(e.modtime))) {
    pull.progress(`${where}: has modification times before 1970, which FUSE cannot show: unpacking it instead`);
    return { ...unpackedLayer(desc), formatFiles: true };
  }
  const landmark = reader.landmark();
  await pull.state.putLayerMeta(digest, primed.recorded, externalTOC);
  pull.progress(`${where}: TOC verified (${reader.entries().length} entries)`);
  const fetchedBytes = primed.recorded.reduce((n, r) => n + r.data.length, 0);
  const prefetchEnd = landmark.kind === 'prefetch' ? landmark.offset : undefined;
  return {
    record: { digest, mediaType, size, kind: 'lazy', tocDigest, ...(prefetchEnd !== undefined ? { prefetchEnd } : {}) },
    report: {
      digest,
      kind: 'lazy',
      size,
      fetchedBytes,
      prefetchedBytes: 0,
      ...(externalTOC ? { externalTOCBytes: externalTOC.length } : {}),
    },
    reader,
  };
}

/** A layer pulled whole and unpacked in phase 2. */
function unpackedLayer({ digest, mediaType, size }: Descriptor): LayerTOC {
  return {
    record: { digest, mediaType, size, kind: 'unpacked' },
    report: { digest, kind: 'unpacked', size, fetchedBytes: 0, prefetchedBytes: 0 },
  };
}

/** Phase 2 for one layer that is not lazily pullable: downloaded, unpacked into a temp tree, moved into place. */
async function unpackEagerLayer(
  pull: Pull,
  { record: layer, report, formatFiles }: LayerTOC,
  i: number,
): Promise<void> {
  const { state, source, reference, image, options, progress } = pull;
  if (layer.kind !== 'unpacked' || (await state.hasUnpacked(layer.digest))) return;
  const where = `layer ${i} (${layer.digest})`;
  progress(`${where}: not lazily pullable, downloading ${layer.size} bytes`);
  const dir = state.unpackedDir(layer.digest);
  await mkdirPrivate(state.layerDir(layer.digest));
  // A killed pull's temp tree is ignored here (its name is unique) and swept by prune.
  const tmp = `${dir}.tmp-${await tempTag()}`;
  try {
    // An eStargz blob (its TOC annotation lost on the way) inflates on every core.
    const stream = await openLayerTar(source, image.manifest.layers[i]!, where);
    await unpackLayer(stream, tmp, { whiteouts: 'overlay', layerName: where, signal: options.signal });
    // What the lazy mount hides: the TOC file and the landmarks are the format's, not the image's.
    if (formatFiles)
      for (const name of [TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK])
        await rm(join(tmp, name), { force: true });
    // Under the lock: a concurrent pull of the same layer may have finished first, and its
    // tree may be a running container's lower dir by now; keep it and drop ours.
    const unlock = await state.lock(`image rpull ${reference}`);
    try {
      if (await state.hasUnpacked(layer.digest)) {
        await rm(tmp, { recursive: true, force: true });
      } else {
        await rm(dir, { recursive: true, force: true });
        await rename(tmp, dir);
        // The tree reaches the disk before the marker that says it is complete.
        await syncFilesystem(dir);
        await state.markUnpacked(layer.digest);
      }
    } finally {
      await unlock();
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw withContext(reference, err);
  }
  report.fetchedBytes += layer.size;
}

/** The image record that makes the pulled image visible to `run`. */
async function storeImageRecord(pull: Pull, repository: string, layers: LayerRecord[]): Promise<ImageRecord> {
  const { state, reference, image, options } = pull;
  const record: ImageRecord = {
    reference,
    repository,
    manifestDigest: image.raw.digest,
    manifestMediaType: image.raw.mediaType,
    configDigest: image.manifest.config.digest,
    ...(image.platform ? { platform: image.platform } : {}),
    layers,
    plainHttp: options.plainHttp ?? false,
    insecure: options.insecure ?? false,
    pulledAt: new Date().toISOString(),
  };
  await state.putImage(record);
  return record;
}

/** Phase 3: each lazy layer's prioritized range into the chunk cache; a failure only costs the prefetch. */
async function prefetchLayers(
  { progress }: Pull,
  tocs: LayerTOC[],
  lazies: ReadonlyArray<LazyLayer | undefined>,
): Promise<void> {
  await Promise.all(
    tocs.map(async ({ record, report }, i) => {
      const lazy = lazies[i];
      if (!lazy || record.prefetchEnd === undefined) return;
      try {
        const got = await lazy.prefetch(record.prefetchEnd);
        report.prefetchedBytes += got.bytes;
        report.fetchedBytes += got.bytes;
        if (got.bytes) progress(`layer ${i}: prefetched ${got.chunks} chunks (${got.bytes} bytes)`);
      } catch (err) {
        // The image is usable already; what the prefetch missed is fetched (and verified) on first read.
        const message = err instanceof Error ? err.message : String(err);
        report.prefetchError = message;
        progress(`layer ${i}: prefetch failed, files will be fetched on first read: ${message}`);
      }
    }),
  );
}

/** Waits for the chunk cache's pending writes; a failed write only costs a fetch on the next read. */
async function writeCache({ progress }: Pull, cache: ChunkCache): Promise<void> {
  await cache.drain();
  if (cache.writeError)
    progress(`some chunks were not cached (they will be fetched when read): ${String(cache.writeError)}`);
}

/** `backgroundFetch`: every chunk the prefetch left, layer by layer (what is cached is skipped: it resumes). */
async function fetchRemaining(
  { reference, progress }: Pull,
  tocs: LayerTOC[],
  lazies: Array<LazyLayer | undefined>,
): Promise<void> {
  for (const [i, lazy] of lazies.entries()) {
    if (!lazy) continue;
    const before = lazy.stats.bytes;
    await lazy.fetchAll().catch((err: unknown) => {
      throw withContext(`${reference}: background fetch of layer ${i}`, err);
    });
    tocs[i]!.report.fetchedBytes += lazy.stats.bytes - before;
    progress(`layer ${i}: fetched the rest (${lazy.stats.bytes - before} bytes)`);
  }
}
