/**
 * Codec registry: the conversion picks a codec (the format) and a member pool (the compressor)
 * by name; the reader tries every codec's footer parser (eStargz gzip, then zstd:chunked).
 */
import type { Codec, CodecName } from './codec.js';
import { createGzipCodec } from './gzip-codec.js';
import { createGzipPool, type GzipBackendChoice } from './gzip-pool.js';
import type { MemberPool } from './member-pool.js';
import { createZstdChunkedCodec } from './zstdchunked/codec.js';
import { createZstdPool } from './zstdchunked/pool.js';
import type { WritableDialect } from './zstdchunked/dialect.js';

export interface CodecOptions {
  /** gzip: write the TOC outside the blob (external-TOC footer). */
  externalTOC?: boolean;
  /** zstd: also write containers/storage's `io.github.containers.zstd-chunked.*` annotations. */
  containersStorageAnnotations?: boolean;
  /** zstd: whose layout to write (default 'stargz'). */
  zstdChunkedDialect?: WritableDialect;
}

/** The format side of `name`: footer, TOC encoding, media type. Holds no threads. */
export function createCodec(name: CodecName, options: CodecOptions = {}): Codec {
  if (name === 'gzip') return createGzipCodec({ externalTOC: options.externalTOC });
  return createZstdChunkedCodec({
    containersStorageAnnotations: options.containersStorageAnnotations,
    dialect: options.zstdChunkedDialect,
  });
}

export interface MemberPoolChoice {
  /** gzip 0-9 (zlib) / 0-12 (libdeflate), default 9; zstd 1-22, default 3. */
  compressionLevel?: number;
  /** Worker threads (default: one per core). */
  workers?: number;
  /** gzip only (default 'auto': libdeflate when it loads). */
  gzipBackend?: GzipBackendChoice;
}

/**
 * The worker pool compressing `name`'s members, its options checked now; no thread starts
 * until `start()` or the first batch. The caller owns it (close it once).
 */
export function createMemberPool(name: CodecName, options: MemberPoolChoice = {}): MemberPool {
  const { compressionLevel: level, workers } = options;
  if (name === 'gzip') return createGzipPool({ level, workers, backend: options.gzipBackend });
  return createZstdPool({ level, workers });
}

/** One codec of each kind, for the reader's footer detection. */
export function readerCodecs(): Codec[] {
  return [createGzipCodec(), createZstdChunkedCodec()];
}
