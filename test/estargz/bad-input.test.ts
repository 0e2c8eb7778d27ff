// eStargz's own bad-input tests (its gzip footers, bounded gzip inflation) and the tar reader's
// global PAX handling; what every codec must refuse is the shared suite (codec-suite.ts).
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createGzipCodec } from '../../src/estargz/gzip-codec.js';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import { gzipBuffer } from '../fixtures/tar.js';
import { runBadInputSuite } from './codec-suite.js';
import { ESTARGZ_SUITE_CODEC, expectEsgzError } from './helpers.js';

const fixture = runBadInputSuite(ESTARGZ_SUITE_CODEC);
const CHUNK = fixture.chunkSize;
const blob = () => fixture.blob();

describe('eStargz reader rejects bad footers', () => {
  it('the gzip codec alone finds every footer kind (its footer window covers the 51-byte one)', async () => {
    const codec = createGzipCodec();
    const reader = await EstargzReader.open(bufferBlobReader(blob()), { codecs: [codec] });
    expect(reader.footer.kind).toBe('estargz');
  });

  it('a corrupted footer', async () => {
    const bad = Buffer.from(blob());
    bad[bad.length - 51 + 20] = 0x7a; // a 'z' inside the 16 hex digits of the TOC offset
    await expectEsgzError(EstargzReader.open(bufferBlobReader(bad)), 'BAD_FORMAT');
    const magic = Buffer.from(blob());
    magic[magic.length - 51 + 33] = 0x58; // STARGZ -> STAXGZ
    await expectEsgzError(EstargzReader.open(bufferBlobReader(magic)), 'BAD_FORMAT', 'STARGZ');
  });

  it('a footer pointing at the wrong offset', async () => {
    const { estargzFooter } = await import('../../src/estargz/gzip-codec.js');
    const bad = Buffer.concat([blob().subarray(0, blob().length - 51), estargzFooter(fixture.tocOffset() - 10)]);
    await expectEsgzError(EstargzReader.open(bufferBlobReader(bad)), 'BAD_FORMAT');
  });

  it('a footer whose TOC would be larger than esgz reads (issue #12)', async () => {
    const { estargzFooter } = await import('../../src/estargz/gzip-codec.js');
    const far = Buffer.concat([Buffer.alloc(80 << 20), blob().subarray(fixture.tocOffset())]);
    const moved = Buffer.concat([far.subarray(0, far.length - 51), estargzFooter(0)]);
    await expectEsgzError(EstargzReader.open(bufferBlobReader(moved)), 'BAD_FORMAT', 'more than esgz reads');
  });
});

describe('bounded inflation (issue #12)', () => {
  it('a chunk read inflates only what the TOC says the chunk needs', async () => {
    const { gunzipPrefix } = await import('../../src/estargz/gzip-codec.js');
    const bomb = gzipSync(Buffer.alloc(64 << 20));
    expect((await gunzipPrefix(bomb, 4096)).length).toBe(4096);
    expect((await gunzipPrefix(gzipBuffer(Buffer.from('short')), 4096)).toString()).toBe('short');
    expect((await createGzipCodec().decompress(bomb, 100)).length).toBe(100);
    // The reader's codec is bounded by what this blob's TOC declares for any member.
    const reader = await EstargzReader.open(bufferBlobReader(blob()));
    expect((await reader.codec.decompress(bomb)).length).toBeLessThanOrEqual(CHUNK + 512);
  });

  it('zstd frames stop at the limit, with or without a content size', async () => {
    const { decompressFrames } = await import('../../src/estargz/zstdchunked/format.js');
    const { compress } = await import('zstd-napi');
    const frame = compress(Buffer.alloc(8 << 20));
    expect(decompressFrames(frame, 'm', 0, 1000).length).toBe(1000);
    expect(decompressFrames(Buffer.concat([frame, frame]), 'm', 0, (8 << 20) + 5).length).toBe((8 << 20) + 5);
  });
});

async function* once(bytes: Buffer): AsyncGenerator<Buffer> {
  yield bytes;
}

describe('global PAX headers (issue #12)', () => {
  it('apply to later entries, linear in their number, and are refused when copying them would blow up the layer', async () => {
    const { readTar, MAX_APPLIED_GLOBAL_PAX_BYTES } = await import('../../src/estargz/tar.js');
    const { paxGlobalFlood, tarEntry, paxRecord, END_OF_ARCHIVE } = await import('../fixtures/hostile-format.js');
    const names = async (tarBytes: Buffer) => {
      const out: Array<[string, number]> = [];
      for await (const e of readTar(once(tarBytes), 'layer')) out.push([e.header.name, e.header.pax.size]);
      return out;
    };
    const started = Date.now();
    expect(await names(paxGlobalFlood(50_000))).toEqual([['hello.txt', 50_000]]);
    expect(Date.now() - started).toBeLessThan(5000);
    // A global mtime applies; a later entry's own empty record deletes a global one.
    const withGlobals = Buffer.concat([
      tarEntry(
        { name: 'g', typeflag: 'g' },
        Buffer.concat([paxRecord('comment', 'c1'), paxRecord('SCHILY.xattr.user.a', 'v')]),
      ),
      tarEntry({ name: 'one' }, Buffer.from('1')),
      tarEntry({ name: 'x', typeflag: 'x' }, paxRecord('comment', '')),
      tarEntry({ name: 'two' }, Buffer.from('2')),
      END_OF_ARCHIVE,
    ]);
    const seen: Array<Record<string, string>> = [];
    for await (const e of readTar(once(withGlobals), 'layer'))
      seen.push(Object.fromEntries([...e.header.pax].map(([k, v]) => [k, v.toString()])));
    expect(seen).toEqual([{ comment: 'c1', 'SCHILY.xattr.user.a': 'v' }, { 'SCHILY.xattr.user.a': 'v' }]);
    // 64 KiB of globals ahead of 300 entries would put 19 MiB of copies into the output.
    const flood = Buffer.concat([
      tarEntry({ name: 'g', typeflag: 'g' }, paxRecord('comment', 'x'.repeat(64 << 10))),
      ...Array.from({ length: 300 }, (_, i) => tarEntry({ name: `f${i}` })),
      END_OF_ARCHIVE,
    ]);
    expect(MAX_APPLIED_GLOBAL_PAX_BYTES).toBe(16 << 20);
    await expectEsgzError(names(flood), 'BAD_LAYER', 'global PAX');
  });
});
