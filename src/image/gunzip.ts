/**
 * gzip decompression of layer sources: ISA-L (native/isal, Debian's libisal) when its addon is
 * built, else Node's zlib. Both run on libuv's thread pool and give the same bytes; ISA-L takes
 * about a third of zlib's CPU, which every conversion of a gzip layer spends.
 * `ESGZ_GUNZIP_BACKEND=zlib` forces zlib.
 *
 * Semantics follow Node's zlib Gunzip: concatenated gzip members decompress as one stream (eStargz
 * blobs are such a concatenation), each member's CRC32 and size are checked, zero padding after
 * the last member is ignored, and any other trailing bytes must be a valid member.
 */
import { existsSync } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { EsgzError } from '../errors.js';

export type GunzipBackend = 'isal' | 'zlib';

interface IsalAddon {
  createInflater(): object;
  inflate(handle: object, input: Uint8Array, output: Uint8Array, callback: (err: Error | null, consumed: number, produced: number, finished: boolean) => void): void;
  reset(handle: object): void;
}

const ADDON_PATH = fileURLToPath(new URL('../../native/isal/build/Release/esgz_isal.node', import.meta.url));
/** Output buffer size: what each thread-pool call fills at most (few calls: each waits for a free core). */
const OUTPUT_CHUNK = 1 << 20;

let addon: { module?: IsalAddon; error?: string } | undefined;

function loadAddon(): { module?: IsalAddon; error?: string } {
  if (addon) return addon;
  if (!existsSync(ADDON_PATH)) return (addon = { error: `addon not built (${ADDON_PATH} missing; run npm run build:native)` });
  try {
    const m = { exports: {} as IsalAddon };
    process.dlopen(m as unknown as NodeJS.Module, ADDON_PATH);
    addon = { module: m.exports };
  } catch (err) {
    addon = { error: err instanceof Error ? err.message : String(err) };
  }
  return addon;
}

/** Whether the ISA-L addon loads here (for `esgz version`). */
export function isalAvailable(): { available: boolean; error?: string } {
  const loaded = loadAddon();
  return loaded.module ? { available: true } : { available: false, error: loaded.error };
}

/** The gunzip backend in use: ISA-L unless unavailable or ESGZ_GUNZIP_BACKEND=zlib. */
export function selectGunzipBackend(requested: string | undefined = process.env.ESGZ_GUNZIP_BACKEND): GunzipBackend {
  if (requested === 'zlib') return 'zlib';
  if (requested !== undefined && requested !== '' && requested !== 'isal' && requested !== 'auto') {
    throw new EsgzError('BAD_FLAG', `ESGZ_GUNZIP_BACKEND=${requested} is not one of isal, zlib, auto`);
  }
  if (loadAddon().module) return 'isal';
  if (requested === 'isal') throw new EsgzError('UNSUPPORTED', `ESGZ_GUNZIP_BACKEND=isal but the addon cannot load: ${loadAddon().error}`);
  return 'zlib';
}

/** A gunzip Transform on the selected backend. */
export function createGunzip(backend: GunzipBackend = selectGunzipBackend()): Transform {
  return backend === 'isal' ? new IsalGunzip(loadAddon().module!) : zlib.createGunzip({ chunkSize: OUTPUT_CHUNK });
}

class IsalGunzip extends Transform {
  private readonly handle: object;
  private output = Buffer.allocUnsafe(OUTPUT_CHUNK);
  private filled = 0;
  /** The last member ended; more input must start a new one. */
  private betweenMembers = false;
  /** Zero padding after the last member: ignored, as zlib does. */
  private trailing = false;
  private sawInput = false;

  constructor(private readonly isal: IsalAddon) {
    super();
    this.handle = isal.createInflater();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length > 0) this.sawInput = true;
    this.consume(chunk).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.finish().then(() => callback(), callback);
  }

  private async consume(chunk: Buffer): Promise<void> {
    let input = chunk;
    while (input.length > 0 && !this.trailing) {
      if (this.betweenMembers) {
        if (input[0] === 0) {
          this.trailing = true;
          return;
        }
        this.isal.reset(this.handle);
        this.betweenMembers = false;
      }
      const step = await this.step(input);
      input = input.subarray(step.consumed);
      if (step.consumed === 0 && step.produced === 0 && !step.finished) {
        throw new Error('gzip decompression made no progress');
      }
    }
  }

  /** At the end of input: drain what the decoder still holds, then insist the member ended. */
  private async finish(): Promise<void> {
    while (!this.betweenMembers && !this.trailing && this.sawInput) {
      const step = await this.step(Buffer.alloc(0));
      if (step.produced === 0 && !step.finished) throw new Error('unexpected end of file');
    }
    if (!this.sawInput) throw new Error('unexpected end of file');
    this.emitOutput();
  }

  private step(input: Buffer): Promise<{ consumed: number; produced: number; finished: boolean }> {
    return new Promise((resolve, reject) => {
      this.isal.inflate(this.handle, input, this.output.subarray(this.filled), (err, consumed, produced, finished) => {
        if (err) {
          reject(err);
          return;
        }
        this.filled += produced;
        if (finished) this.betweenMembers = true;
        if (this.filled === this.output.length) this.emitOutput();
        resolve({ consumed, produced, finished });
      });
    });
  }

  private emitOutput(): void {
    if (this.filled === 0) return;
    this.push(this.output.subarray(0, this.filled));
    this.output = Buffer.allocUnsafe(OUTPUT_CHUNK);
    this.filled = 0;
  }
}
