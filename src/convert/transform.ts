/**
 * Layer transforms for `esgz image convert`: eStargz (gzip), zstd:chunked (same writer, zstd
 * codec) and uncompress (plain tar). Each reads the source layer (tar, tar+gzip or tar+zstd,
 * sniffed), writes the new blob to the output stream (without ending it) and reports media
 * type, annotations and diffID; the pipeline hashes the blob itself.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError, withContext } from '../errors.js';
import { shortDigest } from '../oci/digest.js';
import { openDecompressed, type GzipHelper } from '../image/compression.js';
import { isDockerMediaType, layerCompressionOf, MediaType } from '../oci/media-types.js';
import type { LayerInput, LayerOutput, LayerTransform, TransformContext } from '../image/transform.js';
import type { Codec, CodecName } from '../estargz/codec.js';
import { createCodec } from '../estargz/codecs.js';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/constants.js';
import type { GzipBackend } from '../estargz/gzip-pool.js';
import { EstargzReader, openFileBlobReader } from '../estargz/reader.js';
import type { PriorityItem } from '../estargz/priority.js';
import { writeEstargz, type EstargzWriteResult } from '../estargz/writer.js';

export type LayerFormat = 'estargz' | 'zstdchunked' | 'uncompress';

export interface ChunkedTransformOptions {
  /** gzip: 1-9 (zlib) / 1-12 (libdeflate), default 9; zstd: default 3. */
  compressionLevel?: number;
  chunkSize?: number;
  minChunkSize?: number;
  /** Prioritized files (literal paths or globs), applied to every layer; missing ones are ignored. */
  prioritizedFiles?: PriorityItem[];
  /** Per-layer prioritized files (index = layer position), e.g. from a record file with layer indexes. */
  prioritizedFilesByLayer?: PriorityItem[][];
  /**
   * Per-layer uncompressed tar files already on local disk (index = layer position), written
   * from the verified source blob: the optimizer keeps the ones it unpacked. Such a layer is
   * read from its file, and reordering reads payloads from it by offset (no spool copy).
   */
  tarFilesByLayer?: Array<string | undefined>;
  /** `--estargz-external-toc`: TOCs go to a separate image (see `externalTOCImage`). */
  externalTOC?: boolean;
  /** `--estargz-keep-diff-id` (only with external TOC): the uncompressed tar stays byte-identical. */
  keepDiffID?: boolean;
  /** Keep layers that already are valid eStargz/zstd:chunked blobs of this format. */
  reuse?: boolean;
  /** Compression workers (default: cores, or ESGZ_WORKERS). */
  workers?: number;
  /** Spool directory (priority reordering, --reuse checks). */
  tmpDir?: string;
  /** `--estargz-gzip-helper`: decompress gzip source layers with this command, not in-process. */
  gzipHelper?: GzipHelper;
  /** gzip backend override (default: libdeflate when built, ESGZ_GZIP_BACKEND=zlib forces zlib). */
  gzipBackend?: GzipBackend;
  /** The pipeline converts Docker media types to OCI (`--oci`): no media-type warning then. */
  oci?: boolean;
  /** Called for non-fatal problems (missing prioritized files, ...). */
  warn?(message: string): void;
}

function layerWhere(input: LayerInput): string {
  return `layer ${input.index} (${shortDigest(input.descriptor.digest)})`;
}

/** Layer transform writing eStargz or zstd:chunked with the shared writer. */
export class ChunkedLayerTransform implements LayerTransform {
  readonly name: string;
  private codecPromise: Promise<Codec> | undefined;
  /** External-TOC mode: TOC blob per output layer digest, for the TOC image. */
  readonly externalTOCs = new Map<string, Buffer>();

  constructor(
    readonly codecName: CodecName,
    readonly options: ChunkedTransformOptions = {},
  ) {
    this.name = codecName === 'gzip' ? 'estargz' : 'zstdchunked';
    if (options.keepDiffID && !options.externalTOC) {
      throw new EsgzError('BAD_FLAG', '--estargz-keep-diff-id must be used with --estargz-external-toc');
    }
    if (options.externalTOC && codecName !== 'gzip') {
      throw new EsgzError('BAD_FLAG', '--estargz-external-toc needs --estargz');
    }
  }

  /** The codec (one worker pool shared by every layer of the conversion). */
  codec(): Promise<Codec> {
    this.codecPromise ??= createCodec(this.codecName, {
      compressionLevel: this.options.compressionLevel,
      workers: this.options.workers,
      gzipBackend: this.options.gzipBackend,
      externalTOC: this.options.externalTOC,
    });
    return this.codecPromise;
  }

  prepare(): void {
    // A layer that --reuse keeps needs no compression: workers then start with the first layer
    // that does. Failures surface where codec() is awaited.
    if (!this.options.reuse) this.codec().then((codec) => codec.startWorkers(), () => undefined);
  }

  checkManifestMediaType(mediaType: string, warn: (message: string) => void): void {
    if (!isDockerMediaType(mediaType) || this.options.oci) return;
    if (this.codecName === 'zstd') throw new EsgzError('BAD_FLAG', 'option --zstdchunked must be used in conjunction with --oci');
    warn('option --estargz should be used in conjunction with --oci (eStargz content verification needs OCI media types)');
  }

  async transform(input: LayerInput, output: Writable, context: TransformContext): Promise<LayerOutput | 'unchanged'> {
    const where = layerWhere(input);
    const codec = await this.codec();
    try {
      if (this.options.reuse && (await this.isReusable(input, codec, where))) return 'unchanged';
      const tarFile = this.options.tarFilesByLayer?.[input.index];
      const { stream, compression } = tarFile !== undefined
        ? { stream: createReadStream(tarFile, { highWaterMark: 1 << 20 }), compression: layerCompressionOf(input.descriptor.mediaType) }
        : await openDecompressed(countProgress(await input.open(), context), where, { gzipHelper: this.options.gzipHelper, signal: context.signal });
      const prioritized = this.options.prioritizedFilesByLayer?.[input.index] ?? this.options.prioritizedFiles;
      const started = Date.now();
      // External TOCs are keyed by the layer digest, so hash what we write (the pipeline's own
      // digest is not visible to a transform).
      const hashing = this.options.externalTOC ? new HashingWritable(output) : undefined;
      let result: EstargzWriteResult;
      try {
        result = await writeEstargz(stream, hashing ?? output, {
          codec,
          chunkSize: this.options.chunkSize,
          minChunkSize: this.options.minChunkSize,
          prioritizedFiles: prioritized,
          where,
          tmpDir: this.options.tmpDir,
          signal: context.signal,
          lossless: this.options.keepDiffID,
          ...(tarFile !== undefined ? { tarFile } : {}),
        });
      } finally {
        // With prioritized files the writer reads a tar file by offset, not through the stream.
        if (tarFile !== undefined) stream.destroy();
      }
      // With one list for every layer (ctr-remote's record-in), most names live in other layers:
      // ctr-remote ignores them silently. A per-layer list that misses is worth a warning.
      if (result.missedPrioritizedFiles.length > 0 && this.options.prioritizedFilesByLayer) {
        this.options.warn?.(`${where}: ${result.missedPrioritizedFiles.length} prioritized file(s) not in the layer: ${result.missedPrioritizedFiles.slice(0, 5).join(', ')}`);
      }
      if (hashing) {
        await hashing.flushed();
        if (result.externalTOC) this.externalTOCs.set(hashing.digest(), result.externalTOC);
      }
      const seconds = (Date.now() - started) / 1000;
      const mediaType = codec.name === 'gzip'
        ? (isDockerMediaType(input.descriptor.mediaType) ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip)
        : codec.mediaType;
      return {
        mediaType,
        annotations: {
          ...result.codecAnnotations,
          [TOC_DIGEST_ANNOTATION]: result.tocDigest,
          [UNCOMPRESSED_SIZE_ANNOTATION]: String(result.uncompressedSize),
        },
        diffID: result.diffID,
        report: {
          format: this.name,
          backend: codec.backend,
          inputCompression: compression,
          inputSize: input.descriptor.size,
          outputSize: result.compressedSize,
          uncompressedSize: result.uncompressedSize,
          tocDigest: result.tocDigest,
          entries: result.entryCount,
          members: result.memberCount,
          seconds,
          mibPerSecond: seconds > 0 ? Number((result.uncompressedSize / (1 << 20) / seconds).toFixed(1)) : undefined,
          missedPrioritizedFiles: result.missedPrioritizedFiles.length,
        },
      };
    } catch (err) {
      // Writer errors already start with the layer's name; others get it here.
      if (err instanceof EsgzError && err.message.startsWith(where)) throw err;
      throw withContext(`converting ${where}`, err);
    }
  }

  /**
   * A layer is reusable when it already is a valid blob of this format: footer found by this
   * codec, TOC parses, and the TOC digest matches the descriptor annotation when there is one.
   * Needs random access, so the blob is spooled to a temporary file first.
   */
  private async isReusable(input: LayerInput, codec: Codec, where: string): Promise<boolean> {
    const annotated = input.descriptor.annotations?.[TOC_DIGEST_ANNOTATION];
    if (!annotated && codec.name === 'gzip') return false; // plain gzip layers: no need to spool
    const dir = await makeTempDir('reuse', this.options.tmpDir);
    try {
      const path = join(dir, 'blob');
      await pipeline(await input.open(), createWriteStream(path));
      const blob = await openFileBlobReader(path);
      try {
        const reader = await EstargzReader.open(blob, { codecs: [codec], expectedTOCDigest: annotated, where });
        return reader.codec.name === codec.name;
      } catch (err) {
        if (err instanceof EsgzError && (err.code === 'BAD_FORMAT' || err.code === 'DIGEST_MISMATCH')) return false;
        throw err;
      } finally {
        await blob.close();
      }
    } finally {
      await removeTempDir(dir);
    }
  }

  /** Stops the compression workers (idle workers never keep the process alive anyway). */
  async close(): Promise<void> {
    const codec = await this.codecPromise?.catch(() => undefined);
    this.codecPromise = undefined;
    await codec?.close();
  }
}

/** Forwards writes to `target` (with its backpressure) while hashing them. */
class HashingWritable extends Writable {
  private readonly hash = createHash('sha256');
  constructor(private readonly target: Writable) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.hash.update(chunk);
    if (this.target.write(chunk)) {
      callback();
      return;
    }
    const onDrain = () => {
      this.target.off('error', onError);
      callback();
    };
    const onError = (err: Error) => {
      this.target.off('drain', onDrain);
      callback(err);
    };
    this.target.once('drain', onDrain);
    this.target.once('error', onError);
  }

  /** Waits until every accepted write reached the target (does not end the target). */
  flushed(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.once('error', reject);
      this.end(() => resolve());
    });
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** `--uncompress`: writes the layer's plain tar. */
export class UncompressLayerTransform implements LayerTransform {
  readonly name = 'uncompress';

  constructor(readonly options: Pick<ChunkedTransformOptions, 'gzipHelper'> = {}) {}

  async transform(input: LayerInput, output: Writable, context: TransformContext): Promise<LayerOutput | 'unchanged'> {
    const where = layerWhere(input);
    try {
      const { stream, compression } = await openDecompressed(countProgress(await input.open(), context), where, { gzipHelper: this.options.gzipHelper, signal: context.signal });
      if (compression === 'none' && !input.descriptor.annotations?.[TOC_DIGEST_ANNOTATION]) return drainUnchanged(stream);
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        context.signal.throwIfAborted();
        hash.update(chunk);
        size += chunk.length;
        if (!output.write(chunk)) await new Promise<void>((resolve, reject) => {
          output.once('drain', resolve);
          output.once('error', reject);
        });
      }
      return {
        mediaType: isDockerMediaType(input.descriptor.mediaType) ? MediaType.dockerLayer : MediaType.ociLayer,
        annotations: {},
        diffID: `sha256:${hash.digest('hex')}`,
        report: { format: 'uncompress', inputCompression: compression, inputSize: input.descriptor.size, outputSize: size },
      };
    } catch (err) {
      throw withContext(`uncompressing ${where}`, err);
    }
  }
}

/** An already-uncompressed layer stays as it is (its stream is consumed so digests get checked). */
async function drainUnchanged(stream: Readable): Promise<'unchanged'> {
  stream.resume();
  await new Promise<void>((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('error', reject);
  });
  return 'unchanged';
}

function countProgress(source: Readable, context: TransformContext): Readable {
  const report = context.onInputProgress;
  if (!report) return source;
  let total = 0;
  // A counting Transform (not a 'data' listener) so the stream stays paused for sniffing.
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      total += chunk.length;
      report(total);
      callback(null, chunk);
    },
  });
  source.on('error', (err) => counter.destroy(err));
  return source.pipe(counter);
}

/** Picks the transform for a target format. */
export function createLayerTransform(format: LayerFormat, options: ChunkedTransformOptions = {}): LayerTransform & { close?(): Promise<void> } {
  switch (format) {
    case 'estargz':
      return new ChunkedLayerTransform('gzip', options);
    case 'zstdchunked':
      return new ChunkedLayerTransform('zstd', { ...options });
    case 'uncompress':
      return new UncompressLayerTransform(options);
    default:
      throw new EsgzError('BAD_FLAG', `unknown layer format ${String(format)}`);
  }
}

