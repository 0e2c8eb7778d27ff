/**
 * Compression that overlaps the workload run of `image optimize`.
 *
 * The profile decides only the order of a layer's members, and a member's compressed bytes are a
 * pure function of its uncompressed bytes (the MemberCompressor contract, estargz/codec.ts). So
 * while the workload runs, each unpacked layer is converted once in its plain order with a
 * compressor that remembers every member it compressed, keyed by the sha256 of the member's
 * bytes, its compressed bytes spilled to a file. The real, prioritized conversion then goes
 * through the same compressor: a member it has seen is read back from the spill file, and only
 * the few members the new order changes (the moved files' last chunks and their neighbours)
 * compress again. The output is byte for byte what a conversion without the memo writes.
 *
 * Memory: an index entry (~100 bytes) per member; the spill file holds about one compressed
 * image's worth of bytes (the profiled layers' compressed size) in the optimize's temp dir.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { CompressedMembers } from '../estargz/codec.js';
import { createCodec } from '../estargz/codecs.js';
import { writeEstargz } from '../estargz/writer.js';
import type { ChunkedTransformOptions, SharedCompressor } from '../convert/transform.js';

interface SpilledMember {
  offset: number;
  size: number;
}

/** A MemberCompressor that serves members it compressed before from a spill file. */
export class MemoizingCompressor implements SharedCompressor {
  private readonly index = new Map<string, SpilledMember>();
  /** Bytes appended to the spill file (written or being written). */
  private end = 0;
  /** The spill writes in order: reads of recent members wait for it. */
  private writes: Promise<void> = Promise.resolve();
  private written = 0;
  /** Members served from the spill file / compressed, for reports and tests. */
  hits = 0;
  misses = 0;

  private constructor(
    private readonly inner: SharedCompressor,
    private readonly spill: FileHandle,
  ) {}

  /** A memo spilling to `dir/members` (the caller removes `dir`), compressing on `inner`. */
  static async create(inner: SharedCompressor, dir: string): Promise<MemoizingCompressor> {
    return new MemoizingCompressor(inner, await open(join(dir, 'members'), 'w+'));
  }

  get format() {
    return this.inner.format;
  }

  get size(): number {
    return this.inner.size;
  }

  get backend(): string {
    return this.inner.backend;
  }

  /** Bytes the spill file holds. */
  get spilledBytes(): number {
    return this.end;
  }

  start(): void {
    this.inner.start();
  }

  allocate(size: number): Buffer {
    return this.inner.allocate(size);
  }

  /** Not memoized: whole members come from codec tails (the TOC), which differ every time. */
  compress(input: Buffer): Promise<Buffer> {
    return this.inner.compress(input);
  }

  async compressMembers(batch: Buffer, ends: Uint32Array): Promise<CompressedMembers> {
    // Keys first: a batch handed to the inner compressor moves to a worker.
    const keys: string[] = [];
    let start = 0;
    for (const end of ends) {
      keys.push(createHash('sha256').update(batch.subarray(start, end)).digest('base64'));
      start = end;
    }
    const known = keys.map((key) => this.index.get(key));
    const missing = known.flatMap((hit, i) => (hit ? [] : [i]));
    this.hits += keys.length - missing.length;
    this.misses += missing.length;
    const compressed = missing.length > 0 ? this.compressMissing(batch, ends, missing) : undefined;
    const served = this.readSpilled(known);
    const [fresh, spilled] = await Promise.all([compressed, served]);
    if (fresh) this.remember(missing, keys, fresh);
    return assemble(known, spilled, missing, fresh);
  }

  async close(): Promise<void> {
    await this.writes.catch(() => undefined);
    await this.spill.close();
  }

  /** The members not seen before, compressed in one batch (the whole batch when none is known). */
  private compressMissing(batch: Buffer, ends: Uint32Array, missing: number[]): Promise<CompressedMembers> {
    if (missing.length === ends.length) return this.inner.compressMembers(batch, ends);
    const bytes = missing.reduce((sum, i) => sum + memberLength(ends, i), 0);
    const subset = this.inner.allocate(bytes);
    const subsetEnds = new Uint32Array(missing.length);
    let length = 0;
    missing.forEach((i, n) => {
      length += batch.copy(subset, length, i === 0 ? 0 : ends[i - 1]!, ends[i]!);
      subsetEnds[n] = length;
    });
    return this.inner.compressMembers(subset.subarray(0, length), subsetEnds);
  }

  /** Appends freshly compressed members to the spill file and indexes them. */
  private remember(missing: number[], keys: string[], fresh: CompressedMembers): void {
    const base = this.end;
    let offset = 0;
    missing.forEach((i, n) => {
      const size = fresh.sizes[n]!;
      if (!this.index.has(keys[i]!)) this.index.set(keys[i]!, { offset: base + offset, size });
      offset += size;
    });
    this.end += fresh.data.length;
    const data = fresh.data;
    this.writes = this.writes.then(async () => {
      await this.spill.write(data, 0, data.length, base);
      this.written = base + data.length;
    });
  }

  /** The known members' bytes, read in as few reads as they are contiguous in the spill file. */
  private async readSpilled(known: Array<SpilledMember | undefined>): Promise<Map<SpilledMember, Buffer>> {
    const found = new Map<SpilledMember, Buffer>();
    const hits = known.filter((k): k is SpilledMember => k !== undefined);
    if (hits.length === 0) return found;
    if (hits.some((h) => h.offset + h.size > this.written)) await this.writes;
    for (let i = 0; i < hits.length;) {
      let j = i + 1;
      while (j < hits.length && hits[j]!.offset === hits[j - 1]!.offset + hits[j - 1]!.size) j++;
      const first = hits[i]!;
      const length = hits[j - 1]!.offset + hits[j - 1]!.size - first.offset;
      const range = Buffer.allocUnsafe(length);
      const { bytesRead } = await this.spill.read(range, 0, length, first.offset);
      if (bytesRead !== length) throw new Error(`member spill file short read at ${first.offset}`);
      for (let k = i; k < j; k++)
        found.set(
          hits[k]!,
          range.subarray(hits[k]!.offset - first.offset, hits[k]!.offset - first.offset + hits[k]!.size),
        );
      i = j;
    }
    return found;
  }
}

function memberLength(ends: Uint32Array, i: number): number {
  return ends[i]! - (i === 0 ? 0 : ends[i - 1]!);
}

/** The batch's result in member order: spilled bytes for known members, fresh ones for the rest. */
function assemble(
  known: Array<SpilledMember | undefined>,
  spilled: Map<SpilledMember, Buffer>,
  missing: number[],
  fresh: CompressedMembers | undefined,
): CompressedMembers {
  if (fresh && missing.length === known.length) return fresh;
  const sizes = new Uint32Array(known.length);
  const parts: Buffer[] = [];
  let freshIndex = 0;
  let freshOffset = 0;
  known.forEach((hit, i) => {
    if (hit) {
      parts.push(spilled.get(hit)!);
      sizes[i] = hit.size;
      return;
    }
    const size = fresh!.sizes[freshIndex++]!;
    parts.push(fresh!.data.subarray(freshOffset, freshOffset + size));
    freshOffset += size;
    sizes[i] = size;
  });
  return { data: Buffer.concat(parts), sizes };
}

/** Discards what the plain-order conversion writes: only its members are wanted. */
function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

/**
 * Converts the profiled layers' tars in their plain order, one at a time, as soon as each is
 * unpacked, to fill the memo. Each layer's run is awaited before its real conversion starts.
 */
export class MemberPrecompute {
  private queue: Promise<void> = Promise.resolve();
  private readonly runs = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();

  constructor(
    private readonly memo: MemoizingCompressor,
    private readonly format: 'estargz' | 'zstdchunked',
    private readonly options: ChunkedTransformOptions,
    private readonly warn: (message: string) => void,
  ) {}

  /** Queues the conversion of the layer `digest` whose uncompressed tar is `tarFile`. */
  add(digest: string, tarFile: string): void {
    if (this.runs.has(digest)) return;
    const run = this.queue.then(() => this.convert(digest, tarFile));
    this.queue = run;
    this.runs.set(digest, run);
  }

  /** Resolves once the layer's run is over (at once when none was queued). */
  settled(digest: string): Promise<void> {
    return this.runs.get(digest) ?? Promise.resolve();
  }

  /** Stops the runs still going and waits for them. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.queue;
  }

  private async convert(digest: string, tarFile: string): Promise<void> {
    if (this.abort.signal.aborted) return;
    const stream = createReadStream(tarFile, { highWaterMark: 1 << 20 });
    try {
      await writeEstargz(stream, discard(), {
        codec: createCodec(this.format === 'estargz' ? 'gzip' : 'zstd'),
        compressor: this.memo,
        chunkSize: this.options.chunkSize,
        minChunkSize: this.options.minChunkSize,
        where: `layer ${digest}`,
        signal: this.abort.signal,
      });
    } catch (err) {
      // Only a head start: the real conversion compresses whatever is missing, and reports errors.
      if (!this.abort.signal.aborted) this.warn(`compressing ahead of the profile stopped: ${(err as Error).message}`);
    } finally {
      stream.destroy();
    }
  }
}
