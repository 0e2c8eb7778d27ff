/**
 * Compression of whole members on a pool of worker threads, for every codec: gzip through the
 * libdeflate addon (native/libdeflate) or Node's zlib, and zstd through zstd-napi.
 *
 * Work goes out in batches: several members laid end to end in one buffer, with the offset where
 * each ends. A worker compresses each member independently (one gzip member / one zstd frame)
 * and sends back their concatenation plus each compressed size. Most members of a rootfs are
 * small files, so one message per batch instead of per member keeps the calling thread free for
 * the tar stream, and keeps every core compressing. Each member's bytes depend only on its input
 * and the fixed parameters, never on the batch it rode in, the worker that ran it or the order:
 * the writer awaits batches in input order, so blobs are byte-reproducible on any core count.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { EsgzError } from '../errors.js';
import type { CodecName, CompressedMembers, MemberCompressor } from './codec.js';

export type MemberCompressorKind = 'libdeflate' | 'zlib' | 'zstd';

export const LIBDEFLATE_ADDON_PATH = fileURLToPath(
  new URL('../../native/libdeflate/build/Release/esgz_libdeflate.node', import.meta.url),
);
const ZSTD_BINDING_PATH = createRequire(import.meta.url).resolve('zstd-napi/binding.js');

/** Batch buffers are sized in steps of this; a batch of small members fits one step. */
const BATCH_STEP = 1 << 20;
/** Most bytes of free batch buffers kept for reuse. */
const MAX_FREE_BYTES = 8 * 1024 * 1024;
/** glibc mmap threshold while converting (see setMmapThreshold in native/libdeflate). */
const MMAP_THRESHOLD = 2 * 1024 * 1024;
/** Young generation of each worker: they allocate little besides results, which leave at once. */
const WORKER_YOUNG_GENERATION_MB = 4;

let mallocTuned = false;

/** Keeps peak memory flat as layers grow, when the libdeflate addon is there to ask glibc. */
function tuneMalloc(): void {
  if (mallocTuned) return;
  mallocTuned = true;
  if (!existsSync(LIBDEFLATE_ADDON_PATH)) return;
  try {
    const m = { exports: {} as { setMmapThreshold(bytes: number): boolean } };
    process.dlopen(m as unknown as NodeJS.Module, LIBDEFLATE_ADDON_PATH);
    m.exports.setMmapThreshold(MMAP_THRESHOLD);
  } catch {
    // Only a memory optimisation: without the addon, glibc keeps its default.
  }
}

// Plain CommonJS run with `eval: true`, so it works the same from the TypeScript sources (tests)
// and from dist/ (the CLI) without a separate build artefact.
// (spec) => (input: Buffer, ends: Uint32Array) => { data: Uint8Array owning its buffer, sizes }
const BATCH_COMPRESSOR_SOURCE = `(spec) => {
  // Members compress into one reused scratch buffer; the result is an exact-size copy, so the
  // garbage collector sees (and frees) every byte of it, and it moves to the caller cheaply.
  let scratch = Buffer.allocUnsafe(1 << 20);
  const room = (n) => (scratch.length >= n ? scratch : (scratch = Buffer.allocUnsafe(n)));
  const exact = (n) => {
    const data = new Uint8Array(n);
    data.set(scratch.subarray(0, n));
    return data;
  };
  if (spec.kind === 'libdeflate') {
    const m = { exports: {} };
    process.dlopen(m, spec.addonPath);
    return (input, ends) => {
      const sizes = new Uint32Array(ends.length);
      const out = room(m.exports.gzipBatchBound(ends, spec.level));
      return { data: exact(m.exports.gzipCompressBatch(input, ends, spec.level, sizes, out)), sizes };
    };
  }
  if (spec.kind === 'zlib') {
    const zlib = require('node:zlib');
    return (input, ends) => {
      const sizes = new Uint32Array(ends.length);
      const parts = [];
      let start = 0;
      ends.forEach((end, i) => {
        const out = zlib.gzipSync(input.subarray(start, end), { level: spec.level });
        parts.push(out);
        sizes[i] = out.length;
        start = end;
      });
      const data = Buffer.concat(parts);
      return { data: exact(data.copy(room(data.length))), sizes };
    };
  }
  // zstd: one frame per member, single-threaded, checksum and content size always written
  // (what stargz-snapshotter's encoder writes).
  const b = require(spec.bindingPath);
  const cctx = new b.CCtx();
  cctx.setParameter(b.CParameter.compressionLevel, spec.level);
  cctx.setParameter(b.CParameter.checksumFlag, 1);
  cctx.setParameter(b.CParameter.contentSizeFlag, 1);
  cctx.setParameter(b.CParameter.nbWorkers, 0);
  return (input, ends) => {
    let bound = 0;
    let start = 0;
    for (const end of ends) {
      bound += b.compressBound(end - start);
      start = end;
    }
    const out = room(bound);
    const sizes = new Uint32Array(ends.length);
    let written = 0;
    start = 0;
    ends.forEach((end, i) => {
      cctx.reset(b.ResetDirective.sessionOnly);
      const n = cctx.compress2(out.subarray(written), input.subarray(start, end));
      sizes[i] = n;
      written += n;
      start = end;
    });
    return { data: exact(written), sizes };
  };
}`;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const compress = (${BATCH_COMPRESSOR_SOURCE})(workerData);
parentPort.on('message', (msg) => {
  const input = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
  try {
    const { data, sizes } = compress(input, msg.ends);
    // The input buffer goes back too, so the calling thread can reuse it for the next batch.
    parentPort.postMessage({ id: msg.id, data, sizes, input: msg.data.buffer }, [data.buffer, sizes.buffer, msg.data.buffer]);
  } catch (err) {
    parentPort.postMessage({ id: msg.id, error: String((err && err.message) || err), input: msg.data.buffer }, [msg.data.buffer]);
  }
});
`;

interface PoolWorker {
  worker: Worker;
  /** Batches sent and not answered yet. */
  busy: number;
  /** Their input bytes. */
  busyBytes: number;
}

interface Pending {
  resolve(value: CompressedMembers): void;
  reject(err: Error): void;
  owner: PoolWorker;
  bytes: number;
}

interface QueuedBatch {
  id: number;
  data: Uint8Array;
  ends: Uint32Array;
  resolve(value: CompressedMembers): void;
  reject(err: Error): void;
}

/**
 * Batches a worker holds at once: the one it compresses and the next, so it never waits for
 * this thread between two. The rest wait here and go to whichever worker frees up first: a
 * batch queued behind a slow one (a 4 MiB chunk) on one worker would leave the other idle.
 */
const IN_FLIGHT_PER_WORKER = 2;

export interface MemberPoolOptions {
  kind: MemberCompressorKind;
  level: number;
  /** Worker threads (default: one per core). */
  workers?: number;
  /** Names the compressor in errors, e.g. "gzip (libdeflate)". */
  label: string;
}

/**
 * One pool compresses the members of every layer of a conversion: the conversion creates it
 * (src/convert/) and hands it to each writer, so threads never exceed `size` however many layers
 * convert at once. Implements the writer's MemberCompressor (./codec.ts).
 */
export class MemberPool implements MemberCompressor {
  readonly kind: MemberCompressorKind;
  readonly level: number;
  readonly size: number;
  private readonly label: string;
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly queue: QueuedBatch[] = [];
  private nextId = 0;
  /** Batch buffers handed back by workers, by capacity, for reuse. */
  private readonly freeBuffers = new Map<number, ArrayBuffer[]>();
  private freeBytes = 0;
  /** Buffers `allocate` handed out: moved to a worker whatever part of them a batch fills. */
  private readonly ours = new WeakSet<ArrayBuffer>();
  private started = false;
  private closed = false;
  private failure: EsgzError | undefined;

  constructor(options: MemberPoolOptions) {
    this.kind = options.kind;
    this.level = options.level;
    this.label = options.label;
    const workers = options.workers ?? defaultWorkerCount();
    if (!Number.isInteger(workers) || workers < 1)
      throw new EsgzError('BAD_FLAG', `worker count must be a positive integer, got ${workers}`);
    this.size = workers;
  }

  /** The member format this pool writes. */
  get format(): CodecName {
    return this.kind === 'zstd' ? 'zstd' : 'gzip';
  }

  /** The compressor implementation, for reports: 'libdeflate' | 'zlib' | 'zstd-napi'. */
  get backend(): string {
    return this.kind === 'zstd' ? 'zstd-napi' : this.kind;
  }

  /**
   * Starts every worker now, so their start-up (tens of ms each) overlaps with opening and
   * parsing the source instead of delaying the first batches; otherwise the first batch starts
   * them. Idle workers pin nothing. Idempotent.
   */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    tuneMalloc();
    while (this.workers.length < this.size) this.spawn();
  }

  /**
   * A buffer of at least `size` bytes (its length is its whole capacity) to fill with members
   * and hand to `compressMembers`. Buffers come back from the workers and are reused, so a
   * steady-state conversion allocates none.
   */
  allocate(size: number): Buffer {
    const capacity = Math.max(1, Math.ceil(size / BATCH_STEP)) * BATCH_STEP;
    let ab = this.freeBuffers.get(capacity)?.pop();
    if (ab) this.freeBytes -= capacity;
    ab ??= new ArrayBuffer(capacity);
    this.ours.add(ab);
    return Buffer.from(ab);
  }

  /**
   * Compresses the members laid end to end in `input` (member i ends at `ends[i]`). The caller
   * hands `input` over: a buffer from `allocate` (or one owning its whole ArrayBuffer) moves to
   * the worker without a copy and must not be used afterwards; anything else is copied.
   */
  compressMembers(input: Buffer, ends: Uint32Array): Promise<CompressedMembers> {
    if (this.closed) return Promise.reject(new EsgzError('INTERNAL', `${this.label} pool used after close`));
    if (this.failure) return Promise.reject(this.failure);
    let payload: Uint8Array = input;
    const ab = input.buffer;
    // Never move memory other Buffers may share (Node's small Buffers live in one slab).
    const transferable =
      ab instanceof ArrayBuffer && input.byteOffset === 0 && (this.ours.has(ab) || input.byteLength === ab.byteLength);
    if (!transferable) {
      payload = this.allocate(input.byteLength).subarray(0, input.byteLength);
      payload.set(input);
    }
    const id = this.nextId++;
    this.start();
    return new Promise<CompressedMembers>((resolve, reject) => {
      this.queue.push({ id, data: payload, ends, resolve, reject });
      this.dispatch();
    });
  }

  /** Hands queued batches, in order, to workers with room (see IN_FLIGHT_PER_WORKER). */
  private dispatch(): void {
    while (this.queue.length > 0) {
      const target = this.leastBusyWorker();
      if (!target) return;
      const { id, data, ends, resolve, reject } = this.queue.shift()!;
      this.pending.set(id, { resolve, reject, owner: target, bytes: data.byteLength });
      // Keep the event loop alive only while a worker has work (idle workers must not pin it).
      if (target.busy++ === 0) target.worker.ref();
      target.busyBytes += data.byteLength;
      target.worker.postMessage({ id, data, ends }, [data.buffer as ArrayBuffer]);
    }
  }

  /** Compresses one member (the caller keeps `input`: it is copied). */
  async compress(input: Buffer): Promise<Buffer> {
    const copy = this.allocate(input.length).subarray(0, input.length);
    copy.set(input);
    const { data } = await this.compressMembers(copy, Uint32Array.of(input.length));
    return data;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const workers = this.workers.splice(0);
    await Promise.all(workers.map((w) => w.worker.terminate()));
    const closed = new EsgzError('INTERRUPTED', `${this.label} pool closed`);
    for (const p of [...this.pending.values(), ...this.queue.splice(0)]) p.reject(closed);
    this.pending.clear();
  }

  /**
   * Keeps a buffer a worker handed back for the next batch. (Its ArrayBuffer object is new on
   * this side of the transfer, but the memory is the same: reusing it spares fresh pages and
   * the garbage collector's work on every batch.)
   */
  private recycle(ab: ArrayBuffer | undefined): void {
    if (!ab || ab.byteLength % BATCH_STEP !== 0 || this.freeBytes + ab.byteLength > MAX_FREE_BYTES) return;
    const list = this.freeBuffers.get(ab.byteLength) ?? [];
    list.push(ab);
    this.freeBuffers.set(ab.byteLength, list);
    this.freeBytes += ab.byteLength;
  }

  /**
   * The worker with room and the fewest bytes still to compress, which is likely to be free
   * first (all start in the constructor; a failed one is removed).
   */
  private leastBusyWorker(): PoolWorker | undefined {
    let best: PoolWorker | undefined;
    for (const w of this.workers) {
      if (w.busy < IN_FLIGHT_PER_WORKER && (!best || w.busyBytes < best.busyBytes)) best = w;
    }
    return best;
  }

  private spawn(): PoolWorker {
    const spec = {
      kind: this.kind,
      level: this.level,
      addonPath: LIBDEFLATE_ADDON_PATH,
      bindingPath: ZSTD_BINDING_PATH,
    };
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: spec,
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    });
    worker.unref();
    const entry: PoolWorker = { worker, busy: 0, busyBytes: 0 };
    worker.on(
      'message',
      (msg: { id: number; data?: Uint8Array; sizes?: Uint32Array; input?: ArrayBuffer; error?: string }) => {
        this.recycle(msg.input);
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        entry.busyBytes -= p.bytes;
        if (--entry.busy === 0) worker.unref();
        this.dispatch();
        if (msg.error !== undefined || !msg.data || !msg.sizes)
          p.reject(new EsgzError('INTERNAL', `${this.label} compression failed: ${msg.error}`));
        else
          p.resolve({ data: Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength), sizes: msg.sizes });
      },
    );
    worker.on('error', (err) => this.fail(entry, err));
    worker.on('exit', (code) => {
      if (!this.closed && code !== 0) this.fail(entry, new Error(`worker exited with code ${code}`));
    });
    this.workers.push(entry);
    return entry;
  }

  private fail(entry: PoolWorker, err: Error): void {
    this.failure = new EsgzError('INTERNAL', `${this.label} worker failed: ${err.message}`, { cause: err });
    const index = this.workers.indexOf(entry);
    if (index >= 0) this.workers.splice(index, 1);
    for (const [id, p] of this.pending) {
      if (p.owner === entry) {
        this.pending.delete(id);
        p.reject(this.failure);
      }
    }
    // No new work after a failure (compressMembers refuses it too): what waits here fails now.
    for (const queued of this.queue.splice(0)) queued.reject(this.failure);
  }
}

/** Compression workers by default: one per core. */
export function defaultWorkerCount(): number {
  return Math.max(1, cpus().length);
}
