// One suite for every layer codec, run by each codec's test files (stargz-snapshotter's
// estargz/testutil.go CompressionTestSuite is the model): what the format promises whatever the
// compression is (bad input refused with one-line errors, ctr-remote reading our blobs and we its)
// is written once here; each codec's files add only what is its own (footer bytes, annotations).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import type { Codec } from '../../src/estargz/codec.js';
import { createMemberPool } from '../../src/estargz/codecs.js';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import type { TOCEntry } from '../../src/estargz/toc.js';
import type { EstargzWriteResult, EstargzWriterOptions } from '../../src/estargz/writer.js';
import {
  blockDevice,
  buildTar,
  charDevice,
  dir,
  fifo,
  file,
  generatedFile,
  gzipBuffer,
  hardlink,
  opaque,
  symlink,
  whiteout,
  type TarEntry,
} from '../fixtures/tar.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../harness/containerd.js';
import { expectEsgzError, tarNames } from './helpers.js';
import { convertWithCtrRemote, ctrRemoteTOCDigest, readTOC, tocStructure, type CtrRemoteLayer } from './reference.js';

export interface SuiteConvertOptions extends Omit<EstargzWriterOptions, 'codec' | 'compressor'> {
  workers?: number;
  /** zstd:chunked only: false leaves out the end-of-archive frame, as ctr-remote does. */
  endOfArchive?: boolean;
}

export type Converted = { blob: Buffer; result: EstargzWriteResult };

/** What the suite needs to know about a codec (stargz's TestingController). */
export interface SuiteCodec {
  /** Names the suite's describe blocks. */
  name: string;
  /** The codec's flag of `ctr-remote image convert` (and of `get-toc-digest`, when not the default). */
  ctrRemoteFlag: '--estargz' | '--zstdchunked';
  getTocDigestFlags: string[];
  layerMediaType: string;
  /** Converts an in-memory layer (tar, tar+gzip or tar+zstd) with this codec. */
  convert(layer: Buffer, options?: SuiteConvertOptions): Promise<Converted>;
  /** The codec's CLI (`gzip -dc`, `zstd -dc`) as the decompression oracle. */
  decompressCli(blob: Buffer): Buffer;
  /** The layer compressed the ordinary way, with no TOC and no footer. */
  compressPlain(tar: Buffer): Buffer;
  /** A fresh codec for rebuilding a blob's tail around an edited TOC. */
  newCodec(): Codec;
  /** A second way of writing that ctr-remote's reader must accept too (packed members, no end-of-archive). */
  readerVariant: SuiteConvertOptions;
  /** What the error says when a compressed member is damaged, beyond naming the file. */
  damagedMemberMessage?: RegExp;
}

const CHUNK = 32 * 1024;
const badInputEntries: TarEntry[] = [dir('a'), generatedFile('a/data', 3 * CHUNK + 7), file('a/small', 'hello')];

const open = (blob: Buffer, options: { expectedTOCDigest?: string } = {}) =>
  EstargzReader.open(bufferBlobReader(blob), { where: 'layer X', ...options });

/** The suite's fixture, for a codec's own bad-input tests: read it inside tests (it is made in beforeAll). */
export interface BadInputFixture {
  /** Chunk size of the blob: a/data spans 3 chunks and 7 bytes. */
  chunkSize: number;
  tar(): Buffer;
  blob(): Buffer;
  tocDigest(): string;
  tocOffset(): number;
}

/**
 * Writer and reader refuse bad layers and damaged blobs with one-line EsgzErrors (issue #12).
 * Returns the fixture the codec's own tests damage in their own ways.
 */
export function runBadInputSuite(codec: SuiteCodec): BadInputFixture {
  let tar: Buffer;
  let blob: Buffer;
  let tocDigest: string;
  let tocOffset: number;

  beforeAll(async () => {
    tar = await buildTar(badInputEntries);
    const out = await codec.convert(tar, { chunkSize: CHUNK });
    ({ blob } = out);
    ({ tocDigest, tocOffset } = out.result);
    // Sanity: the undamaged blob opens and verifies.
    await (await open(blob, { expectedTOCDigest: tocDigest })).verifyAll();
  });

  describe(`${codec.name} writer rejects bad layers`, () => {
    it('a tar whose header promises more payload than the stream has', async () => {
      const headerEnd = tar.indexOf(Buffer.from('a/data')) + 512;
      const cut = tar.subarray(0, headerEnd + CHUNK + 100);
      await expectEsgzError(
        codec.convert(cut, { chunkSize: CHUNK, where: 'layer 3' }),
        'BAD_LAYER',
        'layer 3',
        'a/data',
        'truncated',
      );
    });

    it('names with ".." above the root are refused; absolute names and ".." inside are kept, as stargz writes them', async () => {
      await expectEsgzError(codec.convert(await buildTar([file('../evil', 'x')])), 'UNSAFE_PATH', '../evil');
      await expectEsgzError(codec.convert(await buildTar([file('a/../../evil', 'x')])), 'UNSAFE_PATH', 'a/../../evil');
      await expectEsgzError(codec.convert(await buildTar([file('/../evil', 'x')])), 'UNSAFE_PATH', '/../evil');
      const { blob: kept, result } = await codec.convert(
        await buildTar([file('/etc/passwd', 'x'), file('a/../b', 'y')]),
      );
      expect(result.toc.entries.map((e) => e.name)).toEqual(expect.arrayContaining(['/etc/passwd', 'a/../b']));
      const reader = await open(kept);
      expect((await reader.readFile('etc/passwd')).toString()).toBe('x');
      expect((await reader.readFile('b')).toString()).toBe('y');
    });

    it('a hardlink pointing outside the layer', async () => {
      const outside = await buildTar([{ type: 'hardlink', path: 'h', target: '../../etc/shadow' }]);
      await expectEsgzError(codec.convert(outside), 'UNSAFE_PATH', 'link target');
    });

    it('corrupt gzip input', async () => {
      const gz = Buffer.from(gzipBuffer(tar));
      for (let i = 100; i < 140; i++) gz[i] = gz[i]! ^ 0x5a;
      const early = await expectEsgzError(codec.convert(gz), 'BAD_LAYER', 'gzip');
      expect(early.message).toContain('before the first tar entry');
      // Corruption later in a bigger layer names the entry being read (detection runs at most
      // a few hundred KiB of buffering ahead of the tar reader).
      const bigTar = await buildTar([
        dir('big'),
        generatedFile('big/file', 4 << 20, { compressible: true }),
        file('big/after', 'x'),
      ]);
      const late = Buffer.from(gzipBuffer(bigTar));
      const at = Math.floor(late.length * 0.6);
      for (let i = at; i < at + 64; i++) late[i] = late[i]! ^ 0x5a;
      const e = await expectEsgzError(codec.convert(late), 'BAD_LAYER', 'gzip');
      expect(e.message).toMatch(/while reading tar entry "big\/file"/);
    });

    it('a stream that is not a tar at all', async () => {
      await expectEsgzError(
        codec.convert(Buffer.from('this is not a tar archive'.repeat(40))),
        'BAD_LAYER',
        'checksum',
      );
    });
  });

  describe(`${codec.name} reader rejects bad blobs`, () => {
    it('a blob without footer (the layer compressed the ordinary way)', async () => {
      await expectEsgzError(open(codec.compressPlain(tar)), 'BAD_FORMAT', 'layer X', 'footer');
    });

    it('a truncated blob', async () => {
      await expectEsgzError(open(blob.subarray(0, blob.length - 7)), 'BAD_FORMAT', 'layer X');
      await expectEsgzError(
        open(blob.subarray(0, blob.length - 100)),
        'BAD_FORMAT',
        'layer X',
        'no eStargz or zstd:chunked footer',
      );
    });

    it('a TOC digest that does not match the annotation', async () => {
      const other = `sha256:${'0'.repeat(64)}`;
      await expectEsgzError(open(blob, { expectedTOCDigest: other }), 'DIGEST_MISMATCH', 'TOC digest', other);
      const ok = await open(blob, { expectedTOCDigest: tocDigest });
      expect(ok.tocDigest).toBe(tocDigest);
    });

    it('a flipped byte inside a compressed member fails its checksum or its chunk digest, naming the file', async () => {
      const reader = await open(blob);
      const chunk = reader.chunkAt('a/data', CHUNK)!;
      const bad = Buffer.from(blob);
      const at = chunk.compressedOffset + Math.floor((chunk.compressedEnd - chunk.compressedOffset) / 2);
      bad[at] = bad[at]! ^ 0xff;
      const damaged = await open(bad);
      const err = await damaged.readFile('a/data').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(EsgzError);
      expect(['BAD_FORMAT', 'DIGEST_MISMATCH']).toContain((err as EsgzError).code);
      expect((err as EsgzError).message).toContain('a/data');
      if (codec.damagedMemberMessage) expect((err as EsgzError).message).toMatch(codec.damagedMemberMessage);
      // The codec's own CLI notices too: the blob no longer decompresses.
      expect(() => codec.decompressCli(bad)).toThrow();
    });

    it('a chunk whose bytes do not match its chunkDigest', async () => {
      const tampered = await withTOC((entries) =>
        entries.map((e) =>
          e.type === 'chunk' && e.chunkOffset === 2 * CHUNK ? { ...e, chunkDigest: `sha256:${'1'.repeat(64)}` } : e,
        ),
      );
      const reader = await open(tampered);
      expect((await reader.readChunk(reader.chunkAt('a/data', 0)!)).length).toBe(CHUNK); // untouched chunk is fine
      await expectEsgzError(reader.readFile('a/data'), 'DIGEST_MISMATCH', 'a/data', String(2 * CHUNK));
      await expectEsgzError(reader.verifyAll(), 'DIGEST_MISMATCH', 'a/data');
    });
  });

  /** The blob with its TOC replaced by `edit(entries)` (members unchanged). */
  async function withTOC(edit: (entries: TOCEntry[]) => TOCEntry[]): Promise<Buffer> {
    const reader = await open(blob);
    const toc = { version: 1, entries: edit(structuredClone(reader.toc.entries)) };
    const tailCodec = codec.newCodec();
    const pool = createMemberPool(tailCodec.name, { workers: 1 });
    try {
      return Buffer.concat([blob.subarray(0, tocOffset), (await tailCodec.buildTail(toc, tocOffset, pool)).bytes]);
    } finally {
      await pool.close();
    }
  }

  const edited = (name: string, change: Partial<TOCEntry>) => (entries: TOCEntry[]) =>
    entries.map((e) => (e.name === name ? { ...e, ...change } : e));

  describe(`${codec.name} reader refuses TOCs that leave content unverified or lie about sizes (issue #12)`, () => {
    it('a chunk without chunkDigest (and no file digest standing in for it)', async () => {
      const bad = await withTOC((entries) =>
        entries.map((e) => (e.type === 'chunk' && e.chunkOffset === CHUNK ? { ...e, chunkDigest: undefined } : e)),
      );
      await expectEsgzError(open(bad), 'BAD_FORMAT', 'a/data', 'no chunkDigest');
      const small = await withTOC(edited('a/small', { chunkDigest: undefined, digest: undefined }));
      await expectEsgzError(open(small), 'BAD_FORMAT', 'a/small', 'no chunkDigest');
      // A single-chunk file is verified by its file digest, as stargz's VerifyTOC allows.
      const reader = await open(await withTOC(edited('a/small', { chunkDigest: undefined })));
      expect((await reader.readFile('a/small')).toString()).toBe('hello');
      expect(reader.chunks('a/small')[0]!.chunkDigest).toMatch(/^sha256:/);
    });

    it('two chunks at one blob offset, and chunks overlapping inside one member', async () => {
      const dataOffset = (entries: TOCEntry[]) => entries.find((e) => e.name === 'a/data')!.offset;
      const dup = await withTOC((entries) => edited('a/small', { offset: dataOffset(entries) })(entries));
      await expectEsgzError(open(dup), 'BAD_FORMAT', 'used twice');
      const overlap = await withTOC((entries) =>
        edited('a/small', { offset: dataOffset(entries), innerOffset: 3 })(entries),
      );
      await expectEsgzError(open(overlap), 'BAD_FORMAT', 'overlap');
    });

    it('chunks that do not tile the file, absurd sizes and offsets, names above the root', async () => {
      const gap = await withTOC((entries) => entries.filter((e) => !(e.type === 'chunk' && e.chunkOffset === CHUNK)));
      await expectEsgzError(open(gap), 'BAD_FORMAT', 'a/data');
      const huge = await withTOC(edited('a/small', { size: 1 << 30, chunkSize: 1 << 30 }));
      await expectEsgzError(open(huge), 'BAD_FORMAT', 'a/small', 'at most 64 MiB');
      await expectEsgzError(
        open(await withTOC(edited('a/small', { innerOffset: 1 << 30 }))),
        'BAD_FORMAT',
        'a/small',
        'inner offset',
      );
      await expectEsgzError(
        open(await withTOC(edited('a/small', { offset: 1e12 }))),
        'BAD_FORMAT',
        'points past the data',
      );
      await expectEsgzError(open(await withTOC(edited('a/small', { size: -5 }))), 'BAD_FORMAT', 'size');
      const climb = await withTOC(edited('a/small', { name: 'a/../../small' }));
      await expectEsgzError(open(climb), 'UNSAFE_PATH', 'a/../../small');
      const link = await withTOC((entries) => [
        ...entries,
        { name: 'h', type: 'hardlink', linkName: '../../etc/shadow' },
      ]);
      await expectEsgzError(open(link), 'UNSAFE_PATH', 'etc/shadow');
    });

    it('a name listed twice: the later entry wins (issue #16 layers), its own chunks only', async () => {
      const twice = await withTOC((entries) => {
        const small = entries.find((e) => e.name === 'a/small')!;
        return [...entries.filter((e) => e !== small), { ...small, name: 'a/data' }];
      });
      expect((await (await open(twice)).readFile('a/data')).toString()).toBe('hello');
    });
  });

  return { chunkSize: CHUNK, tar: () => tar, blob: () => blob, tocDigest: () => tocDigest, tocOffset: () => tocOffset };
}

const REFERENCE_CHUNK = 64 * 1024;
/** Every entry type, ownership by id and name, xattrs, long names, whiteouts and an opaque dir. */
export const referenceEntries: TarEntry[] = [
  dir('etc', { uname: 'root', gname: 'root' }),
  file('etc/os-release', 'ID=esgz\n', { uname: 'root', gname: 'root' }),
  file('etc/empty', ''),
  dir('usr', { uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
  dir('usr/bin'),
  generatedFile('usr/bin/tool', 3 * REFERENCE_CHUNK + 5, { mode: 0o755 }),
  generatedFile('usr/bin/exact', 2 * REFERENCE_CHUNK, { compressible: true }),
  generatedFile('usr/bin/small', 1000, { uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
  symlink('usr/bin/sh', 'tool'),
  hardlink('usr/bin/tool2', 'usr/bin/tool'),
  dir('dev'),
  charDevice('dev/null', 1, 3),
  blockDevice('dev/loop0', 7, 0),
  fifo('dev/fifo'),
  file('usr/bin/caps', 'cap', {
    xattrs: { 'user.comment': 'hello', 'security.capability': Buffer.from([1, 0, 0, 2, 0, 32, 0, 0]) },
  }),
  file(`usr/${'long-directory-name-'.repeat(6)}/${'f'.repeat(110)}`, 'long'),
  // Characters Go's encoding/json escapes in the TOC.
  file('etc/"quoted" <a&b>\\tab\t\u2028', 'escaped'),
  whiteout('etc/gone'),
  dir('var'),
  opaque('var'),
];

/** What a codec's own reference tests get: the running containerd, the fixture tar, and ctr-remote's conversion of it. */
export interface ReferenceContext {
  containerd(): RunningContainerd;
  tar(): Buffer;
  /** ctr-remote's conversion of the fixture tar at the suite's chunk size (made once). */
  reference(): Promise<CtrRemoteLayer>;
  chunkSize: number;
}

/**
 * Compares the codec's output with stargz-snapshotter's reference ctr-remote 0.12 in a private
 * containerd (gated on containerd + ctr-remote being installed and running as root).
 * `codecSpecific` adds the codec's own tests inside the same describe (one containerd for all).
 */
export function runReferenceSuite(
  codec: SuiteCodec,
  namespace: string,
  codecSpecific?: (context: ReferenceContext) => void,
): void {
  describe.skipIf(!containerdAvailable())(`${codec.name} reference comparison with ctr-remote 0.12`, () => {
    let containerd: RunningContainerd;
    let tar: Buffer;
    let reference: Promise<CtrRemoteLayer> | undefined;
    const chunkFlags = ['--estargz-chunk-size', String(REFERENCE_CHUNK)];
    const ctrRemote = (layer: Buffer, flags: string[]) =>
      convertWithCtrRemote(containerd, layer, [codec.ctrRemoteFlag, ...flags]);
    const context: ReferenceContext = {
      containerd: () => containerd,
      tar: () => tar,
      reference: () => (reference ??= ctrRemote(tar, chunkFlags)),
      chunkSize: REFERENCE_CHUNK,
    };

    beforeAll(async () => {
      containerd = await startContainerd({ namespace });
      tar = await buildTar(referenceEntries);
    });
    afterAll(async () => {
      await containerd?.stop();
    });

    it('same TOC structure (names, types, modes, sizes, chunk boundaries) and media type at the same chunk size', async () => {
      const ref = await context.reference();
      const ours = await codec.convert(tar, { chunkSize: REFERENCE_CHUNK });
      const refTOC = await readTOC(ref.blob);
      expect(ref.mediaType).toBe(codec.layerMediaType);
      // landmark + every input entry + 3 extra chunks of usr/bin/tool + 1 of usr/bin/exact
      expect(refTOC.toc.entries).toHaveLength(referenceEntries.length + 1 + 4);
      expect(tocStructure((await readTOC(ours.blob)).toc)).toEqual(tocStructure(refTOC.toc));
      // Both blobs decompress with the codec's CLI to tars listing the same entries.
      expect(tarNames(codec.decompressCli(ours.blob))).toEqual(tarNames(codec.decompressCli(ref.blob)));
      // ctr-remote's annotation is the digest our reader computes for its blob (reader compatibility).
      expect(ref.annotations['containerd.io/snapshot/stargz/toc.digest']).toBe(refTOC.tocDigest);
      await refTOC.reader.verifyAll();
    });

    it('same structure at the default chunk size with a file larger than 4 MiB', async () => {
      const bigTar = await buildTar([
        dir('data'),
        generatedFile('data/blob', 9 * 1024 * 1024 + 17),
        file('data/note', 'n'),
      ]);
      const ref = await ctrRemote(bigTar, []);
      const ours = await codec.convert(bigTar, {});
      expect(tocStructure((await readTOC(ours.blob)).toc)).toEqual(tocStructure((await readTOC(ref.blob)).toc));
    });

    it('prioritized files (record-in) give the same order and the same .prefetch.landmark', async () => {
      const paths = ['/usr/bin/tool', '/etc/os-release', '/not/in/the/layer'];
      const record = paths
        .map((p) => JSON.stringify({ path: p, manifestDigest: `sha256:${'0'.repeat(64)}`, layerIndex: 0 }))
        .join('\n');
      const ref = await convertWithCtrRemote(containerd, tar, [codec.ctrRemoteFlag, ...chunkFlags], {
        recordIn: `${record}\n`,
      });
      const ours = await codec.convert(tar, { chunkSize: REFERENCE_CHUNK, prioritizedFiles: paths });
      const ourTOC = (await readTOC(ours.blob)).toc;
      expect(ourTOC.entries.map((e) => e.name)).toContain('.prefetch.landmark');
      expect(ourTOC.entries.map((e) => e.name)).not.toContain('.no.prefetch.landmark');
      expect(tocStructure(ourTOC)).toEqual(tocStructure((await readTOC(ref.blob)).toc));
      expect(ours.result.missedPrioritizedFiles).toEqual(['/not/in/the/layer']);
    });

    it("ctr-remote's own reader (get-toc-digest) accepts esgz blobs and finds the same TOC digest", async () => {
      for (const variant of [{}, codec.readerVariant]) {
        const ours = await codec.convert(tar, { chunkSize: REFERENCE_CHUNK, ...variant });
        expect(await ctrRemoteTOCDigest(containerd, ours.blob, codec.getTocDigestFlags), JSON.stringify(variant)).toBe(
          ours.result.tocDigest,
        );
      }
    });

    codecSpecific?.(context);
  });
}
