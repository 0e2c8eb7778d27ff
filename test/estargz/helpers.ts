// Shared helpers for the eStargz tests: run the writer into memory, run real tools as oracles.
import { execFileSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { expect } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import type { Codec, MemberCompressor } from '../../src/estargz/codec.js';
import { createMemberPool } from '../../src/estargz/codecs.js';
import { createGzipCodec } from '../../src/estargz/gzip-codec.js';
import type { GzipBackendChoice } from '../../src/estargz/gzip-pool.js';
import { openDecompressed, readableOf } from '../../src/image/compression.js';
import { gzipBuffer } from '../fixtures/tar.js';
import type { SuiteCodec } from './codec-suite.js';
import { writeEstargz, type EstargzWriteResult, type EstargzWriterOptions } from '../../src/estargz/writer.js';

export class MemorySink extends Writable {
  chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    cb();
  }
  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

export interface ConvertOptions extends Omit<EstargzWriterOptions, 'codec' | 'compressor'> {
  /** Of the pool made when no `compressor` is given. */
  level?: number;
  workers?: number;
  backend?: GzipBackendChoice;
  /** Default: eStargz. */
  codec?: Codec;
  /** Default: a pool of the codec's format, closed afterwards. */
  compressor?: MemberCompressor;
}

/** Converts a (possibly compressed) layer held in memory; returns the blob and the writer's result. */
export async function convertBuffer(
  layer: Buffer,
  options: ConvertOptions = {},
): Promise<{ blob: Buffer; result: EstargzWriteResult }> {
  const codec = options.codec ?? createGzipCodec();
  const { level: compressionLevel, workers, backend: gzipBackend } = options;
  const pool = options.compressor
    ? undefined
    : createMemberPool(codec.name, { compressionLevel, workers, gzipBackend });
  try {
    const sink = new MemorySink();
    const { stream } = await openDecompressed(readableOf(layer), 'test layer');
    const compressor = options.compressor ?? pool!;
    const result = await writeEstargz(stream, sink, { ...options, codec, compressor });
    return { blob: sink.data, result };
  } finally {
    await pool?.close();
  }
}

/** Runs a command with stdin, returns stdout (throws with stderr on failure). */
export function run(cmd: string, args: string[], input?: Buffer, cwd?: string): Buffer {
  return execFileSync(cmd, args, { input, cwd, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** `gzip -dc` of a blob: the oracle for "decompresses as concatenated gzip members". */
export function gunzipCli(blob: Buffer): Buffer {
  return run('gzip', ['-dc'], blob);
}

/** Names in a tar as GNU tar lists them (literal quoting). */
export function tarNames(tar: Buffer): string[] {
  return run('tar', ['-t', '--quoting-style=literal', '-f', '-'], tar)
    .toString('utf8')
    .split('\n')
    .filter((l) => l !== '');
}

/** `tar -tv --full-time` lines: mode, owner, size, time, name, link target. */
export function tarVerbose(tar: Buffer): string[] {
  return run('tar', ['-tv', '--full-time', '--numeric-owner', '--quoting-style=literal', '-f', '-'], tar)
    .toString('utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(/\s+/g, ' '));
}

/** Awaits the rejection of `promise`: a one-line EsgzError with `code` whose message holds every fragment. */
export async function expectEsgzError(
  promise: Promise<unknown>,
  code: string,
  ...fragments: string[]
): Promise<EsgzError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected an EsgzError').toBeInstanceOf(EsgzError);
  const e = err as EsgzError;
  expect(e.code, e.message).toBe(code);
  for (const f of fragments) expect(e.message).toContain(f);
  expect(e.message).not.toContain('\n');
  return e;
}

/** eStargz (gzip members) for the shared codec suite (codec-suite.ts). */
export const ESTARGZ_SUITE_CODEC: SuiteCodec = {
  name: 'eStargz',
  ctrRemoteFlag: '--estargz',
  getTocDigestFlags: [],
  layerMediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
  convert: (layer, options) => convertBuffer(layer, options),
  decompressCli: gunzipCli,
  compressPlain: gzipBuffer,
  newCodec: () => createGzipCodec(),
  // Small payloads packed into shared members with inner offsets.
  readerVariant: { minChunkSize: 200_000 },
};
