/**
 * zstd compression of whole members on a pool of worker threads (zstd-napi, the bundled
 * libzstd). Each member becomes exactly one zstd frame compressed single-threaded with fixed
 * parameters, so its bytes depend only on the input and the level — never on which worker ran
 * it, in what order, or how many cores the machine has. The caller awaits results in order.
 *
 * Fixed frame parameters (mirroring what stargz-snapshotter's klauspost encoder writes):
 *  - checksumFlag 1: a 4-byte XXH64 checksum ends every frame;
 *  - contentSizeFlag 1: the input size is known, so it is always in the frame header;
 *  - nbWorkers 0: no multithreading inside a frame (parallelism is across frames).
 */
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import { EsgzError } from '../../errors.js';

export const DEFAULT_ZSTD_LEVEL = 3;
export const MIN_ZSTD_LEVEL = 1;
export const MAX_ZSTD_LEVEL = 22;

const BINDING_PATH = createRequire(import.meta.url).resolve('zstd-napi/binding.js');

/**
 * Members up to this size are compressed on the calling thread: a worker round trip (copy,
 * postMessage, wake-up) costs more than zstd level 3 on a few KiB, and most members of a real
 * rootfs are small files. Same library, same parameters, so the bytes are identical.
 */
export const INLINE_MAX = 16 * 1024;

// Plain CommonJS run with `eval: true`, so it works the same from the TypeScript sources (tests)
// and from dist/ (the CLI) without a separate build artefact.
// The frame compressor, shared verbatim by the workers and the calling thread so both produce
// the same bytes: (bindingPath, level) => (input: Uint8Array) => Uint8Array (a fresh copy).
const FRAME_COMPRESSOR_SOURCE = `(bindingPath, level) => {
  const b = require(bindingPath);
  const cctx = new b.CCtx();
  cctx.setParameter(b.CParameter.compressionLevel, level);
  cctx.setParameter(b.CParameter.checksumFlag, 1);
  cctx.setParameter(b.CParameter.contentSizeFlag, 1);
  cctx.setParameter(b.CParameter.nbWorkers, 0);
  let scratch = Buffer.allocUnsafe(1 << 16);
  return (input) => {
    const bound = b.compressBound(input.length);
    if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
    cctx.reset(b.ResetDirective.sessionOnly);
    const n = cctx.compress2(scratch, input);
    const out = new Uint8Array(n);
    out.set(scratch.subarray(0, n));
    return out;
  };
}`;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const compress = (${FRAME_COMPRESSOR_SOURCE})(workerData.bindingPath, workerData.level);
parentPort.on('message', (msg) => {
  try {
    const out = compress(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength));
    parentPort.postMessage({ id: msg.id, data: out }, [out.buffer]);
  } catch (err) {
    parentPort.postMessage({ id: msg.id, error: String(err && err.message || err) });
  }
});
`;

type FrameCompressor = (input: Uint8Array) => Uint8Array;

function makeInlineCompressor(level: number): FrameCompressor {
  const factory = new Function('require', `return ${FRAME_COMPRESSOR_SOURCE};`)(createRequire(import.meta.url)) as (
    bindingPath: string,
    level: number,
  ) => FrameCompressor;
  return factory(BINDING_PATH, level);
}

interface PoolWorker {
  worker: Worker;
  busy: number;
}

interface Pending {
  resolve(value: Buffer): void;
  reject(err: Error): void;
  owner: PoolWorker;
}

export function checkZstdLevel(level: number): number {
  if (!Number.isInteger(level) || level < MIN_ZSTD_LEVEL || level > MAX_ZSTD_LEVEL) {
    throw new EsgzError('BAD_FLAG', `zstd compression level ${level} is out of range ${MIN_ZSTD_LEVEL}-${MAX_ZSTD_LEVEL}`);
  }
  return level;
}

export function defaultZstdWorkers(): number {
  const fromEnv = Number(process.env.ESGZ_WORKERS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return Math.max(1, cpus().length);
}

export class ZstdPool {
  readonly level: number;
  readonly size: number;
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private closed = false;
  private failure: EsgzError | undefined;
  private inline: FrameCompressor | undefined;

  constructor(options: { level?: number; workers?: number } = {}) {
    this.level = checkZstdLevel(options.level ?? DEFAULT_ZSTD_LEVEL);
    const workers = options.workers ?? defaultZstdWorkers();
    if (!Number.isInteger(workers) || workers < 1) throw new EsgzError('BAD_FLAG', `zstd worker count must be a positive integer, got ${workers}`);
    this.size = workers;
  }

  /** Compresses `data` into one complete zstd frame. */
  compress(data: Buffer): Promise<Buffer> {
    if (this.closed) return Promise.reject(new EsgzError('INTERNAL', 'zstd pool used after close'));
    if (this.failure) return Promise.reject(this.failure);
    if (data.length <= INLINE_MAX) {
      try {
        this.inline ??= makeInlineCompressor(this.level);
        const out = this.inline(data);
        return Promise.resolve(Buffer.from(out.buffer, out.byteOffset, out.byteLength));
      } catch (err) {
        return Promise.reject(new EsgzError('INTERNAL', `zstd compression failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      }
    }
    const target = this.pickWorker();
    const id = this.nextId++;
    // A standalone copy we can transfer: the caller's buffer may be a view of a shared pool.
    const copy = new Uint8Array(data.byteLength);
    copy.set(data);
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, owner: target });
      // Only a worker with work keeps the event loop alive.
      if (target.busy++ === 0) target.worker.ref();
      target.worker.postMessage({ id, data: copy }, [copy.buffer]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const workers = this.workers.splice(0);
    await Promise.all(workers.map((w) => w.worker.terminate()));
    for (const p of this.pending.values()) p.reject(new EsgzError('INTERRUPTED', 'zstd pool closed'));
    this.pending.clear();
  }

  private pickWorker(): PoolWorker {
    let best: PoolWorker | undefined;
    for (const w of this.workers) if (!best || w.busy < best.busy) best = w;
    if (best && (best.busy === 0 || this.workers.length >= this.size)) return best;
    return this.spawn();
  }

  private spawn(): PoolWorker {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bindingPath: BINDING_PATH, level: this.level } });
    worker.unref();
    const entry: PoolWorker = { worker, busy: 0 };
    worker.on('message', (msg: { id: number; data?: Uint8Array; error?: string }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (--entry.busy === 0) worker.unref();
      if (msg.error !== undefined || !msg.data) p.reject(new EsgzError('INTERNAL', `zstd compression failed: ${msg.error}`));
      else p.resolve(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength));
    });
    worker.on('error', (err) => this.fail(entry, err));
    worker.on('exit', (code) => {
      if (!this.closed && code !== 0) this.fail(entry, new Error(`worker exited with code ${code}`));
    });
    this.workers.push(entry);
    return entry;
  }

  private fail(entry: PoolWorker, err: Error): void {
    this.failure = new EsgzError('INTERNAL', `zstd worker failed: ${err.message}`, { cause: err });
    const index = this.workers.indexOf(entry);
    if (index >= 0) this.workers.splice(index, 1);
    for (const [id, p] of this.pending) {
      if (p.owner === entry) {
        this.pending.delete(id);
        p.reject(this.failure);
      }
    }
  }
}
