/**
 * Lazy chunk access for one eStargz / zstd:chunked layer, backed by a content-addressed chunk
 * cache on disk.
 *
 * - The cache stores uncompressed chunks by their TOC `chunkDigest` under
 *   `<root>/chunks/sha256/ab/<hex>` (directories 0700, files 0600). Bytes are hashed before they
 *   are written; they go to a temp name, are fsynced, renamed into place and the directory
 *   fsynced, so a reader never sees a partial or unverified chunk, even after a power cut.
 * - Fetched chunks are written behind, in batches: verified bytes are served from memory at once,
 *   and a batch's chunks are written several at a time (concurrent fsyncs share journal commits)
 *   off the read path. Two fsyncs per chunk on the read path (6 ms each here) were most of the
 *   time of a workload reading thousands of files. The staged bytes are bounded
 *   (`MAX_STAGED_BYTES`); past it, fetches wait for the disk.
 * - What is on disk is not trusted either (a disk error, a crash on a filesystem that lost the
 *   data, someone editing it): the first read of a chunk in a process checks its size and digest;
 *   a short or corrupt one is dropped and fetched again.
 * - `LazyLayer.readRange` maps a file range to chunks, serves cached ones from disk and fetches the
 *   rest. Fetches are deduplicated (one request per member even when several readers want it) and
 *   neighbouring members wanted at about the same time are coalesced into one Range request.
 * - Transient faults (network errors, 5xx, short reads) are retried within a deadline; a chunk
 *   whose bytes do not match its digest fails at once (it is never cached, so the next read
 *   fetches again). Nothing waits forever: every fetch has a deadline.
 */
import { createHash } from 'node:crypto';
import { open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError, isEsgzError } from '../errors.js';
import { mkdirPrivate, sweepDeadTemps, writeFileAtomic } from './state.js';
import type { BlobReader, ChunkRef, EstargzReader } from '../estargz/reader.js';
import type { TOCEntry } from '../estargz/toc.js';

const HEX64 = /^[0-9a-f]{64}$/;

/** Verified chunk bytes held in memory while their batched write is pending; past this, fetches wait. */
const MAX_STAGED_BYTES = 64 << 20;

/** Chunk files written (and fsynced) at once by the write-behind. */
const CONCURRENT_WRITES = 32;

/** The largest run of bytes the background fetch fetches only to keep one request for its neighbours. */
const MAX_BACKGROUND_GAP = 64 << 10;

/** Content-addressed store of verified, uncompressed chunks. */
export class ChunkCache {
  readonly dir: string;
  /** Chunks whose file this process wrote or checked (size and digest): later reads trust them. */
  private readonly verified = new Set<string>();
  /** Verified chunks not yet on disk (write-behind), served from here meanwhile. */
  private readonly staged = new Map<string, Buffer>();
  private stagedBytes = 0;
  /** The batch write in progress, if any. */
  private flushing: Promise<void> | undefined;
  /** The first error of a batch write (the chunks are dropped: they are fetched again when read). */
  writeError: unknown;

  constructor(readonly root: string) {
    this.dir = join(root, 'chunks', 'sha256');
  }

  pathOf(digest: string): string {
    const hex = hexOf(digest);
    return join(this.dir, hex.slice(0, 2), hex);
  }

  /** Whether the chunk is cached (with its `size`, when given: a short file is not). */
  async has(digest: string, size?: number): Promise<boolean> {
    if (this.staged.has(digest)) return true;
    return stat(this.pathOf(digest)).then(
      (st) => size === undefined || st.size === size,
      () => false,
    );
  }

  isVerified(digest: string): boolean {
    return this.verified.has(digest);
  }

  /**
   * `length` bytes at `offset` of a cached chunk of `size` bytes, or undefined when it is not
   * cached. The first read in this process checks the whole file's size and digest; a file that
   * fails (or a verified one that got short since) is dropped, so the caller fetches it again.
   */
  async read(digest: string, size: number, offset: number, length: number): Promise<Buffer | undefined> {
    const staged = this.staged.get(digest);
    if (staged) return staged.subarray(offset, offset + length);
    let handle;
    try {
      handle = await open(this.pathOf(digest), 'r');
    } catch {
      return undefined;
    }
    let good: Buffer | undefined;
    try {
      if (this.verified.has(digest)) {
        good = await readFully(handle, offset, length);
      } else if ((await handle.stat()).size === size) {
        const whole = await readFully(handle, 0, size);
        if (whole && `sha256:${createHash('sha256').update(whole).digest('hex')}` === digest) {
          this.verified.add(digest);
          good = whole.subarray(offset, offset + length);
        }
      }
    } finally {
      await handle.close();
    }
    if (!good) await this.remove(digest);
    return good;
  }

  /** Stores `data` under `digest` after checking that it hashes to it, crash-safe (`writeFileAtomic`). */
  async put(digest: string, data: Buffer): Promise<void> {
    const hex = checkedHex(digest, data);
    await mkdirPrivate(join(this.dir, hex.slice(0, 2)));
    await writeFileAtomic(this.pathOf(digest), data);
    this.verified.add(digest);
  }

  /**
   * Write-behind `put`: checks that `data` hashes to `digest`, serves it from memory at once and
   * writes it with the next batch. Resolves at once, or, when too much waits for the disk, once
   * the pending batches are written (backpressure on the fetchers).
   */
  async stage(digest: string, data: Buffer): Promise<void> {
    checkedHex(digest, data);
    if (this.verified.has(digest) || this.staged.has(digest)) return;
    this.staged.set(digest, data);
    this.stagedBytes += data.length;
    this.flushing ??= this.writeStaged();
    if (this.stagedBytes > MAX_STAGED_BYTES) await this.drain();
  }

  /** Waits until every staged chunk is on disk (or dropped after a write error). */
  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  /**
   * Writes the staged chunks in batches, each chunk temp → fsync → rename → fsync dir. After a
   * crash a name holds the whole chunk or nothing.
   */
  private async writeStaged(): Promise<void> {
    try {
      // Let the fetch that staged the first chunk stage the rest of its range first.
      await new Promise((resolve) => setImmediate(resolve));
      while (this.staged.size > 0) {
        const batch = [...this.staged];
        try {
          await this.writeBatch(batch);
          for (const [digest] of batch) this.verified.add(digest);
        } catch (err) {
          this.writeError ??= err;
        }
        for (const [digest, data] of batch) {
          this.staged.delete(digest);
          this.stagedBytes -= data.length;
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }

  /** Each chunk crash-safe as `put` writes it; a few at a time, so their fsyncs share journal commits. */
  private async writeBatch(batch: Array<[string, Buffer]>): Promise<void> {
    for (const prefix of new Set(batch.map(([digest]) => hexOf(digest).slice(0, 2))))
      await mkdirPrivate(join(this.dir, prefix));
    for (let i = 0; i < batch.length; i += CONCURRENT_WRITES)
      await Promise.all(
        batch.slice(i, i + CONCURRENT_WRITES).map(([digest, data]) => writeFileAtomic(this.pathOf(digest), data)),
      );
  }

  /** Removes the temp files of writers that died (a crash between write and rename). */
  async sweepTemps(): Promise<number> {
    let swept = 0;
    for (const prefix of await readdir(this.dir).catch(() => [] as string[]))
      swept += await sweepDeadTemps(join(this.dir, prefix));
    return swept;
  }

  /** Every cached chunk digest with its size (for `image prune`). */
  async list(): Promise<Array<{ digest: string; size: number }>> {
    const out: Array<{ digest: string; size: number }> = [];
    const prefixes = await readdir(this.dir).catch(() => [] as string[]);
    for (const prefix of prefixes) {
      const names = await readdir(join(this.dir, prefix)).catch(() => [] as string[]);
      for (const name of names) {
        if (!HEX64.test(name)) continue;
        const st = await stat(join(this.dir, prefix, name)).catch(() => undefined);
        if (st) out.push({ digest: `sha256:${name}`, size: st.size });
      }
    }
    return out;
  }

  async remove(digest: string): Promise<void> {
    this.verified.delete(digest);
    if (this.staged.delete(digest)) this.stagedBytes = [...this.staged.values()].reduce((n, b) => n + b.length, 0);
    await rm(this.pathOf(digest), { force: true });
  }
}

/** `length` bytes at `offset`, or undefined when the file is shorter. */
async function readFully(
  handle: import('node:fs/promises').FileHandle,
  offset: number,
  length: number,
): Promise<Buffer | undefined> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(buf, got, length - got, offset + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : undefined;
}

/** The hex of `digest`, after checking that `data` hashes to it. */
function checkedHex(digest: string, data: Buffer): string {
  const hex = hexOf(digest);
  const actual = createHash('sha256').update(data).digest('hex');
  if (actual !== hex)
    throw new EsgzError(
      'DIGEST_MISMATCH',
      `chunk cache: refusing to store bytes with digest sha256:${actual} as ${digest}`,
    );
  return hex;
}

function hexOf(digest: string): string {
  const hex = digest.startsWith('sha256:') ? digest.slice(7) : '';
  if (!HEX64.test(hex))
    throw new EsgzError('BAD_FORMAT', `chunk digest ${JSON.stringify(digest)} is not a sha256 digest`);
  return hex;
}

export interface FetchPolicy {
  /** How long one fetch (all its attempts) may take before reads fail with EIO. Default 30 s. */
  deadlineMs?: number;
  /** Attempts per fetch for transient faults. Default 4. */
  attempts?: number;
  /** Largest single coalesced Range request. Default 16 MiB. */
  maxRangeBytes?: number;
  /** Largest single prefetch request (a bigger prioritized range takes several). Default 64 MiB. */
  maxPrefetchBytes?: number;
  /** Size of the background fetch's Range requests. Default 2 MiB. */
  backgroundRangeBytes?: number;
}

export interface FetchStats {
  /** Range requests made (after coalescing). */
  requests: number;
  /** Compressed bytes received. */
  bytes: number;
  /** Of `bytes`, those the background fetch received. */
  backgroundBytes: number;
  /** Chunk reads served from the cache (disk or not yet written). */
  cacheHits: number;
  /** Of `cacheHits`, chunks this process did not fetch: the prefetch's (or an earlier run's). */
  prefetchHits: number;
  /** Chunk reads that had to wait for a fetch (their own, or a background one in flight). */
  onDemandMisses: number;
  /** Chunks fetched and verified. */
  chunksFetched: number;
}

/** Who waits for a request: a reader (first), or the background fetch. */
export type RequestPriority = 'read' | 'background';

/**
 * Bounds the Range requests in flight to one registry (shared by every layer read from it):
 * readers' requests go first, and the background fetch holds at most `maxBackground` slots so a
 * reader never waits behind a whole queue of background ranges.
 */
export class RequestLimiter {
  private active = 0;
  private activeBackground = 0;
  private readonly queues: Record<RequestPriority, Array<() => void>> = { read: [], background: [] };

  constructor(
    readonly maxConcurrent = 4,
    readonly maxBackground = 2,
  ) {}

  async run<T>(priority: RequestPriority, work: () => Promise<T>): Promise<T> {
    if (!this.canStart(priority)) await new Promise<void>((resolve) => this.queues[priority].push(resolve));
    this.active++;
    if (priority === 'background') this.activeBackground++;
    try {
      return await work();
    } finally {
      this.active--;
      if (priority === 'background') this.activeBackground--;
      this.next();
    }
  }

  private canStart(priority: RequestPriority): boolean {
    if (this.active >= this.maxConcurrent) return false;
    return priority === 'read' || this.activeBackground < this.maxBackground;
  }

  private next(): void {
    const wake = this.queues.read.shift() ?? (this.canStart('background') ? this.queues.background.shift() : undefined);
    wake?.();
  }
}

/** One compressed member (gzip member / zstd frame) and the chunks it holds. */
interface Member {
  start: number;
  end: number;
  chunks: ChunkRef[];
}

interface Waiter {
  member: Member;
  priority: RequestPriority;
  resolve(): void;
  reject(err: unknown): void;
}

/** Chunks that have no digest cannot be cached; they are fetched for each read and kept briefly here. */
type Uncached = Map<string, Promise<Buffer>>;

/**
 * Serves file ranges of one layer through the chunk cache.
 * `blob` is the raw blob access (registry Range requests); `reader` supplies the chunk index and codec.
 */
export class LazyLayer {
  readonly stats: FetchStats = {
    requests: 0,
    bytes: 0,
    backgroundBytes: 0,
    cacheHits: 0,
    prefetchHits: 0,
    onDemandMisses: 0,
    chunksFetched: 0,
  };
  /** Chunks this process fetched (so a later hit on them is not the prefetch's). */
  private readonly fetchedHere = new Set<string>();
  private readonly inFlight = new Map<number, Promise<void>>();
  private readonly pending: Waiter[] = [];
  private flushScheduled = false;
  private readonly uncached: Uncached = new Map();
  private readonly deadlineMs: number;
  private readonly attempts: number;
  private readonly maxRangeBytes: number;
  /** A prioritized range bigger than this is fetched in a few pieces so memory stays bounded. */
  private readonly maxPrefetchBytes: number;
  private readonly backgroundRangeBytes: number;
  private readonly membersByStart = new Map<number, Member>();

  /** `limiter` bounds the requests in flight to the registry; share one between the layers of a source. */
  constructor(
    readonly reader: EstargzReader,
    readonly blob: BlobReader,
    readonly cache: ChunkCache,
    policy: FetchPolicy = {},
    readonly limiter = new RequestLimiter(),
  ) {
    this.deadlineMs = policy.deadlineMs ?? 30_000;
    this.attempts = policy.attempts ?? 4;
    this.maxRangeBytes = policy.maxRangeBytes ?? 16 << 20;
    this.maxPrefetchBytes = policy.maxPrefetchBytes ?? 64 << 20;
    this.backgroundRangeBytes = policy.backgroundRangeBytes ?? 2 << 20;
    for (const entry of reader.entries()) {
      if (entry.type !== 'reg' || !(entry.size ?? 0)) continue;
      for (const chunk of reader.chunks(entry.name)) this.memberOf(chunk);
    }
  }

  private memberOf(chunk: ChunkRef): Member {
    let member = this.membersByStart.get(chunk.compressedOffset);
    if (!member) {
      member = { start: chunk.compressedOffset, end: chunk.compressedEnd, chunks: [] };
      this.membersByStart.set(chunk.compressedOffset, member);
    }
    if (!member.chunks.includes(chunk)) member.chunks.push(chunk);
    return member;
  }

  /** Bytes [offset, offset+length) of the regular file `name` (TOC entry `entry`, hardlinks resolved). */
  async readRange(name: string, _entry: TOCEntry, offset: number, length: number): Promise<Buffer> {
    const chunks = this.reader
      .chunks(name)
      .filter((c) => c.fileOffset < offset + length && c.fileOffset + c.length > offset);
    // Ask for every missing member of the range at once so they can share one request.
    const parts = await Promise.all(
      chunks.map((c) =>
        this.chunkSlice(
          c,
          Math.max(offset, c.fileOffset) - c.fileOffset,
          Math.min(offset + length, c.fileOffset + c.length) - Math.max(offset, c.fileOffset),
        ),
      ),
    );
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  private async chunkSlice(chunk: ChunkRef, from: number, length: number): Promise<Buffer> {
    if (!chunk.chunkDigest) {
      const data = await this.uncachedChunk(chunk);
      return data.subarray(from, from + length);
    }
    const cached = await this.cache.read(chunk.chunkDigest, chunk.length, from, length);
    if (cached) {
      this.stats.cacheHits++;
      if (!this.fetchedHere.has(chunk.chunkDigest)) this.stats.prefetchHits++;
      return cached;
    }
    this.stats.onDemandMisses++;
    await this.ensureMembers([this.memberOf(chunk)]);
    const fetched = await this.cache.read(chunk.chunkDigest, chunk.length, from, length);
    if (!fetched)
      throw new EsgzError(
        'INTERNAL',
        `${this.reader.where}: ${chunk.name}: chunk at ${chunk.fileOffset} vanished from the cache`,
      );
    return fetched;
  }

  private uncachedChunk(chunk: ChunkRef): Promise<Buffer> {
    const key = `${chunk.compressedOffset}+${chunk.innerOffset}`;
    let p = this.uncached.get(key);
    if (!p) {
      p = this.withDeadline(() => this.reader.readChunk(chunk), `${chunk.name} at ${chunk.fileOffset}`);
      this.uncached.set(key, p);
      void p.finally(() => this.uncached.delete(key)).catch(() => undefined);
    }
    return p;
  }

  /** Whether every chunk of `name` is in the cache. */
  async isCached(name: string): Promise<boolean> {
    for (const c of this.reader.chunks(name))
      if (!c.chunkDigest || !(await this.cache.has(c.chunkDigest, c.length))) return false;
    return true;
  }

  /** Makes sure these members' chunks are in the cache (fetching the missing ones, coalesced). */
  async ensureMembers(members: Member[], priority: RequestPriority = 'read'): Promise<void> {
    const waits: Promise<void>[] = [];
    const fresh: Waiter[] = [];
    for (const member of members) {
      const existing = this.inFlight.get(member.start);
      if (existing) {
        waits.push(existing);
        continue;
      }
      const p = new Promise<void>((resolve, reject) => {
        fresh.push({ member, priority, resolve, reject });
      });
      this.inFlight.set(member.start, p);
      void p.then(
        () => this.inFlight.delete(member.start),
        () => this.inFlight.delete(member.start),
      );
      waits.push(p);
    }
    // A background range is already shaped (small gaps ride along); readers' members are coalesced.
    if (priority === 'background') {
      if (fresh.length) void this.fetchGroup(fresh);
    } else {
      this.pending.push(...fresh);
      this.scheduleFlush();
    }
    await Promise.all(waits);
  }

  private scheduleFlush(): void {
    if (this.pending.length === 0 || this.flushScheduled) return;
    this.flushScheduled = true;
    // Wait one macrotask so concurrent readers' requests land in the same batch.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Groups pending members into contiguous ranges and fetches each range once. */
  private flush(): void {
    const batch = this.pending.splice(0).sort((a, b) => a.member.start - b.member.start);
    let group: Waiter[] = [];
    const groups: Waiter[][] = [];
    for (const w of batch) {
      const last = group[group.length - 1];
      if (last && last.member.end === w.member.start && w.member.end - group[0]!.member.start <= this.maxRangeBytes) {
        group.push(w);
      } else {
        if (group.length) groups.push(group);
        group = [w];
      }
    }
    if (group.length) groups.push(group);
    for (const g of groups) void this.fetchGroup(g);
  }

  private async fetchGroup(group: Waiter[]): Promise<void> {
    const start = group[0]!.member.start;
    const end = group[group.length - 1]!.member.end;
    let data: Buffer;
    try {
      data = await this.fetchRange(start, end - start, group[0]!.priority);
    } catch (err) {
      for (const w of group) w.reject(err);
      return;
    }
    // Each member is decompressed, verified and stored on its own, so one bad member fails only its own readers.
    await Promise.all(
      group.map(async (w) => {
        try {
          await this.storeMember(w.member, data.subarray(w.member.start - start, w.member.end - start));
          w.resolve();
        } catch (err) {
          w.reject(err);
        }
      }),
    );
  }

  private async storeMember(member: Member, compressed: Buffer): Promise<void> {
    let plain: Buffer;
    try {
      plain = await this.reader.codec.decompress(compressed);
    } catch (err) {
      throw new EsgzError(
        'BAD_LAYER',
        `${this.reader.where}: member at ${member.start} does not decompress (${err instanceof Error ? err.message : String(err)})`,
        { cause: err },
      );
    }
    for (const chunk of member.chunks) {
      if (plain.length < chunk.innerOffset + chunk.length) {
        throw new EsgzError(
          'BAD_LAYER',
          `${this.reader.where}: ${chunk.name}: member at ${member.start} holds ${plain.length} bytes, chunk needs ${chunk.innerOffset + chunk.length}`,
        );
      }
      const bytes = plain.subarray(chunk.innerOffset, chunk.innerOffset + chunk.length);
      if (!chunk.chunkDigest) continue;
      const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      if (actual !== chunk.chunkDigest) {
        throw new EsgzError(
          'DIGEST_MISMATCH',
          `${this.reader.where}: ${chunk.name}: chunk at ${chunk.fileOffset} has digest ${actual}, TOC says ${chunk.chunkDigest}`,
        );
      }
      this.fetchedHere.add(chunk.chunkDigest);
      // A file this process has not checked may be the corrupt one being replaced: write it again.
      if (!this.cache.isVerified(chunk.chunkDigest)) await this.cache.stage(chunk.chunkDigest, bytes);
      this.stats.chunksFetched++;
    }
  }

  /** One Range read with retries on transient faults, bounded by the deadline. */
  private fetchRange(offset: number, length: number, priority: RequestPriority = 'read'): Promise<Buffer> {
    return this.limiter.run(priority, () => this.fetchRangeNow(offset, length, priority));
  }

  private fetchRangeNow(offset: number, length: number, priority: RequestPriority): Promise<Buffer> {
    return this.withDeadline(async (signal) => {
      let lastError: unknown;
      for (let attempt = 0; attempt < this.attempts; attempt++) {
        if (signal.aborted) break;
        try {
          this.stats.requests++;
          const data = await this.blob.read(offset, length);
          if (data.length !== length)
            throw new EsgzError(
              'SIZE_MISMATCH',
              `${this.reader.where}: range read at ${offset} returned ${data.length} of ${length} bytes`,
            );
          this.stats.bytes += data.length;
          if (priority === 'background') this.stats.backgroundBytes += data.length;
          return data;
        } catch (err) {
          lastError = err;
          if (!isTransient(err)) throw err;
          await sleep(Math.min(2000, 100 * 2 ** attempt), signal);
        }
      }
      throw lastError ?? new EsgzError('NETWORK', `${this.reader.where}: range read at ${offset} gave up`);
    }, `range ${offset}+${length}`);
  }

  private withDeadline<T>(work: (signal: AbortSignal) => Promise<T>, what: string): Promise<T> {
    const controller = new AbortController();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        controller.abort();
        reject(new EsgzError('NETWORK', `${this.reader.where}: ${what}: no answer within ${this.deadlineMs} ms`));
      }, this.deadlineMs);
      work(controller.signal).then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  /**
   * Fetches the blob range [0, end) with one Range request (several only past maxPrefetchBytes,
   * to bound memory) and stores every chunk whose member lies entirely inside it: the prioritized files
   * before the prefetch landmark. Resolves once they are on disk.
   */
  async prefetch(end: number): Promise<{ bytes: number; chunks: number; requests: number }> {
    const members = [...this.membersByStart.values()].filter((m) => m.end <= end).sort((a, b) => a.start - b.start);
    const missing: Member[] = [];
    for (const m of members) {
      const cached = await Promise.all(
        m.chunks.map((c) => (c.chunkDigest ? this.cache.has(c.chunkDigest, c.length) : Promise.resolve(false))),
      );
      if (!cached.every(Boolean)) missing.push(m);
    }
    let bytes = 0;
    let chunks = 0;
    let requests = 0;
    while (missing.length > 0) {
      const from = missing[0]!.start;
      let count = 1;
      while (count < missing.length && missing[count]!.end - from <= this.maxPrefetchBytes) count++;
      const batch = missing.splice(0, count);
      const to = batch[batch.length - 1]!.end;
      // Gaps between missing members (headers of directories, cached files) ride along: one request beats several.
      const data = await this.fetchRange(from, to - from);
      requests++;
      bytes += data.length;
      for (const m of batch) {
        await this.storeMember(m, data.subarray(m.start - from, m.end - from));
        chunks += m.chunks.length;
      }
    }
    await this.cache.drain();
    return { bytes, chunks, requests };
  }

  /**
   * The background fetch: every member not yet cached, in blob order, in Range requests of about
   * `backgroundRangeBytes` at the background priority (readers' requests overtake them), a few in
   * flight. Members a reader is already fetching are left to it. What is cached is skipped, so a
   * fetch stopped by `signal` (or a killed process) resumes where it left off.
   */
  async fetchAll(options: { signal?: AbortSignal; onProgress?(bytes: number): void } = {}): Promise<void> {
    const ranges = this.backgroundRanges(await this.missingMembers());
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    for (const range of ranges) {
      if (options.signal?.aborted || failure) break;
      const bytes = range[range.length - 1]!.end - range[0]!.start;
      const p = this.ensureMembers(range, 'background').then(
        () => options.onProgress?.(bytes),
        (err: unknown) => void (failure ??= err),
      );
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      // Queue one range beyond the limiter's background slots, so the link never idles between ranges.
      if (inFlight.size > this.limiter.maxBackground) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
    // Done means on disk: a later process (a run with the registry gone) finds every chunk.
    await this.cache.drain();
  }

  /** Members with a chunk that is not cached, in blob order. */
  private async missingMembers(): Promise<Member[]> {
    const members = [...this.membersByStart.values()].sort((a, b) => a.start - b.start);
    const missing: Member[] = [];
    for (const m of members) {
      if (this.inFlight.has(m.start)) continue;
      const cached = await Promise.all(
        m.chunks.map((c) => (c.chunkDigest ? this.cache.has(c.chunkDigest, c.length) : Promise.resolve(true))),
      );
      if (!cached.every(Boolean)) missing.push(m);
    }
    return missing;
  }

  /**
   * Runs of members of at most `backgroundRangeBytes` (one member may be bigger); gaps of up to
   * `MAX_BACKGROUND_GAP` (directory headers, cached members) ride along: one request beats several.
   */
  private backgroundRanges(members: Member[]): Member[][] {
    const ranges: Member[][] = [];
    let range: Member[] = [];
    for (const m of members) {
      const last = range[range.length - 1];
      if (last && (m.start - last.end > MAX_BACKGROUND_GAP || m.end - range[0]!.start > this.backgroundRangeBytes)) {
        ranges.push(range);
        range = [];
      }
      range.push(m);
    }
    if (range.length) ranges.push(range);
    return ranges;
  }
}

/** Errors worth another attempt: network trouble, 5xx/429, short reads. Digest mismatches are not. */
export function isTransient(err: unknown): boolean {
  if (isEsgzError(err))
    return (
      err.code === 'NETWORK' ||
      err.code === 'SIZE_MISMATCH' ||
      (err.code === 'REGISTRY' && /\b(5\d\d|429)\b/.test(err.message))
    );
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (
    typeof code === 'string' &&
    /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|UND_ERR_SOCKET|UND_ERR_CONNECT_TIMEOUT|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT)$/.test(
      code,
    )
  );
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}
