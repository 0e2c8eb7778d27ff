/**
 * gzip compression of whole members on a pool of worker threads.
 *
 * Backend: the libdeflate N-API addon (native/libdeflate) when it is built, else Node's zlib.
 * `ESGZ_GZIP_BACKEND=zlib` forces zlib (tests compare both). Each member is compressed
 * independently, so the bytes depend only on the input and the level, never on which worker ran
 * it or in what order: the caller awaits results in input order.
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { gzipSync } from 'node:zlib';
import { EsgzError } from '../errors.js';

export type GzipBackend = 'libdeflate' | 'zlib';

/**
 * Members up to this size are compressed on the calling thread: a worker round trip (two
 * postMessages, a wake-up) costs more than libdeflate on a small file, and images are mostly
 * small files. Same library and level on every thread, so the bytes do not change.
 */
const INLINE_MAX = 16 * 1024;

/** Smallest pooled member buffer, and the most bytes kept for reuse. */
const MIN_POOLED = 64 * 1024;
const MAX_POOLED_BYTES = 32 * 1024 * 1024;

const ADDON_PATH = fileURLToPath(new URL('../../native/libdeflate/build/Release/esgz_libdeflate.node', import.meta.url));

let addonProbe: { available: boolean; error?: string } | undefined;

/** Whether the libdeflate addon loads in this process (probed once). */
export function libdeflateAvailable(): { available: boolean; error?: string } {
  if (addonProbe) return addonProbe;
  if (!existsSync(ADDON_PATH)) {
    addonProbe = { available: false, error: `addon not built (${ADDON_PATH} missing; run npm run build:native)` };
    return addonProbe;
  }
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, ADDON_PATH);
    addonProbe = { available: true };
  } catch (err) {
    addonProbe = { available: false, error: err instanceof Error ? err.message : String(err) };
  }
  return addonProbe;
}

/** The backend new pools use: libdeflate unless unavailable or ESGZ_GZIP_BACKEND=zlib. */
export function selectGzipBackend(requested: string | undefined = process.env.ESGZ_GZIP_BACKEND): GzipBackend {
  if (requested === 'zlib') return 'zlib';
  if (requested !== undefined && requested !== '' && requested !== 'libdeflate' && requested !== 'auto') {
    throw new EsgzError('BAD_FLAG', `ESGZ_GZIP_BACKEND=${requested} is not one of libdeflate, zlib, auto`);
  }
  const probe = libdeflateAvailable();
  if (probe.available) return 'libdeflate';
  if (requested === 'libdeflate') {
    throw new EsgzError('UNSUPPORTED', `ESGZ_GZIP_BACKEND=libdeflate but the addon cannot load: ${probe.error}`);
  }
  return 'zlib';
}

/** Highest level each backend accepts. */
export const MAX_GZIP_LEVEL: Record<GzipBackend, number> = { libdeflate: 12, zlib: 9 };

// The worker is plain CommonJS passed with `eval: true`, so it runs the same way from the
// TypeScript sources (tests) and from dist/ (the CLI) without a separate build artefact.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const zlib = require('node:zlib');
let compress;
if (workerData.backend === 'libdeflate') {
  const m = { exports: {} };
  process.dlopen(m, workerData.addonPath);
  compress = (buf, level) => m.exports.gzipCompress(buf, level);
} else {
  compress = (buf, level) => zlib.gzipSync(buf, { level });
}
parentPort.on('message', (msg) => {
  try {
    const input = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    let out = compress(input, msg.level);
    if (out.byteOffset !== 0 || out.byteLength !== out.buffer.byteLength) out = Buffer.from(out);
    // The input buffer goes back too, so the main thread can reuse it for the next member.
    parentPort.postMessage({ id: msg.id, data: out, input: msg.data.buffer }, [out.buffer, msg.data.buffer]);
  } catch (err) {
    parentPort.postMessage({ id: msg.id, error: String(err && err.message || err), input: msg.data.buffer }, [msg.data.buffer]);
  }
});
`;

interface Pending {
  resolve(value: Buffer): void;
  reject(err: Error): void;
}

interface PoolWorker {
  worker: Worker;
  busy: number;
}

export interface GzipPoolOptions {
  level: number;
  workers?: number;
  backend?: GzipBackend;
}

export class GzipPool {
  readonly backend: GzipBackend;
  readonly level: number;
  readonly size: number;
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending & { owner: PoolWorker }>();
  private nextId = 0;
  /** Member buffers handed back by workers, by capacity (power of two), for reuse. */
  private readonly freeBuffers = new Map<number, ArrayBuffer[]>();
  private freeBytes = 0;
  private readonly pooled = new WeakSet<ArrayBuffer>();
  private closed = false;
  private failure: Error | undefined;

  constructor(options: GzipPoolOptions) {
    this.backend = options.backend ?? selectGzipBackend();
    const max = MAX_GZIP_LEVEL[this.backend];
    if (!Number.isInteger(options.level) || options.level < 0 || options.level > max) {
      throw new EsgzError('BAD_FLAG', `gzip compression level ${options.level} is out of range 0-${max} for the ${this.backend} backend`);
    }
    this.level = options.level;
    this.size = Math.max(1, options.workers ?? defaultWorkerCount());
  }

  /**
   * A buffer of `size` bytes to fill with member data and pass to `compress`: it comes from (and
   * returns to) a small pool, so steady-state conversion allocates no new member buffers.
   */
  allocate(size: number): Buffer {
    const capacity = Math.max(MIN_POOLED, 2 ** Math.ceil(Math.log2(Math.max(1, size))));
    const list = this.freeBuffers.get(capacity);
    let ab = list?.pop();
    if (ab) this.freeBytes -= capacity;
    else {
      ab = new ArrayBuffer(capacity);
      this.pooled.add(ab);
    }
    return Buffer.from(ab, 0, size);
  }

  private inlineCompress: ((data: Buffer, level: number) => Buffer) | undefined;

  /** The same compression the workers run, on this thread (small members). */
  private compressHere(data: Buffer): Buffer {
    if (!this.inlineCompress) {
      if (this.backend === 'libdeflate') {
        const m = { exports: {} as { gzipCompress(data: Buffer, level: number): Buffer } };
        process.dlopen(m as unknown as NodeJS.Module, ADDON_PATH);
        this.inlineCompress = (d, level) => m.exports.gzipCompress(d, level);
      } else {
        this.inlineCompress = (d, level) => gzipSync(d, { level });
      }
    }
    return this.inlineCompress(data, this.level);
  }

  private recycle(ab: ArrayBuffer | undefined): void {
    if (!ab || !this.pooled.has(ab) || this.freeBytes + ab.byteLength > MAX_POOLED_BYTES) return;
    const list = this.freeBuffers.get(ab.byteLength) ?? [];
    list.push(ab);
    this.freeBuffers.set(ab.byteLength, list);
    this.freeBytes += ab.byteLength;
  }

  /**
   * Compresses one buffer into one complete gzip member. Buffers from `allocate` (and buffers
   * that own their whole ArrayBuffer) are transferred to the worker, not copied: callers hand
   * them over and must not use them afterwards. Anything else is copied.
   */
  compress(data: Buffer): Promise<Buffer> {
    if (this.closed) return Promise.reject(new EsgzError('INTERNAL', 'gzip pool used after close'));
    if (this.failure) return Promise.reject(this.failure);
    if (data.byteLength <= INLINE_MAX) {
      try {
        const out = this.compressHere(data);
        this.recycle(data.byteOffset === 0 ? (data.buffer as ArrayBuffer) : undefined);
        return Promise.resolve(out);
      } catch (err) {
        return Promise.reject(new EsgzError('INTERNAL', `gzip (${this.backend}) failed: ${(err as Error).message}`, { cause: err }));
      }
    }
    const target = this.pickWorker();
    const id = this.nextId++;
    let payload: Uint8Array = data;
    const ab = data.buffer;
    const transferable = ab instanceof ArrayBuffer && data.byteOffset === 0 && (this.pooled.has(ab) || data.byteLength === ab.byteLength);
    if (!transferable) {
      payload = this.allocate(data.byteLength);
      payload.set(data);
    }
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, owner: target });
      // Keep the event loop alive only while a worker has work (idle workers must not pin it).
      if (target.busy++ === 0) target.worker.ref();
      target.worker.postMessage({ id, data: payload, level: this.level }, [payload.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const workers = this.workers.splice(0);
    await Promise.all(workers.map((w) => w.worker.terminate()));
    for (const p of this.pending.values()) p.reject(new EsgzError('INTERRUPTED', 'gzip pool closed'));
    this.pending.clear();
  }

  private pickWorker(): PoolWorker {
    let best: PoolWorker | undefined;
    for (const w of this.workers) if (!best || w.busy < best.busy) best = w;
    if (best && (best.busy === 0 || this.workers.length >= this.size)) return best;
    return this.spawn();
  }

  private spawn(): PoolWorker {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { backend: this.backend, addonPath: ADDON_PATH },
    });
    worker.unref();
    const entry: PoolWorker = { worker, busy: 0 };
    worker.on('message', (msg: { id: number; data?: Uint8Array; input?: ArrayBuffer; error?: string }) => {
      this.recycle(msg.input);
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (--entry.busy === 0) worker.unref();
      if (msg.error !== undefined || !msg.data) p.reject(new EsgzError('INTERNAL', `gzip (${this.backend}) failed: ${msg.error}`));
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
    this.failure = new EsgzError('INTERNAL', `gzip worker (${this.backend}) failed: ${err.message}`, { cause: err });
    for (const [id, p] of this.pending) {
      if (p.owner === entry) {
        this.pending.delete(id);
        p.reject(this.failure);
      }
    }
  }
}

export function defaultWorkerCount(): number {
  const fromEnv = Number(process.env.ESGZ_WORKERS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return Math.max(1, cpus().length);
}
