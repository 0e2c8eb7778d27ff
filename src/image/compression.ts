/**
 * Opens a layer blob as its uncompressed tar stream, whatever it is stored as: the compression
 * is sniffed from the magic bytes (gzip 1f8b, zstd 28b52ffd, else plain tar), not trusted from
 * the media type. Decompression errors surface as one-line EsgzErrors naming `where`.
 */
import { PassThrough, Readable } from 'node:stream';
import zlib from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import { EsgzError } from '../errors.js';
import type { LayerCompression } from './media-types.js';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function sniffCompression(head: Uint8Array): LayerCompression {
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return 'gzip';
  if (head.length >= 4 && ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return 'none';
}

export interface Decompressed {
  stream: Readable;
  compression: LayerCompression;
}

/**
 * Peeks at the first bytes of `input` and returns the decompressed stream. Errors of the
 * input or the decoder are re-emitted on the returned stream as EsgzError('BAD_LAYER').
 */
export async function openDecompressed(input: Readable, where = 'layer'): Promise<Decompressed> {
  const head = await peek(input, 4);
  const compression = sniffCompression(head);
  // Put the peeked bytes back in front of the rest of the stream.
  const replay = new PassThrough({ highWaterMark: 1 << 20 });
  if (head.length > 0) replay.write(head);
  input.on('error', (err) => replay.destroy(wrap(err, where, 'reading')));
  input.pipe(replay);
  if (compression === 'none') return { stream: replay, compression };

  const decoder = compression === 'gzip' ? zlib.createGunzip({ chunkSize: 1 << 18 }) : new DecompressStream();
  const what = compression === 'gzip' ? 'gzip' : 'zstd';
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  replay.on('error', (err) => out.destroy(err instanceof EsgzError ? err : wrap(err, where, what)));
  decoder.on('error', (err) => out.destroy(wrap(err, where, what)));
  replay.pipe(decoder).pipe(out);
  return { stream: out, compression };
}

function wrap(err: unknown, where: string, what: string): EsgzError {
  if (err instanceof EsgzError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new EsgzError('BAD_LAYER', `${where}: corrupt ${what} data: ${message}`, { cause: err });
}

/** Reads up to `n` bytes from the start of a paused stream and returns them (stream stays usable). */
function peek(input: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = () => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      input.off('error', onError);
    };
    const finish = () => {
      cleanup();
      const all = Buffer.concat(chunks);
      resolve(all);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while (total < n && (chunk = input.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        total += chunk.length;
      }
      if (total >= n) finish();
    };
    const onEnd = () => finish();
    const onError = (err: Error) => {
      cleanup();
      reject(wrap(err, 'layer', 'stream'));
    };
    input.on('readable', onReadable);
    input.on('end', onEnd);
    input.on('error', onError);
    onReadable();
  });
}

/** Convenience for tests and tools: a Readable from a buffer. */
export function readableOf(data: Buffer): Readable {
  return Readable.from([data]);
}
