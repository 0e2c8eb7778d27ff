import zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { decompressFrames } from '../../src/estargz/zstdchunked/format.js';
import { LIBDEFLATE_ADDON_PATH, MemberPool, type MemberCompressorKind } from '../../src/estargz/member-pool.js';

const members = [
  Buffer.from('a'),
  Buffer.alloc(0),
  Buffer.from('hello, world '.repeat(5000)),
  Buffer.alloc(70_000, 7),
  Buffer.from('tail'),
];
const pools: MemberPool[] = [];
afterAll(async () => Promise.all(pools.map((p) => p.close())));

function pool(kind: MemberCompressorKind, level: number): MemberPool {
  const p = new MemberPool({ kind, level, workers: 2, label: kind });
  pools.push(p);
  return p;
}

/** Members end to end in a pool buffer, and where each ends. */
function batchOf(p: MemberPool, parts: Buffer[]): { batch: Buffer; ends: Uint32Array } {
  const total = parts.reduce((n, b) => n + b.length, 0);
  const batch = p.allocate(total).subarray(0, total);
  const ends = new Uint32Array(parts.length);
  let pos = 0;
  parts.forEach((part, i) => {
    pos += part.copy(batch, pos);
    ends[i] = pos;
  });
  return { batch, ends };
}

const decoders: Record<MemberCompressorKind, (b: Buffer) => Buffer> = {
  libdeflate: (b) => zlib.gunzipSync(b),
  zlib: (b) => zlib.gunzipSync(b),
  zstd: (b) => decompressFrames(b, 'test'),
};

describe('member pool', () => {
  for (const [kind, level] of [
    ['libdeflate', 9],
    ['zlib', 9],
    ['zstd', 3],
  ] as const) {
    it(`${kind}: every member of a batch is its own complete member, byte-identical to compressing it alone`, async () => {
      const p = pool(kind, level);
      const { batch, ends } = batchOf(p, members);
      const { data, sizes } = await p.compressMembers(batch, ends);
      expect(batch.length).toBe(0); // handed over: moved to the worker
      expect(sizes.length).toBe(members.length);
      expect(sizes.reduce((n, s) => n + s, 0)).toBe(data.length);
      let pos = 0;
      for (const [i, member] of members.entries()) {
        const compressed = data.subarray(pos, pos + sizes[i]!);
        pos += sizes[i]!;
        expect(decoders[kind](compressed).equals(member), `member ${i}`).toBe(true);
        expect((await p.compress(member)).equals(compressed), `member ${i} alone`).toBe(true);
      }
    });
  }

  it('a slow batch holds up at most one batch behind it: the rest go to the free worker', async () => {
    const p = pool('libdeflate', 12);
    // Compressible but not trivially (level 12 takes a good second on 24 MiB of this).
    const slowInput = Buffer.alloc(24 << 20);
    for (let i = 0; i < slowInput.length; i += 4) slowInput.writeUInt32LE((Math.imul(i, 2654435761) >>> 20) & 0x3ff, i);
    const finished: string[] = [];
    const slow = batchOf(p, [slowInput]);
    const done = [p.compressMembers(slow.batch, slow.ends).then(() => finished.push('slow'))];
    for (let i = 0; i < 8; i++) {
      const small = batchOf(p, [Buffer.alloc(1000, i)]);
      done.push(p.compressMembers(small.batch, small.ends).then(() => finished.push(`small ${i}`)));
    }
    await Promise.all(done);
    // Per-worker queues would leave half of the small batches behind the slow one.
    expect(finished.indexOf('slow')).toBeGreaterThanOrEqual(7);
  });

  it('copies, never moves, a buffer whose memory other Buffers share', async () => {
    const p = pool('libdeflate', 6);
    const shared = new ArrayBuffer(64);
    const first = Buffer.from(shared, 0, 10).fill(1);
    const sibling = Buffer.from(shared, 10, 10).fill(2);
    const { data } = await p.compressMembers(first, Uint32Array.of(10));
    expect(zlib.gunzipSync(data).equals(Buffer.alloc(10, 1))).toBe(true);
    expect(first.length).toBe(10); // not detached
    expect(sibling.equals(Buffer.alloc(10, 2))).toBe(true);
  });

  it('the libdeflate addon checks its batch arguments', () => {
    type Addon = {
      gzipBatchBound(ends: Uint32Array, level: number): number;
      gzipCompressBatch(
        input: Uint8Array,
        ends: Uint32Array,
        level: number,
        sizes: Uint32Array,
        output: Uint8Array,
      ): number;
    };
    const m = { exports: {} as Addon };
    process.dlopen(m as unknown as NodeJS.Module, LIBDEFLATE_ADDON_PATH);
    const { gzipBatchBound, gzipCompressBatch } = m.exports;
    const input = Buffer.from('0123456789');
    const out = Buffer.alloc(gzipBatchBound(Uint32Array.of(4, 10), 9));
    expect(() => gzipCompressBatch(input, Uint32Array.of(4, 11), 9, new Uint32Array(2), out)).toThrow(
      /ends must rise within the input/,
    );
    expect(() => gzipCompressBatch(input, Uint32Array.of(6, 4), 9, new Uint32Array(2), out)).toThrow(
      /ends must rise within the input/,
    );
    expect(() => gzipCompressBatch(input, Uint32Array.of(4), 13, new Uint32Array(1), out)).toThrow(
      /level must be an integer from 0 to 12/,
    );
    expect(() => gzipCompressBatch(input, Uint32Array.of(4, 10), 9, new Uint32Array(1), out)).toThrow(/same length/);
    expect(() => gzipCompressBatch(input, Uint32Array.of(4, 10), 9, new Uint32Array(2), out.subarray(0, 20))).toThrow(
      /smaller than gzipBatchBound/,
    );
    const sizes = new Uint32Array(2);
    const written = gzipCompressBatch(input, Uint32Array.of(4, 10), 9, sizes, out);
    expect(written).toBe(sizes[0]! + sizes[1]!);
    expect(zlib.gunzipSync(out.subarray(0, written)).toString()).toBe('0123456789');
    expect(zlib.gunzipSync(out.subarray(0, sizes[0])).toString()).toBe('0123');
  });
});
