/**
 * Codec registry: the writer/transform picks a codec by name, the reader tries every codec's
 * footer parser (eStargz gzip, then zstd:chunked).
 */
import type { Codec, CodecName, CodecOptions } from './codec.js';
import { createGzipCodec } from './gzip-codec.js';
import type { GzipBackend } from './gzip-pool.js';
import { createZstdChunkedCodec } from './zstdchunked/codec.js';

export async function createCodec(
  name: CodecName,
  options: CodecOptions & { gzipBackend?: GzipBackend; externalTOC?: boolean } = {},
): Promise<Codec> {
  if (name === 'gzip') return createGzipCodec({ ...options, backend: options.gzipBackend });
  return createZstdChunkedCodec({ compressionLevel: options.compressionLevel, workers: options.workers });
}

/** One codec of each kind, for the reader's footer detection (no workers start until compressing). */
export async function readerCodecs(): Promise<Codec[]> {
  return [createGzipCodec({ backend: 'zlib' }), createZstdChunkedCodec({})];
}
