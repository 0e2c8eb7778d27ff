// zstd:chunked writer + reader through the shared eStargz engine, checked against the `zstd` and
// `tar` CLIs and an independent byte-level reading of the footer.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bufferBlobReader, EstargzReader } from '../../../src/estargz/reader.js';
import {
  CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION,
  CONTAINERS_MANIFEST_POSITION_ANNOTATION,
  MANIFEST_CHECKSUM_ANNOTATION,
  MANIFEST_POSITION_ANNOTATION,
  createZstdChunkedCodec,
  parseManifestPosition,
} from '../../../src/estargz/zstdchunked/codec.js';
import { buildTar, contentSize, dir, file, generatedBuffer, generatedFile, storedName } from '../../fixtures/tar.js';
import { run, tarNames, tarVerbose } from '../helpers.js';
import { createZstdPool } from '../../../src/estargz/zstdchunked/pool.js';
import { convertZstd, rawFooter, sha256, zstdCli, zstdDecompressCli } from './helpers.js';
import { referenceEntries } from '../codec-suite.js';

const CHUNK = 64 * 1024;
/** The reference suite's entries: every type, owners, xattrs, long and escaped names, whiteouts. */
const entries = referenceEntries;

/** Regular files of the fixture with their exact contents, as the tar CLI extracts them from the source. */
function sourceFiles(tar: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const e of entries) {
    if (e.type !== 'file') continue;
    const name = storedName(e);
    files.set(name, run('tar', ['--no-unquote', '-xO', '-f', '-', name], tar));
    expect(files.get(name)!.length).toBe(contentSize(e));
  }
  return files;
}

let work: string;
let tar: Buffer;
let blob: Buffer;
let result: Awaited<ReturnType<typeof convertZstd>>['result'];

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'esgz-zstd-'));
  tar = await buildTar(entries);
  ({ blob, result } = await convertZstd(tar, { chunkSize: CHUNK }));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('zstd:chunked blob as a plain zstd stream', () => {
  it('zstd -dc | tar -t lists every source entry (plus the landmark), same metadata', () => {
    const decompressed = zstdDecompressCli(blob);
    expect(tarNames(decompressed)).toEqual(['.no.prefetch.landmark', ...tarNames(tar)]);
    expect(tarVerbose(decompressed).slice(1)).toEqual(tarVerbose(tar));
  });

  it('file contents are byte-identical to the source', () => {
    const decompressed = zstdDecompressCli(blob);
    for (const [name, content] of sourceFiles(tar)) {
      expect(run('tar', ['--no-unquote', '-xO', '-f', '-', name], decompressed).equals(content), name).toBe(true);
    }
  });

  it('diffID and uncompressed size are those of the decompressed stream, which ends in a tar end-of-archive', () => {
    const decompressed = zstdDecompressCli(blob);
    expect(result.diffID).toBe(sha256(decompressed));
    expect(result.uncompressedSize).toBe(decompressed.length);
    expect(decompressed.subarray(decompressed.length - 1024).equals(Buffer.alloc(1024))).toBe(true);
    expect(result.compressedSize).toBe(blob.length);
  });

  it('`zstd -t` accepts the whole blob (skippable frames included) and every frame carries a checksum', () => {
    zstdCli(['-t', '-q'], blob);
    const frameStarts = new Set(result.toc.entries.filter((e) => e.offset !== undefined).map((e) => e.offset!));
    for (const offset of frameStarts) {
      expect(blob.readUInt32LE(offset), `frame magic at ${offset}`).toBe(0xfd2fb528);
      // Frame header descriptor: bit 2 = content checksum flag; single-segment/FCS set means the size is recorded.
      expect(blob[offset + 4]! & 0x04, `checksum flag at ${offset}`).toBe(0x04);
    }
  });
});

describe('footer and TOC', () => {
  it('the footer is the 48-byte skippable frame stargz-snapshotter reads, pointing at the compressed TOC', () => {
    const f = rawFooter(blob);
    expect(f.frameMagic).toBe(0x184d2a50);
    expect(f.frameSize).toBe(40);
    expect(f.magic).toBe('GnUlInUx');
    expect(f.manifestType).toBe(1n);
    const offset = Number(f.offset);
    const compressed = blob.subarray(offset, offset + Number(f.compressed));
    // The TOC's own skippable frame header sits just before it and ends right at the footer.
    expect(blob.readUInt32LE(offset - 8)).toBe(0x184d2a50);
    expect(blob.readUInt32LE(offset - 4)).toBe(Number(f.compressed));
    expect(offset + Number(f.compressed)).toBe(blob.length - 48);
    const json = zstdDecompressCli(compressed);
    expect(json.length).toBe(Number(f.uncompressed));
    expect(sha256(json)).toBe(result.tocDigest);
    expect(JSON.parse(json.toString()).entries.length).toBe(result.toc.entries.length);
  });

  it('annotations: manifest checksum is sha256 of the compressed TOC, position is offset:compressed:uncompressed:1', () => {
    const f = rawFooter(blob);
    const a = result.codecAnnotations;
    const compressed = blob.subarray(Number(f.offset), Number(f.offset + f.compressed));
    expect(a[MANIFEST_CHECKSUM_ANNOTATION]).toBe(sha256(compressed));
    expect(a[MANIFEST_POSITION_ANNOTATION]).toBe(`${f.offset}:${f.compressed}:${f.uncompressed}:1`);
    expect(parseManifestPosition(a[MANIFEST_POSITION_ANNOTATION]!)).toEqual({
      offset: Number(f.offset),
      compressedSize: Number(f.compressed),
      uncompressedSize: Number(f.uncompressed),
      manifestType: 1,
    });
    // The containers/storage >= 1.45 names only on request (they conflict with toc.digest in newer podman).
    expect(a[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION]).toBeUndefined();
  });

  it('containers/storage names carry the same values when asked for', async () => {
    const { result: r } = await convertZstd(tar, { chunkSize: CHUNK, containersStorageAnnotations: true });
    expect(r.codecAnnotations[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION]).toBe(
      r.codecAnnotations[MANIFEST_CHECKSUM_ANNOTATION],
    );
    expect(r.codecAnnotations[CONTAINERS_MANIFEST_POSITION_ANNOTATION]).toBe(
      r.codecAnnotations[MANIFEST_POSITION_ANNOTATION],
    );
  });

  it('the reader finds the zstd codec, verifies the TOC and reads every file back', async () => {
    const reader = await EstargzReader.open(bufferBlobReader(blob), { expectedTOCDigest: result.tocDigest });
    expect(reader.codec.name).toBe('zstd');
    expect(reader.footer.kind).toBe('zstdchunked');
    expect(
      reader.tocJSON.equals(zstdDecompressCli(blob.subarray(Number(rawFooter(blob).offset), blob.length - 48))),
    ).toBe(true);
    for (const [name, content] of sourceFiles(tar)) {
      expect((await reader.readFile(name)).equals(content), name).toBe(true);
    }
    expect(reader.chunks('usr/bin/tool')).toHaveLength(4);
    expect(reader.chunks('usr/bin/exact')).toHaveLength(2);
    const verified = await reader.verifyAll();
    expect(verified.files).toBe(sourceFiles(tar).size - 1 + 1); // non-empty files + the landmark
  });

  it('the bare compressed TOC (as the position annotation locates it) parses to the same digest', async () => {
    const codec = createZstdChunkedCodec();
    const pos = parseManifestPosition(result.codecAnnotations[MANIFEST_POSITION_ANNOTATION]!);
    const parsed = await codec.parseTOC(blob.subarray(pos.offset, pos.offset + pos.compressedSize));
    expect(parsed.tocDigest).toBe(result.tocDigest);
  });

  it('newer containers/storage layout: tar-split frame after the TOC, 64-byte GNUlInUx footer', async () => {
    // Rebuild the tail as containers/storage >= 1.48 writes it (pkg/chunked/internal/minimal):
    // TOC frame, tar-split frame, then a 64-byte footer that also locates the tar-split.
    const f = rawFooter(blob);
    const body = blob.subarray(0, blob.length - 48);
    const tarSplit = zstdCli(['-c', '-q'], Buffer.from('{"type":2,"payload":"","position":0}\n'));
    const tarSplitFrame = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18]), Buffer.alloc(4), tarSplit]);
    tarSplitFrame.writeUInt32LE(tarSplit.length, 4);
    const footer = Buffer.alloc(72);
    footer.writeUInt32LE(0x184d2a50, 0);
    footer.writeUInt32LE(64, 4);
    footer.writeBigUInt64LE(f.offset, 8);
    footer.writeBigUInt64LE(f.compressed, 16);
    footer.writeBigUInt64LE(f.uncompressed, 24);
    footer.writeBigUInt64LE(1n, 32);
    footer.writeBigUInt64LE(BigInt(body.length + 8), 40);
    footer.writeBigUInt64LE(BigInt(tarSplit.length), 48);
    footer.writeBigUInt64LE(60n, 56);
    footer.write('GNUlInUx', 64, 'latin1');
    const modern = Buffer.concat([body, tarSplitFrame, footer]);
    zstdCli(['-t', '-q'], modern);
    const reader = await EstargzReader.open(bufferBlobReader(modern), { expectedTOCDigest: result.tocDigest });
    expect(reader.footer.kind).toBe('zstdchunked-containers');
    expect(reader.footer.footerSize).toBe(72);
    await reader.verifyAll();
  });

  it('ctr-remote-style blobs without the end-of-archive frame read the same', async () => {
    const { blob: bare, result: r } = await convertZstd(tar, { chunkSize: CHUNK, endOfArchive: false });
    expect(bare.length).toBeLessThan(blob.length);
    expect(r.tocDigest).toBe(result.tocDigest);
    const decompressed = zstdDecompressCli(bare);
    expect(r.diffID).toBe(sha256(decompressed));
    const reader = await EstargzReader.open(bufferBlobReader(bare));
    await reader.verifyAll();
  });
});

describe('reproducibility and parameters', () => {
  it('same bytes with 1 or 3 workers and across runs', async () => {
    const one = await convertZstd(tar, { chunkSize: CHUNK, workers: 1 });
    const three = await convertZstd(tar, { chunkSize: CHUNK, workers: 3 });
    expect(one.blob.equals(blob)).toBe(true);
    expect(three.blob.equals(blob)).toBe(true);
  });

  it('the level changes the frames; bad levels are BAD_FLAG', async () => {
    const big = await buildTar([generatedFile('text', 400_000, { compressible: true })]);
    const fast = await convertZstd(big, { compressionLevel: 1 });
    const strong = await convertZstd(big, { compressionLevel: 19 });
    expect(strong.blob.length).toBeLessThan(fast.blob.length);
    expect(zstdDecompressCli(strong.blob).equals(zstdDecompressCli(fast.blob))).toBe(true);
    for (const level of [0, 23, 2.5]) {
      expect(() => createZstdPool({ level }), String(level)).toThrow(/out of range/);
    }
  });

  it('the pool defaults to one worker per core; bad counts are BAD_FLAG', async () => {
    const pool = createZstdPool();
    expect(pool.size).toBe(os.cpus().length);
    expect(pool.level).toBe(3);
    await pool.close();
    for (const workers of [0, -1, 1.5]) {
      expect(() => createZstdPool({ workers }), String(workers)).toThrow(/worker count must be a positive integer/);
    }
  });

  it('a zstd-compressed source layer converts to the same blob as the plain tar', async () => {
    const zstdSource = zstdCli(['-c', '-q', '-19'], tar);
    const fromZstd = await convertZstd(zstdSource, { chunkSize: CHUNK });
    expect(fromZstd.blob.equals(blob)).toBe(true);
  });

  it('a large file is cut into 4 MiB frames by default, each its own frame', async () => {
    const data = generatedBuffer(9 * 1024 * 1024 + 17, 'big');
    const bigTar = await buildTar([dir('d'), file('d/big', data)]);
    const { blob: b } = await convertZstd(bigTar);
    const reader = await EstargzReader.open(bufferBlobReader(b));
    const chunks = reader.chunks('d/big');
    expect(chunks.map((c) => c.length)).toEqual([4 << 20, 4 << 20, 1024 * 1024 + 17]);
    expect((await reader.readFile('d/big')).equals(data)).toBe(true);
    const p = path.join(work, 'big.zst');
    await writeFile(p, b);
    expect(run('tar', ['--zstd', '-xO', '-f', p, 'd/big']).equals(data)).toBe(true);
    expect((await readFile(p)).length).toBe(b.length);
  });
});
