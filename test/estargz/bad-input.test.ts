import { gunzipSync, gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { createGzipCodec } from '../../src/estargz/gzip-codec.js';
import { createGzipPool } from '../../src/estargz/gzip-pool.js';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import type { TOCEntry } from '../../src/estargz/toc.js';
import { buildTar, dir, file, generatedFile, gzipBuffer, type TarEntry } from '../fixtures/tar.js';
import { convertBuffer } from './helpers.js';

const CHUNK = 32 * 1024;
const entries: TarEntry[] = [dir('a'), generatedFile('a/data', 3 * CHUNK + 7), file('a/small', 'hello')];

async function expectEsgzError(promise: Promise<unknown>, code: string, ...fragments: string[]): Promise<EsgzError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected an EsgzError').toBeInstanceOf(EsgzError);
  const e = err as EsgzError;
  expect(e.code, e.message).toBe(code);
  for (const f of fragments) expect(e.message).toContain(f);
  expect(e.message).not.toContain('\n');
  return e;
}

let tar: Buffer;
let blob: Buffer;
let tocDigest: string;
let tocOffset: number;

beforeAll(async () => {
  tar = await buildTar(entries);
  const out = await convertBuffer(tar, { chunkSize: CHUNK });
  blob = out.blob;
  tocDigest = out.result.tocDigest;
  tocOffset = out.result.tocOffset;
});

describe('writer rejects bad layers', () => {
  it('a tar whose header promises more payload than the stream has', async () => {
    const headerEnd = tar.indexOf(Buffer.from('a/data')) + 512;
    const cut = tar.subarray(0, headerEnd + CHUNK + 100);
    await expectEsgzError(convertBuffer(cut, { chunkSize: CHUNK, where: 'layer 3' }), 'BAD_LAYER', 'layer 3', 'a/data', 'truncated');
  });

  it('names with ".." above the root are refused; absolute names and ".." inside are kept, as stargz writes them', async () => {
    await expectEsgzError(convertBuffer(await buildTar([file('../evil', 'x')])), 'UNSAFE_PATH', '../evil');
    await expectEsgzError(convertBuffer(await buildTar([file('a/../../evil', 'x')])), 'UNSAFE_PATH', 'a/../../evil');
    await expectEsgzError(convertBuffer(await buildTar([file('/../evil', 'x')])), 'UNSAFE_PATH', '/../evil');
    const { blob: kept, result } = await convertBuffer(await buildTar([file('/etc/passwd', 'x'), file('a/../b', 'y')]));
    expect(result.toc.entries.map((e) => e.name)).toEqual(expect.arrayContaining(['/etc/passwd', 'a/../b']));
    const reader = await EstargzReader.open(bufferBlobReader(kept));
    expect((await reader.readFile('etc/passwd')).toString()).toBe('x');
    expect((await reader.readFile('b')).toString()).toBe('y');
  });

  it('a hardlink pointing outside the layer', async () => {
    await expectEsgzError(
      convertBuffer(await buildTar([{ type: 'hardlink', path: 'h', target: '../../etc/shadow' }])),
      'UNSAFE_PATH',
      'link target',
    );
  });

  it('corrupt gzip input', async () => {
    const gz = Buffer.from(gzipBuffer(tar));
    for (let i = 100; i < 140; i++) gz[i] = gz[i]! ^ 0x5a;
    const early = await expectEsgzError(convertBuffer(gz), 'BAD_LAYER', 'gzip');
    expect(early.message).toContain('before the first tar entry');
    // Corruption later in a bigger layer names the entry being read (detection runs at most
    // a few hundred KiB of buffering ahead of the tar reader).
    const bigTar = await buildTar([dir('big'), generatedFile('big/file', 4 << 20, { compressible: true }), file('big/after', 'x')]);
    const late = Buffer.from(gzipBuffer(bigTar));
    const at = Math.floor(late.length * 0.6);
    for (let i = at; i < at + 64; i++) late[i] = late[i]! ^ 0x5a;
    const e = await expectEsgzError(convertBuffer(late), 'BAD_LAYER', 'gzip');
    expect(e.message).toMatch(/while reading tar entry "big\/file"/);
  });

  it('a stream that is not a tar at all', async () => {
    await expectEsgzError(convertBuffer(Buffer.from('this is not a tar archive'.repeat(40))), 'BAD_LAYER', 'checksum');
  });
});

describe('reader rejects bad blobs', () => {
  it('the gzip codec alone finds every footer kind (its footer window covers the 51-byte one)', async () => {
    const codec = createGzipCodec();
    const reader = await EstargzReader.open(bufferBlobReader(blob), { codecs: [codec] });
    expect(reader.footer.kind).toBe('estargz');
  });

  it('a blob without footer', async () => {
    await expectEsgzError(EstargzReader.open(bufferBlobReader(gzipBuffer(tar))), 'BAD_FORMAT', 'footer');
  });

  it('a corrupted footer', async () => {
    const bad = Buffer.from(blob);
    bad[bad.length - 51 + 20] = 0x7a; // a 'z' inside the 16 hex digits of the TOC offset
    await expectEsgzError(EstargzReader.open(bufferBlobReader(bad)), 'BAD_FORMAT');
    const magic = Buffer.from(blob);
    magic[magic.length - 51 + 33] = 0x58; // STARGZ -> STAXGZ
    await expectEsgzError(EstargzReader.open(bufferBlobReader(magic)), 'BAD_FORMAT', 'STARGZ');
  });

  it('a footer pointing at the wrong offset', async () => {
    const { estargzFooter } = await import('../../src/estargz/gzip-codec.js');
    const bad = Buffer.concat([blob.subarray(0, blob.length - 51), estargzFooter(tocOffset - 10)]);
    await expectEsgzError(EstargzReader.open(bufferBlobReader(bad)), 'BAD_FORMAT');
  });

  it('a truncated blob', async () => {
    await expectEsgzError(EstargzReader.open(bufferBlobReader(blob.subarray(0, blob.length - 7))), 'BAD_FORMAT');
  });

  it('a TOC digest that does not match the annotation', async () => {
    const other = `sha256:${'0'.repeat(64)}`;
    await expectEsgzError(EstargzReader.open(bufferBlobReader(blob), { expectedTOCDigest: other }), 'DIGEST_MISMATCH', other);
    const ok = await EstargzReader.open(bufferBlobReader(blob), { expectedTOCDigest: tocDigest });
    expect(ok.tocDigest).toBe(tocDigest);
  });

  it('a chunk whose bytes do not match its chunkDigest', async () => {
    // Rewrite the TOC with one chunk digest changed; members stay as they are.
    const reader = await EstargzReader.open(bufferBlobReader(blob));
    const toc = structuredClone(reader.toc);
    const target = toc.entries.find((e) => e.type === 'chunk' && e.chunkOffset === 2 * CHUNK)!;
    target.chunkDigest = `sha256:${'1'.repeat(64)}`;
    const pool = createGzipPool({ workers: 1 });
    try {
      const tail = await createGzipCodec().buildTail(toc, tocOffset, pool);
      const tampered = Buffer.concat([blob.subarray(0, tocOffset), tail.bytes]);
      const r2 = await EstargzReader.open(bufferBlobReader(tampered), { expectedTOCDigest: tail.tocDigest });
      expect((await r2.readChunk(r2.chunkAt('a/data', 0)!)).length).toBe(CHUNK); // untouched chunk is fine
      await expectEsgzError(r2.readFile('a/data'), 'DIGEST_MISMATCH', 'a/data', String(2 * CHUNK));
      await expectEsgzError(r2.verifyAll(), 'DIGEST_MISMATCH', 'a/data');
    } finally {
      await pool.close();
    }
  });

  it('a flipped byte inside a compressed member', async () => {
    const reader = await EstargzReader.open(bufferBlobReader(blob));
    const chunk = reader.chunkAt('a/data', CHUNK)!;
    const bad = Buffer.from(blob);
    const at = chunk.compressedOffset + Math.floor((chunk.compressedEnd - chunk.compressedOffset) / 2);
    bad[at] = bad[at]! ^ 0xff;
    const r2 = await EstargzReader.open(bufferBlobReader(bad));
    const err = await r2.readFile('a/data').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(EsgzError);
    expect(['BAD_FORMAT', 'DIGEST_MISMATCH']).toContain((err as EsgzError).code);
    // gzip itself notices: the blob no longer decompresses.
    expect(() => gunzipSync(bad)).toThrow();
  });
});

/** The blob with its TOC replaced by `edit(entries)` (members unchanged). */
async function withTOC(edit: (entries: TOCEntry[]) => TOCEntry[]): Promise<Buffer> {
  const reader = await EstargzReader.open(bufferBlobReader(blob));
  const toc = { version: 1, entries: edit(structuredClone(reader.toc.entries)) };
  const pool = createGzipPool({ workers: 1 });
  try {
    const tail = await createGzipCodec().buildTail(toc, tocOffset, pool);
    return Buffer.concat([blob.subarray(0, tocOffset), tail.bytes]);
  } finally {
    await pool.close();
  }
}

describe('reader refuses TOCs that leave content unverified or lie about sizes (issue #12)', () => {
  it('a chunk without chunkDigest (and no file digest standing in for it)', async () => {
    const bad = await withTOC((entries) => entries.map((e) => (e.type === 'chunk' && e.chunkOffset === CHUNK ? { ...e, chunkDigest: undefined } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(bad)), 'BAD_FORMAT', 'a/data', 'no chunkDigest');
    const small = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, chunkDigest: undefined, digest: undefined } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(small)), 'BAD_FORMAT', 'a/small', 'no chunkDigest');
    // A single-chunk file is verified by its file digest, as stargz's VerifyTOC allows.
    const fileDigestOnly = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, chunkDigest: undefined } : e)));
    const reader = await EstargzReader.open(bufferBlobReader(fileDigestOnly));
    expect((await reader.readFile('a/small')).toString()).toBe('hello');
    expect(reader.chunks('a/small')[0]!.chunkDigest).toMatch(/^sha256:/);
  });

  it('two chunks at one blob offset, and chunks overlapping inside one member', async () => {
    const dup = await withTOC((entries) => {
      const data = entries.find((e) => e.name === 'a/data')!;
      return entries.map((e) => (e.name === 'a/small' ? { ...e, offset: data.offset } : e));
    });
    await expectEsgzError(EstargzReader.open(bufferBlobReader(dup)), 'BAD_FORMAT', 'used twice');
    const overlap = await withTOC((entries) => {
      const data = entries.find((e) => e.name === 'a/data')!;
      return entries.map((e) => (e.name === 'a/small' ? { ...e, offset: data.offset, innerOffset: 3 } : e));
    });
    await expectEsgzError(EstargzReader.open(bufferBlobReader(overlap)), 'BAD_FORMAT', 'overlap');
  });

  it('chunks that do not tile the file, absurd sizes and offsets, names above the root', async () => {
    const gap = await withTOC((entries) => entries.filter((e) => !(e.type === 'chunk' && e.chunkOffset === CHUNK)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(gap)), 'BAD_FORMAT', 'a/data');
    const huge = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, size: 1 << 30, chunkSize: 1 << 30 } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(huge)), 'BAD_FORMAT', 'a/small', 'at most 64 MiB');
    const inner = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, innerOffset: 1 << 30 } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(inner)), 'BAD_FORMAT', 'a/small', 'inner offset');
    const past = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, offset: 1e12 } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(past)), 'BAD_FORMAT', 'points past the data');
    const negative = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, size: -5 } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(negative)), 'BAD_FORMAT', 'size');
    const climb = await withTOC((entries) => entries.map((e) => (e.name === 'a/small' ? { ...e, name: 'a/../../small' } : e)));
    await expectEsgzError(EstargzReader.open(bufferBlobReader(climb)), 'UNSAFE_PATH', 'a/../../small');
    const link = await withTOC((entries) => [...entries, { name: 'h', type: 'hardlink', linkName: '../../etc/shadow' }]);
    await expectEsgzError(EstargzReader.open(bufferBlobReader(link)), 'UNSAFE_PATH', 'etc/shadow');
  });

  it('a name listed twice: the later entry wins (issue #16 layers), its own chunks only', async () => {
    const twice = await withTOC((entries) => {
      const small = entries.find((e) => e.name === 'a/small')!;
      return [...entries.filter((e) => e !== small), { ...small, name: 'a/data' }];
    });
    const reader = await EstargzReader.open(bufferBlobReader(twice));
    expect((await reader.readFile('a/data')).toString()).toBe('hello');
  });

  it('a footer whose TOC would be larger than esgz reads', async () => {
    const { estargzFooter } = await import('../../src/estargz/gzip-codec.js');
    const far = Buffer.concat([Buffer.alloc(80 << 20), blob.subarray(tocOffset)]);
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
    const reader = await EstargzReader.open(bufferBlobReader(blob));
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
      tarEntry({ name: 'g', typeflag: 'g' }, Buffer.concat([paxRecord('comment', 'c1'), paxRecord('SCHILY.xattr.user.a', 'v')])),
      tarEntry({ name: 'one' }, Buffer.from('1')),
      tarEntry({ name: 'x', typeflag: 'x' }, paxRecord('comment', '')),
      tarEntry({ name: 'two' }, Buffer.from('2')),
      END_OF_ARCHIVE,
    ]);
    const seen: Array<Record<string, string>> = [];
    for await (const e of readTar(once(withGlobals), 'layer')) seen.push(Object.fromEntries([...e.header.pax].map(([k, v]) => [k, v.toString()])));
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
