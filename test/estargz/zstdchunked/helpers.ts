// Helpers for the zstd:chunked tests: convert in memory with the zstd codec, real `zstd` and
// `tar` as oracles, and an independent byte-level reading of the footer (not via src/).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { EstargzWriteResult, EstargzWriterOptions } from '../../../src/estargz/writer.js';
import { createZstdChunkedCodec, type ZstdChunkedCodecOptions } from '../../../src/estargz/zstdchunked/codec.js';
import type { SuiteCodec } from '../codec-suite.js';
import { convertBuffer } from '../helpers.js';

export interface ZstdConvertOptions
  extends Omit<EstargzWriterOptions, 'codec' | 'compressor'>, ZstdChunkedCodecOptions {
  compressionLevel?: number;
  /** Default 2. */
  workers?: number;
}

/** Converts an in-memory layer (tar, tar+gzip or tar+zstd) to a zstd:chunked blob. */
export async function convertZstd(
  layer: Buffer,
  options: ZstdConvertOptions = {},
): Promise<{ blob: Buffer; result: EstargzWriteResult }> {
  const { compressionLevel, workers, containersStorageAnnotations, endOfArchive, dialect, ...writer } = options;
  const codec = createZstdChunkedCodec({ containersStorageAnnotations, endOfArchive, dialect });
  return convertBuffer(layer, { ...writer, codec, level: compressionLevel, workers: workers ?? 2 });
}

/** The `zstd` CLI as the decompression oracle. */
export function zstdCli(args: string[], input: Buffer): Buffer {
  return execFileSync('zstd', args, { input, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'pipe'] });
}

export function zstdDecompressCli(blob: Buffer): Buffer {
  return zstdCli(['-dc', '-q'], blob);
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The footer read straight from the bytes, following stargz-snapshotter's zstdchunked.go layout. */
export function rawFooter(blob: Buffer): {
  frameMagic: number;
  frameSize: number;
  offset: bigint;
  compressed: bigint;
  uncompressed: bigint;
  manifestType: bigint;
  magic: string;
} {
  const f = blob.subarray(blob.length - 48);
  return {
    frameMagic: f.readUInt32LE(0),
    frameSize: f.readUInt32LE(4),
    offset: f.readBigUInt64LE(8),
    compressed: f.readBigUInt64LE(16),
    uncompressed: f.readBigUInt64LE(24),
    manifestType: f.readBigUInt64LE(32),
    magic: f.subarray(40, 48).toString('latin1'),
  };
}

/** zstd:chunked for the shared codec suite (codec-suite.ts). */
export const ZSTD_CHUNKED_SUITE_CODEC: SuiteCodec = {
  name: 'zstd:chunked',
  ctrRemoteFlag: '--zstdchunked',
  getTocDigestFlags: ['--zstdchunked'],
  layerMediaType: 'application/vnd.oci.image.layer.v1.tar+zstd',
  convert: (layer, options) => convertZstd(layer, options),
  decompressCli: zstdDecompressCli,
  compressPlain: (tar) => zstdCli(['-c', '-q'], tar),
  newCodec: () => createZstdChunkedCodec(),
  // As ctr-remote writes it: no end-of-archive frame.
  readerVariant: { endOfArchive: false },
  damagedMemberMessage: /layer X: .*zstd frame at offset \d+/,
};
