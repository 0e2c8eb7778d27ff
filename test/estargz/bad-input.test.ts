import { gunzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { createGzipCodec } from '../../src/estargz/gzip-codec.js';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
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

  it('names with ".." and absolute names', async () => {
    await expectEsgzError(convertBuffer(await buildTar([file('../evil', 'x')])), 'UNSAFE_PATH', '../evil');
    await expectEsgzError(convertBuffer(await buildTar([file('a/../../evil', 'x')])), 'UNSAFE_PATH', 'a/../../evil');
    await expectEsgzError(convertBuffer(await buildTar([file('/etc/passwd', 'x')])), 'UNSAFE_PATH', '/etc/passwd');
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
    const codec = createGzipCodec({ backend: 'zlib' });
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
    const codec = createGzipCodec({ workers: 1 });
    try {
      const tail = await codec.buildTail(toc, tocOffset);
      const tampered = Buffer.concat([blob.subarray(0, tocOffset), tail.bytes]);
      const r2 = await EstargzReader.open(bufferBlobReader(tampered), { expectedTOCDigest: tail.tocDigest });
      expect((await r2.readChunk(r2.chunkAt('a/data', 0)!)).length).toBe(CHUNK); // untouched chunk is fine
      await expectEsgzError(r2.readFile('a/data'), 'DIGEST_MISMATCH', 'a/data', String(2 * CHUNK));
      await expectEsgzError(r2.verifyAll(), 'DIGEST_MISMATCH', 'a/data');
    } finally {
      await codec.close();
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
