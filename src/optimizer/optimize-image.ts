import type { Writable } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError } from '../errors.js';
import {
  createConversionPool,
  createLayerTransform,
  type ChunkedTransformOptions,
  type ConversionTransform,
  type SharedCompressor,
} from '../convert/transform.js';
import type { MemberPool } from '../estargz/member-pool.js';
import { writeExternalTOCImage } from '../convert/external-toc.js';
import type { PriorityItem } from '../estargz/priority.js';
import { PREFETCH_LANDMARK } from '../estargz/constants.js';
import { EstargzReader } from '../estargz/reader.js';
import { sourceBlobReader } from '../convert/source-reader.js';
import { transferImage, type TransferProgress, type TransferReport } from '../image/pipeline.js';
import { choosePlatformManifests, fetchChildManifest, fetchImageRoot } from '../image/resolve.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import type { LayerInput, LayerTransform, TransformContext } from '../image/transform.js';
import type { Descriptor, Platform, RawManifest } from '../oci/types.js';
import type { ImageSink, ImageSource } from '../image/types.js';
import type { RunOptions } from '../runtime/spec.js';
import { CachingSource } from './blob-cache.js';
import { profileImage, type ImageProfile } from './image-profile.js';
import { writeRecordFile } from './record.js';
import { MemberPrecompute, MemoizingCompressor } from './member-memo.js';

export interface OptimizeImageOptions {
  source: ImageSource;
  sink: ImageSink;
  format: 'estargz' | 'zstdchunked';
  /** eStargz/zstd:chunked writer options (levels, chunk sizes, reuse, workers). */
  convert: ChunkedTransformOptions;
  platform?: Platform;
  /** Several platforms (`--platform a,b`): the runnable one is profiled, the others only converted. */
  platforms?: Platform[];
  allPlatforms?: boolean;
  /** One platform from an index stays a one-entry index (PlatformChoice.keepIndex). */
  keepIndex?: boolean;
  oci?: boolean;
  /**
   * Where unpacked layers, spooled outputs and cached blobs go (default: the OS temp dir, which
   * honours TMPDIR). A tmpfs such as /dev/shm makes profiling several times faster when the
   * unpacked image fits in memory.
   */
  tempDir?: string;
  /** Keep the profiled layers' blobs locally between unpacking and conversion (remote sources). */
  cacheBlobs?: boolean;
  /** Layers converted at once (the pipeline's default when unset). */
  concurrency?: number;
  /**
   * Compress the profiled layers while the workload runs, so the conversion only reorders
   * (default true; off only to compare against, the output is the same).
   */
  compressAhead?: boolean;
  /** Convert without running the workload (`--no-optimize`). */
  noOptimize?: boolean;
  /** Files added to every layer's prioritized files (`--prefetch-list`; globs allowed). */
  prefetchList?: PriorityItem[];
  /** `--record-out`: the trace in ctr-remote's record format. */
  recordOut?: string;
  run: RunOptions;
  /** Host programs and work space of the profile (the CLI's ESGZ_RUNC, ESGZ_FANOTIFY_BIN, ESGZ_TMPFS). */
  host?: { runc?: string; tracerBinary?: string; tmpfs?: string | false };
  periodSeconds?: number;
  waitOnLine?: string;
  waitOnSignal?: boolean;
  stdin?: boolean;
  /** Ctrl-C: stops the workload (normal end with waitOnSignal), else aborts everything. */
  runSignal?: AbortSignal;
  /** Aborts the conversion and upload. */
  signal?: AbortSignal;
  workloadStdout?: Writable;
  workloadStderr?: Writable;
  progress?: TransferProgress;
  /** Opens the written image for reading, to report where each layer's landmark landed. */
  reopenTarget?(): Promise<ImageSource>;
  /** With `convert.externalTOC`: where the TOC image goes (ctr-remote: the target's tag + "-esgztoc"). */
  openTocSink?(): Promise<{ sink: ImageSink; reference: string }>;
  onWarning?(message: string): void;
  onStage?(stage: string): void;
}

export interface OptimizeLayerReport {
  index: number;
  digest: string;
  /** Traced files this layer provides, in access order (its prioritized files). */
  prioritizedFiles: number;
  prioritizedBytes: number;
  outputDigest?: string;
  outputSize?: number;
  /** Prioritized names the writer did not find in the layer. */
  missedPrioritizedFiles?: number;
  /** Offset of `.prefetch.landmark` in the output blob, when the writer reports it. */
  landmarkOffset?: number;
}

export interface OptimizeReport {
  transfer: TransferReport;
  /** The profiled platform manifest, when a workload ran. */
  profiled?: {
    platform: string;
    manifestDigest: string;
    args: string[];
    stopReason: string;
    exitCode: number | undefined;
    durationMs: number;
    rootfsMode: 'overlay' | 'merged';
    /** Image files prioritized from the trace (the workload's and the runtime's setup reads). */
    filesTraced: number;
    bytesTraced: number;
    /**
     * The files among them that only the runtime read, while setting up the container before the
     * workload's first exec (runc reads /etc/passwd and /etc/group): prioritized after the
     * workload's own files, before the landmark, so starting the container needs no extra fetch.
     */
    runtimeFiles: string[];
    /** Share of the traced files that landed in a prefetch range (before the landmark). */
    prefetchCoverage: number;
    layers: OptimizeLayerReport[];
  };
  /** Platforms converted without running (other architectures). */
  notProfiled: string[];
  recordOut?: string;
  /** The TOC image written with --estargz-external-toc. */
  tocImage?: { reference: string; digest: string };
  /** Wall time of the stages: profileMs (unpack, run, trace), convertMs (convert and push). */
  timings: Record<string, number>;
  /**
   * With compression ahead of the profile: members taken from the spill file instead of being
   * compressed (`reused`), members compressed (ahead or during the conversion), the spill file's size.
   */
  compressedAhead?: { reused: number; compressed: number; spilledBytes: number };
}

/**
 * `esgz image optimize`: profiles the workload of the platform that runs on this machine, then
 * converts every selected platform with each layer's accessed files first (prefetch range before
 * the landmark), like ctr-remote's optimize but with runc instead of containerd.
 */
export async function optimizeImage(options: OptimizeImageOptions): Promise<OptimizeReport> {
  const warn = options.onWarning ?? (() => undefined);
  // Removals of unpacked layers that overlap the conversion; all awaited before returning.
  const cleanups: Array<Promise<void>> = [];
  let source: ImageSource = options.source;
  try {
    const { toProfile, others } = options.noOptimize
      ? { toProfile: undefined, others: [] }
      : await pickManifestToProfile(options);
    // The conversion reads a profiled layer from the source again when it cannot use the tar the
    // profile kept (a layer the workload did not touch): for a remote source, keep a local copy.
    if (toProfile && options.cacheBlobs) {
      source = new CachingSource(options.source, {
        digests: layerDigests(toProfile.manifest),
        ...(options.tempDir ? { tempRoot: options.tempDir } : {}),
      });
    }
    return await profileAndConvert(options, { warn, cleanups, source, toProfile, others });
  } finally {
    if (source instanceof CachingSource) await source.close();
    await Promise.all(cleanups);
  }
}

interface ProfileContext {
  warn: (message: string) => void;
  cleanups: Array<Promise<void>>;
  source: ImageSource;
  toProfile: { manifest: RawManifest; platform: string } | undefined;
  others: string[];
}

async function profileAndConvert(options: OptimizeImageOptions, context: ProfileContext): Promise<OptimizeReport> {
  // The layer tars the profile unpacks are kept for the conversion, which then reads them from
  // disk by offset instead of reading, checking and decompressing the blobs a second time.
  const tarDir = context.toProfile ? await makeTempDir('layers', options.convert.tmpDir ?? options.tempDir) : undefined;
  // One compression pool for the whole run: the head start while profiling, then the writers.
  const pool = createConversionPool(options.format, options.convert);
  let ahead: CompressAhead | undefined;
  try {
    ahead = tarDir ? await compressAhead(options, pool, tarDir, context.warn) : undefined;
    const report = await convertProfiled(options, context, tarDir, { compressor: ahead?.memo ?? pool, ahead });
    if (!ahead) return report;
    const { hits, misses, spilledBytes } = ahead.memo;
    return { ...report, compressedAhead: { reused: hits, compressed: misses, spilledBytes } };
  } finally {
    await ahead?.precompute.stop();
    await ahead?.memo.close();
    await pool.close();
    if (tarDir) await removeTempDir(tarDir);
  }
}

interface CompressAhead {
  memo: MemoizingCompressor;
  precompute: MemberPrecompute;
}

/**
 * Compresses the profiled layers while the workload runs (see member-memo.ts), unless the
 * conversion might keep layers as they are (--reuse) or keeps raw tar headers (lossless), where
 * the members of the plain order are not the ones written.
 */
async function compressAhead(
  options: OptimizeImageOptions,
  pool: MemberPool,
  tarDir: string,
  warn: (message: string) => void,
): Promise<CompressAhead | undefined> {
  if (options.compressAhead === false || options.convert.reuse || options.convert.keepDiffID) return undefined;
  pool.start();
  const memo = await MemoizingCompressor.create(pool, tarDir);
  return { memo, precompute: new MemberPrecompute(memo, options.format, options.convert, warn) };
}

async function convertProfiled(
  options: OptimizeImageOptions,
  context: ProfileContext,
  tarDir: string | undefined,
  compression: { compressor: SharedCompressor; ahead: CompressAhead | undefined },
): Promise<OptimizeReport> {
  const { warn, cleanups, source, toProfile, others } = context;
  const { compressor, ahead } = compression;
  const timings: Record<string, number> = {};
  let stageStart = Date.now();
  let profile: ImageProfile | undefined;
  if (toProfile) {
    options.onStage?.('profile');
    profile = await profileImage(source, toProfile.manifest, {
      ...(tarDir ? { keepTarsIn: tarDir } : {}),
      ...(ahead ? { onLayerTar: (layer: Descriptor, path: string) => ahead.precompute.add(layer.digest, path) } : {}),
      ...options.host,
      run: options.run,
      periodSeconds: options.periodSeconds,
      waitOnLine: options.waitOnLine,
      waitOnSignal: options.waitOnSignal,
      stdin: options.stdin,
      signal: options.runSignal,
      stdout: options.workloadStdout,
      stderr: options.workloadStderr,
      onWarning: warn,
      onStage: options.onStage,
      backgroundCleanup: (removal) => cleanups.push(removal),
      ...(options.tempDir ? { tempRoot: options.tempDir } : {}),
    });
    timings.profileMs = Date.now() - stageStart;
    stageStart = Date.now();
    if (profile.files.length === profile.runtimeFiles) {
      warn(
        `the workload touched no file of the image: ${profile.runtimeFiles > 0 ? "only the runtime's setup reads are prioritized" : 'nothing is prioritized'}`,
      );
    }
  }
  for (const p of others)
    warn(`${p}: not runnable on this machine (${formatPlatform(hostPlatform())}); converted without optimization`);
  if (options.recordOut) {
    if (!profile)
      throw new EsgzError(
        'BAD_FLAG',
        'a record file needs a workload run (profiling on, and a platform this machine can run)',
      );
    await writeRecordFile(options.recordOut, profile.record);
  }

  const convert =
    options.tempDir && !options.convert.tmpDir ? { ...options.convert, tmpDir: options.tempDir } : options.convert;
  const transform = new OptimizeTransform(options.format, convert, profile, options.prefetchList ?? [], {
    compressor,
    ...(ahead ? { precompute: ahead.precompute } : {}),
  });
  let transfer: TransferReport;
  try {
    options.onStage?.('convert');
    transfer = await transferImage({
      source,
      sink: options.sink,
      transform,
      platform: options.platform,
      ...(options.platforms ? { platforms: options.platforms } : {}),
      allPlatforms: options.allPlatforms,
      keepIndex: options.keepIndex,
      oci: options.oci,
      ...(options.concurrency ? { concurrency: options.concurrency } : {}),
      ...(options.tempDir ? { spoolDir: options.tempDir } : {}),
      signal: options.signal,
      progress: options.progress,
      onWarning: warn,
    });
  } finally {
    await transform.close();
  }
  let tocImage: OptimizeReport['tocImage'];
  if (options.convert.externalTOC) {
    if (!options.openTocSink) throw new EsgzError('INTERNAL', 'external TOCs need a destination for the TOC image');
    const { sink, reference } = await options.openTocSink();
    const root = await writeExternalTOCImage(sink, transform.externalTOCs());
    tocImage = { reference, digest: root.digest };
  }
  timings.convertMs = Date.now() - stageStart;
  const profiled = profile ? profiledReport(profile, transfer, toProfile!.platform) : undefined;
  if (profiled && options.reopenTarget)
    await addLandmarkOffsets(profiled, transfer, options.reopenTarget, transform.externalTOCs(), warn);
  return {
    transfer,
    profiled,
    notProfiled: others,
    recordOut: options.recordOut,
    ...(tocImage ? { tocImage } : {}),
    timings,
  };
}

/**
 * Reads each profiled layer's TOC back from the written image (footer and TOC only, ranged
 * reads) and records the blob offset of `.prefetch.landmark`: the bytes before it are the
 * prefetch range a lazy puller fetches first.
 */
async function addLandmarkOffsets(
  profiled: NonNullable<OptimizeReport['profiled']>,
  transfer: TransferReport,
  reopenTarget: () => Promise<ImageSource>,
  externalTOCs: Map<string, Buffer>,
  warn: (message: string) => void,
): Promise<void> {
  const manifest = transfer.manifests.find((m) => m.source.digest === profiled.manifestDigest);
  if (!manifest) return;
  let target: ImageSource | undefined;
  try {
    target = await reopenTarget();
    for (const layer of profiled.layers) {
      const written = manifest.layers.find((l) => l.index === layer.index);
      if (!written || layer.prioritizedFiles === 0) continue;
      const externalTOC = externalTOCs.get(written.output.digest);
      const reader = await EstargzReader.open(sourceBlobReader(target, written.output), {
        where: `layer ${layer.index}`,
        ...(externalTOC ? { externalTOC } : {}),
      });
      const landmark = reader.toc.entries.find((e) => e.name === PREFETCH_LANDMARK);
      if (landmark?.offset !== undefined) layer.landmarkOffset = landmark.offset;
    }
  } catch (err) {
    warn(`could not read the written layers back to report landmark offsets: ${(err as Error).message}`);
  } finally {
    await target?.close();
  }
}

/** The manifest this machine can run among those the transfer will convert, and the others. */
async function pickManifestToProfile(
  options: OptimizeImageOptions,
): Promise<{ toProfile?: { manifest: RawManifest; platform: string }; others: string[] }> {
  const root = await fetchImageRoot(options.source);
  const host = hostPlatform();
  if (root.kind === 'manifest') {
    // A single manifest: profileWorkload checks the config's platform and says why it cannot run.
    return { toProfile: { manifest: root.raw, platform: formatPlatform(host) }, others: [] };
  }
  // The same choice the transfer makes, so the profiled manifest is one that gets converted.
  const chosen = choosePlatformManifests(root.index, options, options.source.description);
  const selected = chosen.filter((d) => d.platform !== undefined);
  const runnable = selected.find((d) => platformMatches(host, d.platform!));
  const others = selected.filter((d) => d !== runnable).map((d) => formatPlatform(d.platform!));
  if (!runnable) {
    throw new EsgzError(
      'UNSUPPORTED',
      `none of the selected platforms (${others.join(', ')}) runs on this machine (${formatPlatform(host)}): the workload cannot be profiled here`,
    );
  }
  const manifest = await fetchChildManifest(options.source, runnable);
  return { toProfile: { manifest, platform: formatPlatform(runnable.platform!) }, others };
}

function layerDigests(manifest: RawManifest): Set<string> {
  try {
    const parsed = JSON.parse(manifest.bytes.toString('utf8')) as { layers?: Descriptor[] };
    return new Set((parsed.layers ?? []).map((l) => l.digest));
  } catch {
    return new Set();
  }
}

/**
 * Picks the prioritized files for each layer: the profiled manifest's layers (matched by digest
 * and position) get their traced files (the workload's, then the runtime's setup reads) followed
 * by the prefetch list, every other layer only the prefetch list. Layers with
 * traced files are always rewritten, even with --reuse (their order must change), as ctr-remote does.
 */
class OptimizeTransform implements LayerTransform {
  readonly name: string;
  /** One compressor for both writers (the caller's pool, or the memo around it): threads never exceed its size. */
  private readonly pool: SharedCompressor;
  private readonly precompute: MemberPrecompute | undefined;
  private readonly traced: ConversionTransform;
  private readonly untraced: ConversionTransform;

  constructor(
    format: 'estargz' | 'zstdchunked',
    private readonly convert: ChunkedTransformOptions,
    private readonly profile: ImageProfile | undefined,
    prefetchList: PriorityItem[],
    compression: { compressor: SharedCompressor; precompute?: MemberPrecompute },
  ) {
    this.name = format;
    const perLayer = (profile?.perLayer ?? []).map((files) => [...files, ...prefetchList]);
    this.pool = compression.compressor;
    this.precompute = compression.precompute;
    const tracedOptions = {
      ...convert,
      reuse: false,
      prioritizedFilesByLayer: perLayer,
      tarFilesByLayer: profile?.tarFiles ?? [],
    };
    this.traced = createLayerTransform(format, tracedOptions, this.pool);
    const untracedOptions = { ...convert, ...(prefetchList.length > 0 ? { prioritizedFiles: prefetchList } : {}) };
    this.untraced = createLayerTransform(format, untracedOptions, this.pool);
  }

  prepare(): void {
    // As convert does, the workers start with the transfer, unless reuse may keep every layer
    // (traced layers are always rewritten).
    const traced = this.profile?.perLayer.some((files) => files.length > 0) ?? false;
    if (!this.convert.reuse || traced) this.pool.start();
  }

  checkManifestMediaType(mediaType: string, warn: (message: string) => void): void {
    this.untraced.checkManifestMediaType?.(mediaType, warn);
  }

  async transform(input: LayerInput, output: Writable, context: TransformContext) {
    const profiledLayer = this.profile?.layers[input.index];
    const traced =
      profiledLayer !== undefined &&
      profiledLayer.digest === input.descriptor.digest &&
      (this.profile!.perLayer[input.index]?.length ?? 0) > 0;
    // The members compressed ahead serve this layer once they are all there.
    await this.precompute?.settled(input.descriptor.digest);
    return (traced ? this.traced : this.untraced).transform(input, output, context);
  }

  /** External TOCs both writers produced, by output layer digest (for the TOC image). */
  externalTOCs(): Map<string, Buffer> {
    return new Map([...this.traced.externalTOCs(), ...this.untraced.externalTOCs()]);
  }

  async close(): Promise<void> {
    await Promise.all([this.traced.close(), this.untraced.close()]);
  }
}

function profiledReport(
  profile: ImageProfile,
  transfer: TransferReport,
  platform: string,
): NonNullable<OptimizeReport['profiled']> {
  const manifest = transfer.manifests.find((m) => m.source.digest === profile.manifestDigest);
  const layers: OptimizeLayerReport[] = profile.layers.map((desc, index) => {
    const files = profile.files.filter((f) => f.layerIndex === index);
    const out = manifest?.layers.find((l) => l.index === index);
    const report = out?.transform ?? {};
    return {
      index,
      digest: desc.digest,
      prioritizedFiles: files.length,
      prioritizedBytes: files.reduce((sum, f) => sum + f.size, 0),
      ...(out ? { outputDigest: out.output.digest, outputSize: out.output.size } : {}),
      ...(typeof report.missedPrioritizedFiles === 'number'
        ? { missedPrioritizedFiles: report.missedPrioritizedFiles }
        : {}),
      ...(typeof report.landmarkOffset === 'number' ? { landmarkOffset: report.landmarkOffset } : {}),
    };
  });
  const bytesTraced = profile.files.reduce((sum, f) => sum + f.size, 0);
  // A traced file the writer could not place (missed) is the only way a read falls outside the prefetch range.
  const missed = layers.reduce((sum, l) => sum + (l.missedPrioritizedFiles ?? 0), 0);
  const filesTraced = profile.files.length;
  return {
    platform,
    manifestDigest: profile.manifestDigest,
    args: profile.args,
    stopReason: profile.stopReason,
    exitCode: profile.exitCode,
    durationMs: profile.durationMs,
    rootfsMode: profile.rootfsMode,
    filesTraced,
    bytesTraced,
    runtimeFiles: profile.files.filter((f) => f.origin === 'runtime').map((f) => f.path),
    prefetchCoverage: filesTraced === 0 ? 0 : (filesTraced - Math.min(missed, filesTraced)) / filesTraced,
    layers,
  };
}
