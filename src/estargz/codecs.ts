/**
 * Codec registry: the writer/transform picks a codec by name, the reader tries every codec's
 * footer parser. The zstd:chunked codec is helper H4's `src/estargz/zstdchunked/codec.ts`,
 * expected to export `createZstdChunkedCodec(options: CodecOptions): Codec`; it is loaded
 * lazily so eStargz works (and this file compiles) while that module is absent.
 */
import { EsgzError } from '../errors.js';
import type { Codec, CodecName, CodecOptions } from './codec.js';
import { createGzipCodec } from './gzip-codec.js';
import type { GzipBackend } from './gzip-pool.js';

const ZSTD_CODEC_MODULE = './zstdchunked/codec.js';

type ZstdModule = { createZstdChunkedCodec?: (options: CodecOptions) => Codec };

let zstdModule: Promise<ZstdModule | undefined> | undefined;

function loadZstdModule(): Promise<ZstdModule | undefined> {
  zstdModule ??= import(/* @vite-ignore */ ZSTD_CODEC_MODULE).then(
    (m: ZstdModule) => m,
    () => undefined,
  );
  return zstdModule;
}

export async function createCodec(name: CodecName, options: CodecOptions & { gzipBackend?: GzipBackend } = {}): Promise<Codec> {
  if (name === 'gzip') return createGzipCodec({ ...options, backend: options.gzipBackend });
  const mod = await loadZstdModule();
  if (!mod?.createZstdChunkedCodec) throw new EsgzError('UNSUPPORTED', 'zstd:chunked is not available in this build (src/estargz/zstdchunked/codec.ts missing)');
  return mod.createZstdChunkedCodec(options);
}

/** One codec of each available kind, for the reader's footer detection (no workers started). */
export async function readerCodecs(): Promise<Codec[]> {
  const codecs: Codec[] = [createGzipCodec({ backend: 'zlib' })];
  const mod = await loadZstdModule();
  if (mod?.createZstdChunkedCodec) codecs.push(mod.createZstdChunkedCodec({}));
  return codecs;
}
