// The one transfer pipeline behind `image copy`, `image convert` and `image optimize`:
//   resolve root (index → platform manifests) → per layer: transform into a spool file while
//   hashing → config and manifest rewritten → child manifests → index → sink.commit LAST.
// An identity transfer never re-serialises anything, so every digest stays byte-identical.
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable, Transform } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError, withContext } from '../errors.js';
import { DigestCounter, digestOf, shortDigest } from '../oci/digest.js';
import {
  MediaType,
  dockerLayerMediaType,
  isAttestationManifest,
  isDockerMediaType,
  toOciMediaType,
} from '../oci/media-types.js';
import { formatPlatform, platformMatches } from '../oci/platform.js';
import { identityTransform, type LayerOutput, type LayerTransform } from './transform.js';
import type { Descriptor, ImageIndex, Platform, RawManifest } from '../oci/types.js';
import type { BlobLocation, ImageSink, ImageSource } from './types.js';
import {
  choosePlatformManifests,
  choosesOneManifest,
  fetchChildManifest,
  fetchImageRoot,
  manifestWhere,
  requestedPlatforms,
  resolveManifest,
  type PlatformChoice,
} from './resolve.js';

/** Receives per-blob progress; `bytes` is the absolute count done so far. */
export interface TransferProgress {
  start(id: string, label: string, total: number | undefined): void;
  update(id: string, bytes: number): void;
  finish(id: string, note?: string): void;
}

/**
 * From an index, `platform`/`platforms` pick manifests (one gives that single manifest, several an
 * index of the matching ones, in index order) and `allPlatforms` keeps every manifest (the
 * result is an index); see choosePlatformManifests.
 */
export interface TransferOptions extends PlatformChoice {
  source: ImageSource;
  sink: ImageSink;
  /** Default: identity (a byte-exact copy). */
  transform?: LayerTransform;
  /** Convert Docker media types (manifest, config, layers, list) to their OCI equivalents. */
  oci?: boolean;
  /** Layers transformed at once (default 2). Output order never depends on it. */
  concurrency?: number;
  signal?: AbortSignal;
  progress?: TransferProgress;
  onWarning?: (message: string) => void;
  /** Where layer outputs are spooled before upload (default: the OS temp dir). */
  spoolDir?: string;
}

/** Write buffering between a layer transform and its spool file. */
const SPOOL_BUFFER = 2 << 20;

export interface BlobSummary {
  mediaType: string;
  digest: string;
  size: number;
}

export interface LayerReport {
  index: number;
  input: BlobSummary;
  output: BlobSummary;
  diffID: string | undefined;
  /** False when the source blob was kept as is. */
  changed: boolean;
  /** True when the destination already had the output blob. */
  existed: boolean;
  transform?: Record<string, unknown>;
  durationMs: number;
}

export interface ManifestReport {
  platform?: string;
  source: BlobSummary;
  output: BlobSummary;
  config: { source: BlobSummary; output: BlobSummary };
  layers: LayerReport[];
}

export interface TransferReport {
  source: string;
  destination: string;
  transform: string;
  root: BlobSummary;
  sourceRoot: BlobSummary;
  manifests: ManifestReport[];
  durationMs: number;
}

export const DEFAULT_CONCURRENCY = 2;

function summary(desc: { mediaType: string; digest: string; size: number }): BlobSummary {
  return { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
}

function rawSummary(raw: RawManifest): BlobSummary {
  return { mediaType: raw.mediaType, digest: raw.digest, size: raw.bytes.length };
}

function serialize(value: unknown, mediaType: string): RawManifest {
  const bytes = Buffer.from(JSON.stringify(value));
  return { bytes, mediaType, digest: digestOf(bytes) };
}

/**
 * Settles like `work`, or rejects with INTERRUPTED as soon as `signal` fires: a transform that
 * misses the abort (a stream that never ends once its input is destroyed) cannot hang the copy.
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  work.catch(() => undefined);
  if (signal.aborted) return Promise.reject(new EsgzError('INTERRUPTED', 'interrupted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new EsgzError('INTERRUPTED', 'interrupted'));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function isInterrupted(err: unknown): boolean {
  return err instanceof EsgzError && err.code === 'INTERRUPTED';
}

/** Runs `fn` over `items` with at most `limit` in flight; results keep the input order. */
async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, i);
      } catch (err) {
        // Keep the root cause, not the INTERRUPTED errors of the layers it stopped.
        if (failed === undefined || (isInterrupted(failed) && !isInterrupted(err))) failed = err;
        throw err;
      }
    }
  };
  const outcomes = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  const rejected = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (rejected) throw failed ?? rejected.reason;
  return results;
}

function counting(stream: Readable, onBytes: (total: number) => void): Readable {
  let total = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      total += chunk.length;
      onBytes(total);
      callback(null, chunk);
    },
  });
  stream.on('error', (err) => counter.destroy(err));
  return stream.pipe(counter);
}

class Transfer {
  private readonly transform: LayerTransform;
  private readonly concurrency: number;
  /** Fires on the caller's signal and on the first layer failure (stopping the other layers). */
  private readonly signal: AbortSignal;
  private readonly stopLayers = new AbortController();
  private readonly userSignal: AbortSignal | undefined;
  /** Made on the first changed layer; removed at the end whatever happened. */
  private spoolRoot: Promise<string> | undefined;
  private readonly mountFrom: BlobLocation | undefined;
  private readonly warn: (message: string) => void;

  constructor(private readonly options: TransferOptions) {
    this.transform = options.transform ?? identityTransform;
    this.concurrency = Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY);
    this.userSignal = options.signal;
    this.signal = options.signal ? AbortSignal.any([options.signal, this.stopLayers.signal]) : this.stopLayers.signal;
    // Registry sources say where their blobs live, so a registry sink can mount instead of copying.
    this.mountFrom = options.source.location;
    this.warn = options.onWarning ?? (() => {});
  }

  private checkAborted(): void {
    if (this.signal.aborted) throw new EsgzError('INTERRUPTED', 'interrupted');
  }

  async run(): Promise<TransferReport> {
    const started = Date.now();
    const { source, sink } = this.options;
    this.transform.prepare?.();
    try {
      const resolved = await fetchImageRoot(source);
      const sourceRoot = resolved.raw;
      this.checkAborted();
      const manifests: ManifestReport[] = [];
      let root: RawManifest;
      if (resolved.kind === 'index') {
        root = await this.transferIndex(sourceRoot, resolved.index, manifests);
      } else {
        const result = await this.transferManifest(sourceRoot, undefined);
        manifests.push(result.report);
        root = result.raw;
      }
      this.checkAborted();
      await sink.commit(root);
      return {
        source: source.description,
        destination: sink.description,
        transform: this.transform.name,
        root: rawSummary(root),
        sourceRoot: rawSummary(sourceRoot),
        manifests,
        durationMs: Date.now() - started,
      };
    } catch (err) {
      try {
        await sink.abort();
      } catch (abortErr) {
        this.warn(`cleaning up ${sink.description} failed: ${(abortErr as Error).message}`);
      }
      if (err instanceof EsgzError) throw err;
      if (this.userSignal?.aborted) throw new EsgzError('INTERRUPTED', 'interrupted', { cause: err });
      throw withContext(`copying ${source.description} to ${sink.description}`, err);
    } finally {
      const spool = await this.spoolRoot?.catch(() => undefined);
      if (spool !== undefined) await removeTempDir(spool);
    }
  }

  private async transferIndex(
    sourceRoot: RawManifest,
    index: ImageIndex,
    reports: ManifestReport[],
  ): Promise<RawManifest> {
    const { source, sink } = this.options;
    // buildx attestations describe the original image by digest and hold in-toto JSON, not tar
    // layers: they can neither be converted nor stay true, so only a byte-exact copy keeps them.
    const keepAttestations = this.transform === identityTransform;
    const entries = choosePlatformManifests(index, this.options, source.description, { keepAttestations });
    if (choosesOneManifest(this.options) && !this.options.keepIndex) {
      const match = entries[0]!;
      const result = await this.transferManifest(await fetchChildManifest(source, match), match.platform);
      reports.push(result.report);
      return result.raw;
    }
    if (this.options.allPlatforms && !keepAttestations) {
      for (const desc of index.manifests.filter((m) => isAttestationManifest(m))) {
        const what = `attestation manifest ${shortDigest(desc.digest)}`;
        this.warn(`${source.description}: leaving out ${what} (it describes the unconverted image)`);
      }
    }

    const children: Descriptor[] = [];
    let changed = entries.length !== index.manifests.length;
    // Platforms go one at a time (their layers still run in parallel) to bound disk and memory.
    for (const desc of entries) {
      this.checkAborted();
      const child = await fetchChildManifest(source, desc);
      const result = await this.transferManifest(child, desc.platform);
      reports.push(result.report);
      await sink.putManifest(result.raw);
      const out: Descriptor = {
        ...desc,
        mediaType: result.raw.mediaType,
        digest: result.raw.digest,
        size: result.raw.bytes.length,
      };
      if (out.digest !== desc.digest || out.mediaType !== desc.mediaType) changed = true;
      children.push(out);
    }
    const anyOci = children.some((c) => !isDockerMediaType(c.mediaType));
    const indexMediaType =
      this.options.oci || (anyOci && isDockerMediaType(sourceRoot.mediaType))
        ? MediaType.ociIndex
        : sourceRoot.mediaType;
    if (!changed && indexMediaType === sourceRoot.mediaType) return sourceRoot;
    return serialize({ ...index, mediaType: indexMediaType, manifests: children }, indexMediaType);
  }

  private async transferManifest(
    raw: RawManifest,
    platform: Platform | undefined,
  ): Promise<{ raw: RawManifest; report: ManifestReport }> {
    const { source, sink } = this.options;
    const where = manifestWhere(source, raw, platform);
    const { platform: label, manifest, configBytes, config } = await resolveManifest(source, raw, platform);
    this.transform.checkManifestMediaType?.(raw.mediaType, this.warn);

    const wanted = requestedPlatforms(this.options);
    if (
      platform === undefined &&
      wanted !== undefined &&
      typeof config?.os === 'string' &&
      typeof config.architecture === 'string'
    ) {
      const own: Platform = {
        os: config.os,
        architecture: config.architecture,
        ...(typeof config.variant === 'string' ? { variant: config.variant } : {}),
      };
      if (!wanted.some((w) => platformMatches(w, own)))
        this.warn(
          `${where}: the image is ${formatPlatform(own)}, not ${wanted.map(formatPlatform).join(', ')} (it has no index to pick from)`,
        );
    }
    const diffIDs = Array.isArray(config?.rootfs?.diff_ids) ? config.rootfs.diff_ids : [];
    if (diffIDs.length !== manifest.layers.length) {
      this.warn(`${where}: config lists ${diffIDs.length} diff_ids for ${manifest.layers.length} layers`);
    }

    const total = manifest.layers.length;
    const layers = await mapBounded(manifest.layers, this.concurrency, async (layer, i) => {
      this.checkAborted();
      try {
        return await this.transferLayer(layer, i, diffIDs[i]);
      } catch (err) {
        if (err instanceof EsgzError && err.code === 'INTERRUPTED') throw err;
        // The first failure decides the outcome: stop the layers still in flight.
        this.stopLayers.abort();
        throw withContext(`layer ${i + 1}/${total} ${shortDigest(layer.digest)}`, err);
      }
    });
    this.checkAborted();

    // Media type family: Docker stays Docker unless --oci, or a layer came out in an OCI-only
    // format (zstd has no Docker media type), which makes the whole manifest OCI.
    const sourceIsDocker = isDockerMediaType(raw.mediaType);
    const ociOnlyLayer = layers.some(
      (l) =>
        l.changed && !isDockerMediaType(l.output.mediaType) && dockerLayerMediaType(l.output.mediaType) === undefined,
    );
    const docker = sourceIsDocker && !this.options.oci && !ociOnlyLayer;
    const familyChanged = sourceIsDocker && !docker;
    const layerDescs: Descriptor[] = layers.map((l, i) => {
      const original = manifest.layers[i]!;
      let mediaType = l.output.mediaType;
      // Transforms name OCI layer types; on a Docker image they take their Docker form.
      if (!docker) mediaType = toOciMediaType(mediaType);
      else mediaType = dockerLayerMediaType(mediaType) ?? mediaType;
      l.output.mediaType = mediaType;
      if (!l.changed) return { ...original, mediaType };
      const desc: Descriptor = { mediaType, digest: l.output.digest, size: l.output.size };
      if (l.annotations && Object.keys(l.annotations).length > 0) desc.annotations = l.annotations;
      return desc;
    });
    const anyLayerChanged = layers.some((l) => l.changed || l.output.mediaType !== l.input.mediaType);

    // Config: rewritten only when a diffID changed; otherwise the exact source bytes are kept.
    const newDiffIDs = layers.map((l, i) => l.diffID ?? diffIDs[i]!);
    const diffIDsChanged = newDiffIDs.length !== diffIDs.length || newDiffIDs.some((d, i) => d !== diffIDs[i]);
    const configOutBytes = diffIDsChanged
      ? Buffer.from(JSON.stringify({ ...config, rootfs: { ...config.rootfs, diff_ids: newDiffIDs } }))
      : configBytes;
    const configMediaType = docker ? manifest.config.mediaType : toOciMediaType(manifest.config.mediaType);
    const configDesc: Descriptor = {
      ...manifest.config,
      mediaType: configMediaType,
      digest: diffIDsChanged ? digestOf(configOutBytes) : manifest.config.digest,
      size: configOutBytes.length,
    };
    await sink.putBlob(configDesc, () => new PassThrough().end(configOutBytes), this.mountHint(!diffIDsChanged));

    let out: RawManifest;
    if (!anyLayerChanged && !diffIDsChanged && !familyChanged && configMediaType === manifest.config.mediaType) {
      out = raw;
    } else {
      const manifestMediaType = docker ? raw.mediaType : toOciMediaType(raw.mediaType);
      out = serialize(
        { ...manifest, mediaType: manifestMediaType, config: configDesc, layers: layerDescs },
        manifestMediaType,
      );
    }
    return {
      raw: out,
      report: {
        ...(label !== undefined ? { platform: label } : {}),
        source: rawSummary(raw),
        output: rawSummary(out),
        config: { source: summary(manifest.config), output: summary(configDesc) },
        layers: layers.map(({ annotations: _annotations, ...report }) => report),
      },
    };
  }

  /** Ends `stream` with INTERRUPTED when the signal fires, so Ctrl-C does not wait for a big blob. */
  private abortable(stream: Readable): Readable {
    const onAbort = (): void => {
      stream.destroy(new EsgzError('INTERRUPTED', 'interrupted'));
    };
    if (this.signal.aborted) onAbort();
    else {
      this.signal.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => this.signal.removeEventListener('abort', onAbort));
    }
    return stream;
  }

  private mountHint(sameBlob: boolean): { mountFrom?: BlobLocation } | undefined {
    return sameBlob && this.mountFrom !== undefined ? { mountFrom: this.mountFrom } : undefined;
  }

  private spoolDir(): Promise<string> {
    this.spoolRoot ??= makeTempDir('spool', this.options.spoolDir);
    return this.spoolRoot;
  }

  /**
   * Sources check a blob's size and digest as it streams, and the digest only at its end. A
   * transform may stop reading early (a tar's end-of-archive blocks, a gzip member followed by
   * more bytes), so whatever it left is read here, bounded by the source (it stops one byte past
   * the descriptor's size): no output is kept from a blob that was not verified to its end.
   */
  private async readToEnd(blob: Readable, layer: Descriptor): Promise<void> {
    if (blob.readableEnded) return;
    if (blob.errored) throw blob.errored;
    if (blob.destroyed) {
      // Closed before its end without an error: verify a fresh copy instead (rare: costs one more read).
      for await (const _chunk of this.abortable(await this.options.source.openBlob(layer))) this.checkAborted();
      return;
    }
    blob.unpipe();
    await new Promise<void>((resolve, reject) => {
      blob.on('data', () => undefined);
      blob.once('end', resolve);
      blob.once('error', reject);
      blob.once('close', () =>
        blob.readableEnded ? resolve() : reject(blob.errored ?? new EsgzError('INTERRUPTED', 'interrupted')),
      );
      blob.resume();
    });
  }

  private async transferLayer(
    layer: Descriptor,
    index: number,
    diffID: string | undefined,
  ): Promise<LayerReport & { annotations?: Record<string, string> }> {
    const { source, sink, progress } = this.options;
    const started = Date.now();
    const id = `layer-${index}-${layer.digest}-${randomBytes(3).toString('hex')}`;
    const label = `layer ${shortDigest(layer.digest)}`;
    progress?.start(id, label, layer.size);
    // A source stream error fails the layer even when the transform never listens for it (an
    // unhandled stream 'error' would otherwise crash the process or leave the transform hanging).
    let failInput: (err: unknown) => void = () => {};
    const inputFailed = new Promise<never>((_resolve, reject) => {
      failInput = reject;
    });
    inputFailed.catch(() => undefined);
    const opened: Readable[] = [];
    const openSource = async (): Promise<Readable> => {
      const blob = await source.openBlob(layer);
      opened.push(blob);
      const stream = this.abortable(counting(blob, (n) => progress?.update(id, n)));
      stream.on('error', (err) => failInput(err));
      return stream;
    };

    const spoolPath = join(await this.spoolDir(), `${index}-${randomBytes(4).toString('hex')}`);
    // Room for a couple of compressed batches, so the transform does not wait on every file write.
    const counter = new DigestCounter({ highWaterMark: SPOOL_BUFFER });
    const file = createWriteStream(spoolPath, { highWaterMark: SPOOL_BUFFER });
    const written = new Promise<void>((resolve, reject) => {
      file.on('finish', resolve);
      file.on('error', reject);
      counter.on('error', reject);
    });
    // Awaited on success only: a write still in flight when a failed layer destroys the file
    // rejects it later, which must not crash the process as an unhandled rejection.
    written.catch(() => undefined);
    counter.pipe(file);
    let result: LayerOutput | 'unchanged';
    try {
      const transformed = this.transform.transform({ descriptor: layer, diffID, open: openSource, index }, counter, {
        signal: this.signal,
        onInputProgress: (n) => progress?.update(id, n),
      });
      result = await Promise.race([inputFailed, untilAborted(transformed, this.signal)]);
      await untilAborted(Promise.all(opened.map((blob) => this.readToEnd(blob, layer))), this.signal);
      if (!counter.writableEnded) counter.end();
      await written;
    } catch (err) {
      counter.destroy();
      file.destroy();
      await rm(spoolPath, { force: true });
      throw err;
    }

    try {
      if (result === 'unchanged') {
        const existed = await sink.hasBlob(layer);
        // Raced like the transform: a sink that misses a destroyed source must not hang the copy.
        if (!existed)
          await Promise.race([
            inputFailed,
            untilAborted(sink.putBlob(layer, openSource, this.mountHint(true)), this.signal),
          ]);
        progress?.finish(id, existed ? 'exists' : 'copied');
        return {
          index,
          input: summary(layer),
          output: summary(layer),
          diffID,
          changed: false,
          existed,
          durationMs: Date.now() - started,
        };
      }
      if (typeof result?.diffID !== 'string' || typeof result.mediaType !== 'string') {
        throw new EsgzError('INTERNAL', `transform ${this.transform.name} returned no mediaType or diffID`);
      }
      const output: Descriptor = { mediaType: result.mediaType, digest: counter.digest, size: counter.size };
      const existed = await sink.hasBlob(output);
      // The spool file was hashed as it was written: a local sink may simply take it over.
      const adopted =
        !existed &&
        (await untilAborted(sink.adoptBlobFile?.(output, spoolPath) ?? Promise.resolve(false), this.signal));
      if (!existed && !adopted)
        await untilAborted(
          sink.putBlob(output, () => createReadStream(spoolPath, { highWaterMark: 1 << 20 })),
          this.signal,
        );
      progress?.finish(id, existed ? 'exists' : 'written');
      return {
        index,
        input: summary(layer),
        output: summary(output),
        diffID: result.diffID,
        changed: true,
        existed,
        ...(result.report !== undefined ? { transform: result.report } : {}),
        annotations: result.annotations,
        durationMs: Date.now() - started,
      };
    } finally {
      await rm(spoolPath, { force: true });
    }
  }
}

/**
 * Copies (and optionally transforms) one image from `source` to `sink`. The sink's `commit`
 * runs last; on any failure the sink is aborted, spool files are removed, and the error says
 * which layer/manifest failed.
 */
export function transferImage(options: TransferOptions): Promise<TransferReport> {
  return new Transfer(options).run();
}
