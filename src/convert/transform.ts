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
import {
  DEFAULT_PLAIN_ZSTD_LEVEL,
  openDecompressed,
  ZstdStreamCompressor,
  type GzipHelper,
} from '../image/compression.js';
import { isDockerMediaType, layerCompressionOf, MediaType } from '../oci/media-types.js';
import type { LayerInput, LayerOutput, LayerTransform, TransformContext } from '../image/transform.js';
import type { Codec, CodecName, MemberCompressor } from '../estargz/codec.js';
import { createCodec, createMemberPool } from '../estargz/codecs.js';
import type { MemberPool } from '../estargz/member-pool.js';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/constants.js';
import type { WritableDialect } from '../estargz/zstdchunked/dialect.js';
import type { GzipBackendChoice } from '../estargz/gzip-pool.js';
import { EstargzReader, openFileBlobReader } from '../estargz/reader.js';
import type { PriorityItem } from '../estargz/priority.js';
import { writeEstargz, type EstargzWriteResult } from '../estargz/writer.js';

export type LayerFormat = 'estargz' | 'zstdchunked' | 'uncompress' | 'zstd';
/** The formats written with the chunked writer (TOC, chunks, landmark). */
export type ChunkedFormat = Exclude<LayerFormat, 'uncompress' | 'zstd'>;

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
  /** eStargz: TOCs go to a separate image (see `externalTOCImage`). */
  externalTOC?: boolean;
  /** Only with `externalTOC`: the uncompressed tar stays byte-identical (lossless writer mode). */
  keepDiffID?: boolean;
  /** Keep layers that already are valid eStargz/zstd:chunked blobs of this format. */
  reuse?: boolean;
  /** Compression worker threads (default: one per core). */
  workers?: number;
  /** Spool directory (priority reordering, reuse checks). */
  tmpDir?: string;
  /** Decompress gzip source layers with this command, not in-process. */
  gzipHelper?: GzipHelper;
  /** gzip compressor (default 'auto': libdeflate when it loads, else zlib). */
  gzipBackend?: GzipBackendChoice;
  /** zstd:chunked: also write containers/storage's `io.github.containers.zstd-chunked.*` annotations. */
  containersStorageAnnotations?: boolean;
  /** zstd:chunked: whose layout to write (default 'stargz', as ctr-remote). */
  zstdChunkedDialect?: WritableDialect;
  /** The pipeline converts Docker media types to OCI: no media-type warning then. */
  oci?: boolean;
  /** Called for non-fatal problems (missing prioritized files, ...). */
  warn?(message: string): void;
}

function layerWhere(input: LayerInput): string {
  return `layer ${input.index} (${shortDigest(input.descriptor.digest)})`;
}

/**
 * The layer transform an esgz conversion returns: what the command reads after the transfer is
 * typed here, not reached through casts.
 */
export interface ConversionTransform extends LayerTransform {
  /** The compressor implementation ('libdeflate', 'zlib', 'zstd-napi'), when the format compresses. */
  readonly backend: string | undefined;
  /** External-TOC mode: the TOC blob of each layer written, by the layer's digest (else empty). */
  externalTOCs(): Map<string, Buffer>;
  /** Stops the compression workers the conversion owns (idle workers never keep the process alive). */
  close(): Promise<void>;
}

/**
 * A member compressor several transforms of one conversion share (a conversion pool, or the
 * optimizer's memoizing wrapper around one): its owner starts and closes it.
 */
export type SharedCompressor = MemberCompressor & { start(): void };

/** The codec of a chunked layer format. */
function codecNameOf(format: ChunkedFormat): CodecName {
  return format === 'estargz' ? 'gzip' : 'zstd';
}

/**
 * The compression worker pool of one conversion, from its options (level, workers, gzip backend
 * checked now). No thread starts until the conversion starts it or sends the first batch. The
 * caller owns it: hand it to every transform of the conversion and close it once at the end.
 */
export function createConversionPool(format: ChunkedFormat, options: ChunkedTransformOptions = {}): MemberPool {
  const { compressionLevel, workers, gzipBackend } = options;
  return createMemberPool(codecNameOf(format), { compressionLevel, workers, gzipBackend });
}

/** Layer transform writing eStargz or zstd:chunked with the shared writer. */
export class ChunkedLayerTransform implements ConversionTransform {
  readonly name: string;
  /** The format: footer, TOC encoding, media type. */
  readonly codec: Codec;
  /** External-TOC mode: TOC blob per output layer digest, for the TOC image. */
  private readonly tocs = new Map<string, Buffer>();
  /** What compresses members: the shared compressor, or a pool of its own. */
  private readonly pool: SharedCompressor;
  /** The pool this transform created, which `close` stops. */
  private readonly ownPool: MemberPool | undefined;

  /** `pool`: a compressor shared with other transforms of the same conversion (its owner closes it). */
  constructor(
    format: ChunkedFormat,
    readonly options: ChunkedTransformOptions = {},
    pool?: SharedCompressor,
  ) {
    this.name = format;
    const { externalTOC, containersStorageAnnotations, zstdChunkedDialect } = options;
    if (options.keepDiffID && !externalTOC)
      throw new EsgzError('BAD_FLAG', 'keeping the diffID needs the external-TOC mode');
    if (externalTOC && format !== 'estargz')
      throw new EsgzError('BAD_FLAG', 'an external TOC needs the eStargz format');
    this.codec = createCodec(codecNameOf(format), { externalTOC, containersStorageAnnotations, zstdChunkedDialect });
    this.ownPool = pool === undefined ? createConversionPool(format, options) : undefined;
    this.pool = pool ?? this.ownPool!;
  }

  get backend(): string {
    return this.pool.backend;
  }

  externalTOCs(): Map<string, Buffer> {
    return new Map(this.tocs);
  }

  prepare(): void {
    // A layer that reuse keeps needs no compression: workers then start with the first batch.
    if (!this.options.reuse) this.pool.start();
  }

  checkManifestMediaType(mediaType: string, warn: (message: string) => void): void {
    if (!isDockerMediaType(mediaType) || this.options.oci) return;
    if (this.codec.name === 'zstd') {
      throw new EsgzError(
        'BAD_FLAG',
        'zstd:chunked needs OCI media types: this image has Docker ones and the oci option is off',
      );
    }
    warn(
      'option --estargz should be used in conjunction with --oci (eStargz content verification needs OCI media types)',
    );
  }

  async transform(input: LayerInput, output: Writable, context: TransformContext): Promise<LayerOutput | 'unchanged'> {
    const where = layerWhere(input);
    const { codec } = this;
    try {
      if (this.options.reuse && (await this.isReusable(input, codec, where))) return 'unchanged';
      const tarFile = this.options.tarFilesByLayer?.[input.index];
      const { stream, compression } =
        tarFile !== undefined
          ? {
              stream: createReadStream(tarFile, { highWaterMark: 1 << 20 }),
              compression: layerCompressionOf(input.descriptor.mediaType),
            }
          : await openDecompressed(countProgress(await input.open(), context), where, {
              gzipHelper: this.options.gzipHelper,
              signal: context.signal,
            });
      const prioritized = this.options.prioritizedFilesByLayer?.[input.index] ?? this.options.prioritizedFiles;
      const started = Date.now();
      // External TOCs are keyed by the layer digest, so hash what we write (the pipeline's own
      // digest is not visible to a transform).
      const hashing = this.options.externalTOC ? new HashingWritable(output) : undefined;
      let result: EstargzWriteResult;
      try {
        result = await writeEstargz(stream, hashing ?? output, {
          codec,
          compressor: this.pool,
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
        this.options.warn?.(
          `${where}: ${result.missedPrioritizedFiles.length} prioritized file(s) not in the layer: ${result.missedPrioritizedFiles.slice(0, 5).join(', ')}`,
        );
      }
      if (hashing) {
        await hashing.flushed();
        if (result.externalTOC) this.tocs.set(hashing.digest(), result.externalTOC);
      }
      const seconds = (Date.now() - started) / 1000;
      const mediaType =
        codec.name === 'gzip'
          ? isDockerMediaType(input.descriptor.mediaType)
            ? MediaType.dockerLayerGzip
            : MediaType.ociLayerGzip
          : codec.mediaType;
      return {
        mediaType,
        annotations: {
          ...result.codecAnnotations,
          ...(codec.tocDigestAnnotation === false ? {} : { [TOC_DIGEST_ANNOTATION]: result.tocDigest }),
          [UNCOMPRESSED_SIZE_ANNOTATION]: String(result.uncompressedSize),
        },
        diffID: result.diffID,
        report: {
          format: this.name,
          backend: this.pool.backend,
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

  async close(): Promise<void> {
    await this.ownPool?.close();
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

/**
 * The plain formats: `uncompress` writes the layer's tar, `zstd` (nerdctl's `--zstd`) the tar as
 * one zstd frame. A layer already in the format (and no eStargz / zstd:chunked, whose TOC
 * annotation says so) stays as it is.
 */
export class PlainLayerTransform implements ConversionTransform {
  readonly backend = undefined;

  constructor(
    readonly name: 'uncompress' | 'zstd',
    readonly options: Pick<ChunkedTransformOptions, 'gzipHelper' | 'compressionLevel'> = {},
  ) {}

  async transform(input: LayerInput, output: Writable, context: TransformContext): Promise<LayerOutput | 'unchanged'> {
    const where = layerWhere(input);
    const target = this.name === 'zstd' ? 'zstd' : 'none';
    try {
      const { stream, compression } = await openDecompressed(countProgress(await input.open(), context), where, {
        gzipHelper: this.options.gzipHelper,
        signal: context.signal,
      });
      if (compression === target && !input.descriptor.annotations?.[TOC_DIGEST_ANNOTATION])
        return drainUnchanged(stream);
      const zstd =
        target === 'zstd'
          ? new ZstdStreamCompressor(this.options.compressionLevel ?? DEFAULT_PLAIN_ZSTD_LEVEL)
          : undefined;
      const hash = createHash('sha256');
      let size = 0;
      const write = async (chunk: Buffer) => {
        size += chunk.length;
        if (!output.write(chunk))
          await new Promise<void>((resolve, reject) => {
            output.once('drain', resolve);
            output.once('error', reject);
          });
      };
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        context.signal.throwIfAborted();
        hash.update(chunk);
        for (const piece of zstd ? zstd.update(chunk) : [chunk]) await write(piece);
      }
      for (const piece of zstd?.finish() ?? []) await write(piece);
      return {
        mediaType: plainLayerMediaType(target, input.descriptor.mediaType),
        annotations: {},
        diffID: `sha256:${hash.digest('hex')}`,
        report: {
          format: this.name,
          inputCompression: compression,
          inputSize: input.descriptor.size,
          outputSize: size,
        },
      };
    } catch (err) {
      throw withContext(`${this.name === 'zstd' ? 'compressing' : 'uncompressing'} ${where}`, err);
    }
  }

  externalTOCs(): Map<string, Buffer> {
    return new Map();
  }

  async close(): Promise<void> {}
}

/** zstd exists only as an OCI media type; a plain tar keeps the source's family. */
function plainLayerMediaType(compression: 'none' | 'zstd', sourceMediaType: string): string {
  if (compression === 'zstd') return MediaType.ociLayerZstd;
  return isDockerMediaType(sourceMediaType) ? MediaType.dockerLayer : MediaType.ociLayer;
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

/**
 * Picks the transform for a target format. A chunked format compresses on `pool` when given (one
 * pool for several transforms of a conversion), else on a pool of its own that `close` stops.
 */
export function createLayerTransform(
  format: LayerFormat,
  options: ChunkedTransformOptions = {},
  pool?: SharedCompressor,
): ConversionTransform {
  switch (format) {
    case 'estargz':
    case 'zstdchunked':
      return new ChunkedLayerTransform(format, options, pool);
    case 'uncompress':
    case 'zstd':
      return new PlainLayerTransform(format, options);
    default:
      throw new EsgzError('BAD_FLAG', `unknown layer format ${String(format)}`);
  }
}
