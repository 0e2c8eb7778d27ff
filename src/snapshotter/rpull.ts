/**
 * Lazy pull: resolve the image for this platform, keep its manifest and config, and for each
 * eStargz / zstd:chunked layer fetch only the footer and the TOC (Range requests), verified
 * against the layer's `containerd.io/snapshot/stargz/toc.digest` annotation. Layers that cannot be
 * pulled lazily are downloaded and unpacked in full. Then, unless told not to, each layer's
 * prioritized range (everything before `.prefetch.landmark`) is fetched in one Range request into
 * the chunk cache, and with `backgroundFetch` the rest too.
 */
import { createHash } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { EsgzError, withContext } from '../errors.js';
import { EXTERNAL_TOC_IMAGE_SUFFIX, TOC_DIGEST_ANNOTATION, TOC_LAYER_DIGEST_ANNOTATION } from '../estargz/constants.js';
import { EstargzReader, type BlobReader } from '../estargz/reader.js';
import { sourceBlobReader } from '../convert/source-reader.js';
import { openDecompressed } from '../image/compression.js';
import { isIndexMediaType, isManifestMediaType } from '../oci/media-types.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import { openRegistrySource, type RegistryOptions } from '../image/transports/registry.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform, RawManifest } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';
import { unpackLayer } from '../rootfs/unpack.js';
import { formatReference, parseReference } from '../registry/reference.js';
import { ChunkCache, LazyLayer, type FetchPolicy } from './cache.js';
import { mkdirPrivate, PrimedBlobReader, StateRoot, syncFilesystem, tempTag, type ImageRecord, type LayerRecord } from './state.js';
import { MAX_CONFIG_BYTES } from '../oci/limits.js';

/** The registry options (`plainHttp`, `insecure`, hosts.toml, TLS, credentials, trace) come from RegistryOptions. */
export interface RpullOptions extends RegistryOptions {
  reference: string;
  stateRoot?: string;
  platform?: Platform;
  plainHttp?: boolean;
  insecure?: boolean;
  /** Skip fetching the prioritized ranges. */
  noPrefetch?: boolean;
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

function parseJson<T>(bytes: Buffer, where: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${where} is not valid JSON`, { cause: err });
  }
}

/** Reads a small blob in full and checks its digest and size. */
async function readVerified(source: ImageSource, desc: Descriptor, what: string): Promise<Buffer> {
  const stream = await source.openBlob(desc);
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    parts.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total > MAX_CONFIG_BYTES) throw new EsgzError('BAD_MANIFEST', `${what} ${desc.digest} is larger than ${MAX_CONFIG_BYTES >> 20} MiB`);
  }
  const data = Buffer.concat(parts);
  const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  if (actual !== desc.digest) throw new EsgzError('DIGEST_MISMATCH', `${what} ${desc.digest}: content has digest ${actual}`);
  return data;
}

function verifyRaw(raw: RawManifest, where: string): void {
  const actual = `sha256:${createHash('sha256').update(raw.bytes).digest('hex')}`;
  if (actual !== raw.digest) throw new EsgzError('DIGEST_MISMATCH', `${where}: manifest digest ${actual} does not match ${raw.digest}`);
}

/** Resolves the root of `source` to one image manifest for `platform` (this machine's by default). */
export async function resolveManifest(source: ImageSource, platform?: Platform): Promise<{ raw: RawManifest; manifest: ImageManifest; platform?: Platform }> {
  const root = await source.fetchRoot();
  verifyRaw(root, source.description);
  let mediaType = root.mediaType;
  const doc = parseJson<ImageManifest & ImageIndex & { mediaType?: string }>(root.bytes, `manifest of ${source.description}`);
  mediaType ||= doc.mediaType ?? '';
  if (isIndexMediaType(mediaType) || (Array.isArray(doc.manifests) && !doc.layers)) {
    const wanted = platform ?? hostPlatform();
    const match = doc.manifests.find((m) => m.platform !== undefined && isManifestMediaType(m.mediaType) && platformMatches(wanted, m.platform));
    if (!match) {
      const available = doc.manifests.filter((m) => m.platform).map((m) => formatPlatform(m.platform!));
      throw new EsgzError('NOT_FOUND', `${source.description}: no manifest for ${formatPlatform(wanted)} in the index (available: ${available.join(', ') || 'none'})`);
    }
    const child = await source.fetchManifest(match);
    verifyRaw(child, `${source.description}@${match.digest}`);
    if (child.digest !== match.digest) throw new EsgzError('DIGEST_MISMATCH', `${source.description}: index names ${match.digest}, registry returned ${child.digest}`);
    const manifest = parseJson<ImageManifest>(child.bytes, `manifest ${match.digest}`);
    if (!manifest.config || !Array.isArray(manifest.layers)) throw new EsgzError('BAD_MANIFEST', `${source.description}@${match.digest}: not an image manifest`);
    return { raw: child, manifest, platform: match.platform };
  }
  if (!doc.config || !Array.isArray(doc.layers)) throw new EsgzError('BAD_MANIFEST', `${source.description}: not an image manifest or index (media type ${mediaType || 'unknown'})`);
  return { raw: root, manifest: doc };
}

/** Normalised form of a registry reference, the key of the image record. */
export function normalizeReference(reference: string): { reference: string; repository: string } {
  const spec = reference.startsWith('docker://') ? reference.slice('docker://'.length) : reference;
  const ref = parseReference(spec);
  return { reference: formatReference(ref), repository: `${ref.registry}/${ref.repository}` };
}

/** Opens a lazy layer's TOC from what rpull stored, without a request (run, prune). */
export async function openStoredLayer(state: StateRoot, layer: LayerRecord, inner: BlobReader, where: string): Promise<EstargzReader> {
  const saved = await state.getLayerMeta(layer.digest);
  if (!saved) throw new EsgzError('NOT_FOUND', `${where}: the TOC of layer ${layer.digest} is not in the state root (pull the image again)`);
  const primed = new PrimedBlobReader(inner, saved.ranges);
  return EstargzReader.open(primed, { expectedTOCDigest: layer.tocDigest, where, ...(saved.externalTOC ? { externalTOC: saved.externalTOC } : {}) });
}

/**
 * The TOC blobs of a `-esgztoc` TOC image (ctr-remote --estargz-external-toc): the image is the
 * same repository with the tag suffixed, and each of its layers names the layer it describes in
 * the `containerd.io/snapshot/stargz/layer.digest` annotation.
 */
export class ExternalTOCs {
  private manifest?: Promise<{ source: ImageSource; layers: Descriptor[] }>;

  constructor(
    private readonly reference: string,
    private readonly platform: Platform | undefined,
    private readonly transport: RegistryOptions,
  ) {}

  private open(): Promise<{ source: ImageSource; layers: Descriptor[] }> {
    this.manifest ??= (async () => {
      const ref = parseReference(this.reference);
      if (!ref.tag) throw new EsgzError('UNSUPPORTED', `${this.reference}: the layer's TOC is external, and its TOC image (tag${EXTERNAL_TOC_IMAGE_SUFFIX}) can only be found from a tagged reference`);
      const tocRef = formatReference({ ...ref, tag: `${ref.tag}${EXTERNAL_TOC_IMAGE_SUFFIX}`, digest: undefined });
      const source = await openRegistrySource(tocRef, this.transport);
      try {
        const { manifest } = await resolveManifest(source, this.platform);
        return { source, layers: manifest.layers };
      } catch (err) {
        await source.close();
        throw withContext(`TOC image ${tocRef}`, err);
      }
    })();
    return this.manifest;
  }

  /** The TOC blob for `layerDigest` (digest-verified against the TOC image's descriptor). */
  async tocFor(layerDigest: string): Promise<Buffer> {
    const { source, layers } = await this.open();
    const desc = layers.find((l) => l.annotations?.[TOC_LAYER_DIGEST_ANNOTATION] === layerDigest);
    if (!desc) throw new EsgzError('NOT_FOUND', `TOC image of ${this.reference} has no TOC for layer ${layerDigest}`);
    return readVerified(source, desc, 'TOC blob');
  }

  async close(): Promise<void> {
    if (this.manifest) await (await this.manifest.catch(() => undefined))?.source.close();
  }
}

export async function rpull(options: RpullOptions): Promise<RpullReport> {
  const started = Date.now();
  const { reference, repository } = normalizeReference(options.reference);
  const state = new StateRoot(options.stateRoot);
  await state.init();
  const progress = options.onProgress ?? (() => undefined);
  const source = options.source ?? (await openRegistrySource(reference, options));
  let externalTOCs: ExternalTOCs | undefined;
  let unpin: (() => Promise<void>) | undefined;
  try {
    const { raw, manifest, platform } = await resolveManifest(source, options.platform);
    // Nothing of this image is stored before its pin: prune keeps what a live pull is writing.
    const unlock = await state.lock(`image rpull ${reference}`);
    try {
      unpin = await state.pin({
        layers: manifest.layers.map((l) => ({ digest: l.digest, size: l.size, ...(l.annotations?.[TOC_DIGEST_ANNOTATION] ? { tocDigest: l.annotations[TOC_DIGEST_ANNOTATION] } : {}) })),
        blobs: [raw.digest, manifest.config.digest],
      });
    } finally {
      await unlock();
    }
    const configBytes = await readVerified(source, manifest.config, 'config');
    const config = parseJson<ImageConfig>(configBytes, `config ${manifest.config.digest}`);
    if (!config.rootfs || !Array.isArray(config.rootfs.diff_ids)) throw new EsgzError('BAD_MANIFEST', `config ${manifest.config.digest} has no rootfs.diff_ids`);
    if (config.rootfs.diff_ids.length !== manifest.layers.length) {
      throw new EsgzError('BAD_MANIFEST', `${reference}: manifest has ${manifest.layers.length} layers but the config lists ${config.rootfs.diff_ids.length} diff_ids`);
    }

    // Phase 1: every lazy layer's TOC, verified, before anything is stored or unpacked: a bad TOC
    // fails the pull while nothing of this image exists yet.
    const layers: LayerRecord[] = [];
    const readers: Array<EstargzReader | undefined> = [];
    const reports: RpullLayerReport[] = [];
    for (const [i, desc] of manifest.layers.entries()) {
      const where = `layer ${i} (${desc.digest})`;
      const tocDigest = desc.annotations?.[TOC_DIGEST_ANNOTATION];
      if (!tocDigest) {
        layers.push({ digest: desc.digest, mediaType: desc.mediaType, size: desc.size, kind: 'unpacked' });
        readers.push(undefined);
        reports.push({ digest: desc.digest, kind: 'unpacked', size: desc.size, fetchedBytes: 0, prefetchedBytes: 0 });
        continue;
      }
      const primed = new PrimedBlobReader(sourceBlobReader(source, desc));
      primed.recording = true;
      let reader: EstargzReader;
      let externalTOC: Buffer | undefined;
      try {
        try {
          reader = await EstargzReader.open(primed, { expectedTOCDigest: tocDigest, where });
        } catch (err) {
          if (!(err instanceof EsgzError && err.code === 'UNSUPPORTED' && /external/i.test(err.message))) throw err;
          // The footer says the TOC lives in the "-esgztoc" TOC image (ctr-remote --estargz-external-toc).
          externalTOCs ??= new ExternalTOCs(reference, options.platform, options);
          externalTOC = await externalTOCs.tocFor(desc.digest);
          reader = await EstargzReader.open(primed, { expectedTOCDigest: tocDigest, where, externalTOC });
          progress(`${where}: TOC taken from the TOC image`);
        }
      } catch (err) {
        throw withContext(reference, err);
      }
      primed.recording = false;
      const landmark = reader.landmark();
      layers.push({
        digest: desc.digest,
        mediaType: desc.mediaType,
        size: desc.size,
        kind: 'lazy',
        tocDigest,
        ...(landmark.kind === 'prefetch' && landmark.offset !== undefined ? { prefetchEnd: landmark.offset } : {}),
      });
      readers.push(reader);
      await state.putLayerMeta(desc.digest, primed.recorded, externalTOC);
      reports.push({ digest: desc.digest, kind: 'lazy', size: desc.size, fetchedBytes: primed.recorded.reduce((n, r) => n + r.data.length, 0), prefetchedBytes: 0, ...(externalTOC ? { externalTOCBytes: externalTOC.length } : {}) });
      progress(`${where}: TOC verified (${reader.entries().length} entries)`);
    }

    await state.putBlob(raw.digest, raw.bytes);
    await state.putBlob(manifest.config.digest, configBytes);

    // Phase 2: layers that are not lazily pullable, downloaded (digest-verified while streaming) and unpacked.
    for (const [i, layer] of layers.entries()) {
      if (layer.kind !== 'unpacked' || (await state.hasUnpacked(layer.digest))) continue;
      const where = `layer ${i} (${layer.digest})`;
      progress(`${where}: not lazily pullable, downloading ${layer.size} bytes`);
      const dir = state.unpackedDir(layer.digest);
      await mkdirPrivate(state.layerDir(layer.digest));
      // A killed pull's temp tree is ignored here (its name is unique) and swept by prune.
      const tmp = `${dir}.tmp-${await tempTag()}`;
      try {
        const blob = await source.openBlob(manifest.layers[i]!);
        const { stream } = await openDecompressed(blob, where);
        await unpackLayer(stream, tmp, { whiteouts: 'overlay', layerName: where, signal: options.signal });
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
      reports[i]!.fetchedBytes += layer.size;
    }

    const record: ImageRecord = {
      reference,
      repository,
      manifestDigest: raw.digest,
      manifestMediaType: raw.mediaType,
      configDigest: manifest.config.digest,
      ...(platform ? { platform: formatPlatform(platform) } : {}),
      layers,
      plainHttp: options.plainHttp ?? false,
      insecure: options.insecure ?? false,
      pulledAt: new Date().toISOString(),
    };
    await state.putImage(record);
    const resolveMs = Date.now() - started;

    // Phase 3: prioritized ranges, one Range request per layer.
    const prefetchStart = Date.now();
    const cache = new ChunkCache(state.chunksRoot);
    const lazies = readers.map((r, i) => (r ? new LazyLayer(r, sourceBlobReader(source, manifest.layers[i]!), cache, options.fetchPolicy) : undefined));
    if (!options.noPrefetch) {
      await Promise.all(
        layers.map(async (layer, i) => {
          const lazy = lazies[i];
          if (!lazy || layer.prefetchEnd === undefined) return;
          try {
            const got = await lazy.prefetch(layer.prefetchEnd);
            reports[i]!.prefetchedBytes += got.bytes;
            reports[i]!.fetchedBytes += got.bytes;
            if (got.bytes) progress(`layer ${i}: prefetched ${got.chunks} chunks (${got.bytes} bytes)`);
          } catch (err) {
            // The image is usable already; what the prefetch missed is fetched (and verified) on first read.
            const message = err instanceof Error ? err.message : String(err);
            reports[i]!.prefetchError = message;
            progress(`layer ${i}: prefetch failed, files will be fetched on first read: ${message}`);
          }
        }),
      );
    }
    const prefetchMs = Date.now() - prefetchStart;

    const backgroundStart = Date.now();
    if (options.backgroundFetch) {
      for (const [i, lazy] of lazies.entries()) {
        if (!lazy) continue;
        const before = lazy.stats.bytes;
        await lazy.fetchAll().catch((err: unknown) => {
          throw withContext(`${reference}: background fetch of layer ${i}`, err);
        });
        reports[i]!.fetchedBytes += lazy.stats.bytes - before;
        progress(`layer ${i}: fetched the rest (${lazy.stats.bytes - before} bytes)`);
      }
    }
    return {
      reference,
      manifestDigest: raw.digest,
      ...(record.platform ? { platform: record.platform } : {}),
      layers: reports,
      resolveMs,
      prefetchMs,
      backgroundMs: Date.now() - backgroundStart,
    };
  } finally {
    await unpin?.();
    await externalTOCs?.close();
    if (!options.source) await source.close();
  }
}
