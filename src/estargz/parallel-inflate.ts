/**
 * Inflates an eStargz blob on every core: its gzip members are independent, so the blob is cut
 * at member starts (the TOC's chunk offsets) into ranges of about a megabyte, each range is
 * gunzipped on libuv's thread pool (zlib handles a run of concatenated members), and the results
 * come out in blob order. The output is the same tar stream one gunzip of the whole blob gives:
 * a cut that is not a member start leaves a truncated member, which zlib refuses, so a wrong TOC
 * fails the inflate instead of changing bytes. Memory: a few ranges in and out at once, each
 * bounded by its members' declared sizes (the gzip trailers, which zlib checks).
 */
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { createGunzip, gunzip } from 'node:zlib';
import { EsgzError } from '../errors.js';
import type { JTOC } from './toc.js';

const gunzipAsync = promisify(gunzip);

/** A range goes to the thread pool once it holds this many compressed bytes… */
const RANGE_TARGET = 1 << 20;
/** …or its members inflate to this many bytes. */
const RANGE_MAX_OUTPUT = 8 << 20;
/** zlib's smallest output chunk. */
const MIN_ZLIB_CHUNK = 64;
/** Size of the gzip trailer (CRC32, ISIZE) that ends every member. */
const GZIP_TRAILER = 8;

/** Where members start, from the TOC: the first member, every chunk's member, the TOC member. */
export function memberStarts(toc: JTOC, tocOffset: number): number[] {
  const starts = new Set<number>([0, tocOffset]);
  for (const e of toc.entries) if (e.offset !== undefined && e.offset > 0 && e.offset < tocOffset) starts.add(e.offset);
  return [...starts].sort((a, b) => a - b);
}

export interface ParallelInflateOptions {
  /** Ranges inflating at once (default 4: libuv's thread pool). */
  concurrency?: number;
  /** Names the layer in errors. */
  where: string;
}

/**
 * The uncompressed bytes of the gzip blob read from `blob` (in order, from its first byte), cut
 * at `starts` (sorted member starts, 0 first).
 */
export async function* inflateMembers(
  blob: AsyncIterable<Buffer>,
  starts: number[],
  options: ParallelInflateOptions,
): AsyncGenerator<Buffer> {
  const concurrency = options.concurrency ?? 4;
  const inFlight: Array<Promise<Buffer>> = [];
  const cutter = new RangeCutter(starts);
  const dispatch = async function* (range: Buffer, maxOutput: number) {
    // One output buffer for the range (zlib's default 16 KiB pieces cost a thread-pool round
    // trip and a copy each, on this thread).
    const chunkSize = Math.min(Math.max(maxOutput, MIN_ZLIB_CHUNK), RANGE_MAX_OUTPUT);
    const result = gunzipAsync(range, { maxOutputLength: Math.max(maxOutput, 1), chunkSize });
    result.catch(() => {}); // observed in order below
    inFlight.push(result);
    while (inFlight.length >= concurrency) yield await take(inFlight, options.where);
  };
  for await (const chunk of blob) {
    for (const range of cutter.push(chunk)) yield* dispatch(range.bytes, range.maxOutput);
  }
  while (inFlight.length > 0) yield await take(inFlight, options.where);
  // The members after the last known start (the TOC's) and the footer: no declared size to
  // bound a buffer by, so they stream through one gunzip, as a serial inflate would.
  const last = cutter.end();
  if (!last) return;
  try {
    for await (const piece of Readable.from([last]).pipe(createGunzip())) yield piece as Buffer;
  } catch (err) {
    throw new EsgzError('BAD_LAYER', `${options.where}: gzip inflate failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function take(inFlight: Array<Promise<Buffer>>, where: string): Promise<Buffer> {
  try {
    return await inFlight.shift()!;
  } catch (err) {
    throw new EsgzError('BAD_LAYER', `${where}: gzip member inflate failed: ${(err as Error).message}`, { cause: err });
  }
}

interface Range {
  bytes: Buffer;
  /** Sum of the members' declared sizes (gzip ISIZE), the most the range may inflate to. */
  maxOutput: number;
}

/** Collects the blob's bytes and hands them out in ranges that start and end at member starts. */
class RangeCutter {
  private parts: Buffer[] = [];
  private length = 0;
  /** Blob offset of the first buffered byte (a member start). */
  private start = 0;
  /** Index in `starts` of the next member start after `start`. */
  private next = 1;
  /** Declared output of the members buffered whole so far. */
  private declared = 0;

  constructor(private readonly starts: number[]) {}

  *push(chunk: Buffer): Generator<Range> {
    this.parts.push(chunk);
    this.length += chunk.length;
    const end = this.start + this.length;
    let declared = this.declared;
    while (this.next < this.starts.length && this.starts[this.next]! <= end) {
      const memberEnd = this.starts[this.next]!;
      declared += this.isize(memberEnd);
      this.next++;
      if (memberEnd - this.start >= RANGE_TARGET || declared >= RANGE_MAX_OUTPUT) {
        yield this.take(memberEnd, declared);
        declared = 0;
      }
    }
    this.declared = declared;
  }

  /** What is left after the last cut. */
  end(): Buffer | undefined {
    return this.length === 0 ? undefined : Buffer.concat(this.parts);
  }

  /** The gzip ISIZE of the member ending at `memberEnd` (its last 4 bytes, little-endian). */
  private isize(memberEnd: number): number {
    const at = memberEnd - this.start - 4;
    if (at < GZIP_TRAILER - 4) return 0;
    let value = 0;
    for (let i = 3; i >= 0; i--) value = value * 256 + this.byteAt(at + i);
    return value;
  }

  private byteAt(offset: number): number {
    for (const part of this.parts) {
      if (offset < part.length) return part[offset]!;
      offset -= part.length;
    }
    return 0;
  }

  private take(cut: number, declared: number): Range {
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    const size = cut - this.start;
    const bytes = all.subarray(0, size);
    const rest = all.subarray(size);
    this.parts = rest.length > 0 ? [rest] : [];
    this.length = rest.length;
    this.start = cut;
    return { bytes, maxOutput: declared };
  }
}
