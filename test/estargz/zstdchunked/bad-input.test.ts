// Damaged zstd:chunked blobs and damaged zstd sources: one-line EsgzErrors that say what and where.
import { describe, expect, it } from 'vitest';
import { EsgzError } from '../../../src/errors.js';
import { bufferBlobReader, EstargzReader } from '../../../src/estargz/reader.js';
import { decompressFrames, skippableFrame } from '../../../src/estargz/zstdchunked/format.js';
import { generatedBuffer } from '../../fixtures/tar.js';
import { runBadInputSuite } from '../codec-suite.js';
import { expectEsgzError } from '../helpers.js';
import { convertZstd, rawFooter, zstdCli, ZSTD_CHUNKED_SUITE_CODEC } from './helpers.js';
import { MAX_TOC_SIZE } from '../../../src/estargz/constants.js';

const fixture = runBadInputSuite(ZSTD_CHUNKED_SUITE_CODEC);
const open = (blob: Buffer, expectedTOCDigest?: string) =>
  EstargzReader.open(bufferBlobReader(blob), { where: 'layer X', expectedTOCDigest });
/** Offset of the compressed TOC (after its skippable header). */
const tocAt = () => Number(rawFooter(fixture.blob()).offset);

function patched(edit: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(fixture.blob());
  edit(copy);
  return copy;
}

describe('footer', () => {
  it('wrong magic', async () => {
    const bad = patched((b) => b.write('XnUlInUx', b.length - 8, 'latin1'));
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'layer X', 'wrong magic');
  });

  it('footer frame whose length field lies', async () => {
    const bad = patched((b) => b.writeUInt32LE(41, b.length - 44));
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'layer X', 'skippable footer frame');
  });

  it('TOC offset beyond the blob', async () => {
    const bad = patched((b) => b.writeBigUInt64LE(BigInt(b.length), b.length - 40));
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'does not lie inside the blob');
  });

  it('unsupported manifest type', async () => {
    const bad = patched((b) => b.writeBigUInt64LE(2n, b.length - 16));
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'manifest type 2');
  });
});

describe('TOC', () => {
  it('TOC skippable frame with a lying length', async () => {
    const bad = patched((b) => b.writeUInt32LE(b.readUInt32LE(tocAt() - 4) + 1000, tocAt() - 4));
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'layer X', 'skippable frame says');
  });

  it('TOC not in a skippable frame', async () => {
    const bad = patched((b) => b.writeUInt32LE(0x12345678, tocAt() - 8));
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'zstd');
  });

  it('corrupt compressed TOC bytes', async () => {
    const bad = patched((b) => {
      const mid = tocAt() + Math.floor(b.readUInt32LE(tocAt() - 4) / 2);
      b[mid] = b[mid]! ^ 0xff;
    });
    await expectEsgzError(open(bad), 'BAD_FORMAT', 'layer X', 'zstd:chunked TOC');
  });
});

describe('data frames', () => {
  it('frames cut short, stray bytes, and a skippable frame running past the data', () => {
    const frame = zstdCli(['-c', '-q'], Buffer.from('hello world'));
    expect(decompressFrames(Buffer.concat([frame, skippableFrame(Buffer.from('meta')), frame]), 'm').toString()).toBe(
      'hello worldhello world',
    );
    expect(() => decompressFrames(frame.subarray(0, frame.length - 3), 'm', 100)).toThrow(
      /zstd frame at offset 100 is truncated or corrupt/,
    );
    expect(() => decompressFrames(Buffer.concat([frame, Buffer.from('xyz')]), 'm')).toThrow(/3 stray bytes at offset/);
    expect(() => decompressFrames(Buffer.from('not zstd at all'), 'm')).toThrow(/no zstd frame at offset 0/);
    const lying = Buffer.concat([frame, skippableFrame(Buffer.alloc(10)).subarray(0, 8), Buffer.alloc(4)]);
    lying.writeUInt32LE(1000, frame.length + 4);
    expect(() => decompressFrames(lying, 'm')).toThrow(
      /skippable frame at offset \d+ says 1000 bytes but only 4 follow/,
    );
    for (const bad of [frame.subarray(0, 3), Buffer.from('xyz')]) {
      try {
        decompressFrames(bad, 'm');
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(EsgzError);
        expect((err as EsgzError).code).toBe('BAD_FORMAT');
      }
    }
  });
});

describe('frames from other writers', () => {
  it('frames without a content size (streaming writers such as klauspost/compress) decode in full', () => {
    const data = Buffer.concat([
      generatedBuffer(300_000, 'a', true),
      Buffer.alloc(2_000_000, 7),
      generatedBuffer(100_000, 'b'),
    ]);
    const frame = zstdCli(['-c', '-q', '--no-content-size'], data);
    expect(frame[4]! & 0xc0, 'no frame content size flag').toBe(0);
    expect(frame[4]! & 0x20, 'not single-segment').toBe(0);
    expect(decompressFrames(Buffer.concat([frame, frame]), 'm').equals(Buffer.concat([data, data]))).toBe(true);
    const damaged = Buffer.from(frame);
    damaged[damaged.length - 2]! ^= 0xff; // the XXH64 checksum
    expect(() => decompressFrames(damaged, 'm')).toThrow(/corrupt zstd frame at offset 0/);
  });
});

describe('zstd source layers', () => {
  it('a truncated zstd source is BAD_LAYER, not a short blob', async () => {
    const source = zstdCli(['-c', '-q'], fixture.tar());
    // convertBuffer (test/estargz/helpers.ts) names the source "test layer" when decompressing it.
    await expectEsgzError(
      convertZstd(source.subarray(0, source.length - 50)),
      'BAD_LAYER',
      'test layer',
      'zstd',
      'ended in middle',
    );
  });

  it('a corrupt zstd source is BAD_LAYER', async () => {
    const source = Buffer.from(zstdCli(['-c', '-q'], fixture.tar()));
    source[Math.floor(source.length / 2)] ^= 0xff;
    await expectEsgzError(convertZstd(source), 'BAD_LAYER', 'test layer', 'zstd');
  });
});

describe('zstd:chunked TOC bombs (issue #12)', () => {
  it('a TOC frame that inflates past the TOC size limit is refused without inflating it all', async () => {
    const { createZstdChunkedCodec } = await import('../../../src/estargz/zstdchunked/codec.js');
    const { compress } = await import('zstd-napi');
    const codec = createZstdChunkedCodec();
    const bomb = compress(Buffer.alloc(256 << 20, 0x20));
    await expect(codec.parseTOC(bomb)).rejects.toMatchObject({
      code: 'BAD_FORMAT',
      message: expect.stringMatching(new RegExp(`more than ${MAX_TOC_SIZE >> 20} MiB`)),
    });
    // Members are cut at what the caller asks for.
    expect((await codec.decompress(bomb, 10)).length).toBe(10);
  });
});
