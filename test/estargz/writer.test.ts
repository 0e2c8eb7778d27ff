import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import { GlobPattern } from '../../src/estargz/priority.js';
import type { MemberCompressor } from '../../src/estargz/codec.js';
import { createGzipPool, libdeflateAvailable } from '../../src/estargz/gzip-pool.js';
import {
  blockDevice,
  buildTar,
  charDevice,
  dir,
  fifo,
  file,
  generatedBuffer,
  generatedFile,
  gzipBuffer,
  hardlink,
  opaque,
  sha256Digest,
  storedName,
  symlink,
  whiteout,
  type TarEntry,
} from '../fixtures/tar.js';
import { convertBuffer, gunzipCli, run, tarNames, tarVerbose } from './helpers.js';

const CHUNK = 64 * 1024;
const longDir = `long/${'x'.repeat(120)}`;
const longName = `${longDir}/${'y'.repeat(150)}.txt`;
const capability = Buffer.from([
  0x01, 0x00, 0x00, 0x02, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00,
]);

const entries: TarEntry[] = [
  dir('etc'),
  file('etc/hosts', '127.0.0.1 localhost\n', { uname: 'root', gname: 'root' }),
  file('empty', ''),
  dir('bin'),
  generatedFile('bin/exact', CHUNK),
  generatedFile('bin/two', 2 * CHUNK),
  generatedFile('bin/big', 3 * CHUNK + 123, { compressible: true }),
  symlink('bin/sh', 'busybox'),
  hardlink('bin/hl', 'bin/exact'),
  dir('dev'),
  charDevice('dev/null', 1, 3),
  blockDevice('dev/sda', 8, 0),
  dir('run'),
  fifo('run/fifo'),
  dir('long'),
  dir(longDir),
  file(longName, 'long name'),
  symlink('longlink', 'z'.repeat(200)),
  file('xattr-file', 'cap', { xattrs: { 'security.capability': capability, 'user.note': 'hello' } }),
  whiteout('etc/removed'),
  dir('var'),
  dir('var/cache'),
  opaque('var/cache'),
  dir('ünïcode'),
  file('ünïcode/ファイル', 'utf8 name'),
  file('uid-big', 'x', { pax: { uid: '3000000', gid: '3000001' }, uname: 'big', gname: 'biggroup' }),
  file('etc/small1', 'a'.repeat(300)),
  file('etc/small2', 'b'.repeat(700)),
];

function contentOf(entry: TarEntry): Buffer {
  if (entry.type !== 'file') throw new Error('not a file');
  if (entry.content !== undefined) return Buffer.from(entry.content);
  return generatedBuffer(entry.size ?? 0, entry.seed ?? entry.path, entry.compressible);
}

let tar: Buffer;
let blob: Buffer;
let result: Awaited<ReturnType<typeof convertBuffer>>['result'];

beforeAll(async () => {
  tar = await buildTar(entries);
  ({ blob, result } = await convertBuffer(tar, { chunkSize: CHUNK }));
});

describe('eStargz writer round trip', () => {
  it('decompresses with gzip -dc and lists the input entries plus landmark and TOC', () => {
    const out = gunzipCli(blob);
    expect(tarNames(out)).toEqual(['.no.prefetch.landmark', ...tarNames(tar), 'stargz.index.json']);
  });

  it('keeps every header field tar shows (mode, owner, size, mtime, link targets)', () => {
    const out = gunzipCli(blob);
    const lines = tarVerbose(out).filter(
      (l) => !l.endsWith(' .no.prefetch.landmark') && !l.endsWith(' stargz.index.json'),
    );
    expect(lines).toEqual(tarVerbose(tar));
  });

  it('extracts to byte-identical files with GNU tar', () => {
    const dirA = mkdtempSync(join(tmpdir(), 'esgz-a-'));
    const dirB = mkdtempSync(join(tmpdir(), 'esgz-b-'));
    try {
      run('tar', ['-x', '-C', dirA, '-f', '-'], tar);
      run('tar', ['-x', '-C', dirB, '-f', '-'], gunzipCli(blob));
      for (const e of entries) {
        if (e.type !== 'file') continue;
        const a = readFileSync(join(dirA, e.path));
        expect(readFileSync(join(dirB, e.path)).equals(a), e.path).toBe(true);
        expect(a.equals(contentOf(e)), e.path).toBe(true);
      }
      // Hardlink stays a hardlink after extraction.
      const inode = (p: string) => execFileSync('stat', ['-c', '%i', p]).toString().trim();
      expect(inode(join(dirB, 'bin/hl'))).toBe(inode(join(dirB, 'bin/exact')));
    } finally {
      rmSync(dirA, { recursive: true, force: true });
      rmSync(dirB, { recursive: true, force: true });
    }
  });

  it('reports diffID = sha256 of the gunzipped blob and the uncompressed size', () => {
    const out = gunzipCli(blob);
    expect(result.diffID).toBe(sha256Digest(out));
    expect(result.uncompressedSize).toBe(out.length);
    expect(result.compressedSize).toBe(blob.length);
  });

  it('TOC digest is sha256 of the stargz.index.json that tar extracts', () => {
    const json = run('tar', ['-xO', '-f', '-', 'stargz.index.json'], gunzipCli(blob));
    expect(result.tocDigest).toBe(sha256Digest(json));
    const toc = JSON.parse(json.toString());
    expect(toc.version).toBe(1);
  });

  it('ends with the 51-byte footer pointing at the TOC member', () => {
    const footer = blob.subarray(blob.length - 51);
    expect([...footer.subarray(0, 4)]).toEqual([0x1f, 0x8b, 0x08, 0x04]);
    expect(footer.readUInt16LE(10)).toBe(26);
    expect(footer.subarray(12, 14).toString()).toBe('SG');
    expect(footer.readUInt16LE(14)).toBe(22);
    const sub = footer.subarray(16, 38).toString();
    expect(sub.endsWith('STARGZ')).toBe(true);
    const tocOffset = parseInt(sub.slice(0, 16), 16);
    expect(tocOffset).toBe(result.tocOffset);
    // The TOC member alone decompresses to the TOC tar entry + end-of-archive.
    const tocTar = gunzipSync(blob.subarray(tocOffset, blob.length - 51));
    expect(tarNames(tocTar)).toEqual(['stargz.index.json']);
    expect(gunzipSync(footer).length).toBe(0);
  });

  it('TOC entries carry every field with chunks at the chunk size', () => {
    // Check the serialized TOC as a reader sees it, not the writer's in-memory object.
    const toc = JSON.parse(
      run('tar', ['-xO', '-f', '-', 'stargz.index.json'], gunzipCli(blob)).toString(),
    ) as typeof result.toc;
    const names = toc.entries.filter((e) => e.type !== 'chunk').map((e) => e.name);
    expect(names).toEqual(['.no.prefetch.landmark', ...entries.map(storedName)]);
    const byName = (n: string) => toc.entries.filter((e) => e.name === n);
    const exact = byName('bin/exact');
    expect(exact).toHaveLength(1);
    expect(exact[0]).toMatchObject({
      type: 'reg',
      size: CHUNK,
      chunkSize: CHUNK,
      digest: sha256Digest(contentOf(entries[4]!)),
    });
    const big = byName('bin/big');
    expect(big.map((e) => [e.type, e.chunkOffset ?? 0, e.chunkSize])).toEqual([
      ['reg', 0, CHUNK],
      ['chunk', CHUNK, CHUNK],
      ['chunk', 2 * CHUNK, CHUNK],
      ['chunk', 3 * CHUNK, undefined],
    ]);
    const bigData = contentOf(entries[6]!);
    big.forEach((e) => {
      const start = e.chunkOffset ?? 0;
      expect(e.chunkDigest).toBe(
        sha256Digest(bigData.subarray(start, start + (e.chunkSize ?? bigData.length - start))),
      );
      expect(e.offset).toBeGreaterThan(0);
    });
    expect(byName('bin/hl')[0]).toMatchObject({ type: 'hardlink', linkName: 'bin/exact' });
    expect(byName('bin/sh')[0]).toMatchObject({ type: 'symlink', linkName: 'busybox', mode: 0o777 });
    expect(byName('dev/null')[0]).toMatchObject({ type: 'char', devMajor: 1, devMinor: 3 });
    expect(byName('dev/sda')[0]).toMatchObject({ type: 'block', devMajor: 8 });
    expect(byName('dev/sda')[0]!.devMinor).toBeUndefined(); // Go's omitempty drops zero values
    expect(byName('run/fifo')[0]).toMatchObject({ type: 'fifo' });
    expect(byName('empty')[0]).toMatchObject({ type: 'reg', digest: sha256Digest('') });
    expect(byName('empty')[0]!.size).toBeUndefined();
    expect(byName('etc/hosts')[0]).toMatchObject({
      userName: 'root',
      groupName: 'root',
      modtime: '2020-09-13T12:26:40Z',
      mode: 0o644,
    });
    expect(byName('uid-big')[0]).toMatchObject({ uid: 3000000, gid: 3000001, userName: 'big', groupName: 'biggroup' });
    expect(byName('xattr-file')[0]!.xattrs).toEqual({
      'security.capability': capability.toString('base64'),
      'user.note': Buffer.from('hello').toString('base64'),
    });
    expect(byName(longName)).toHaveLength(1);
    expect(byName('longlink')[0]!.linkName).toBe('z'.repeat(200));
    expect(byName('etc/.wh.removed')[0]).toMatchObject({ type: 'reg' });
    expect(byName('var/cache/.wh..wh..opq')[0]).toMatchObject({ type: 'reg' });
    // Members start where stargz starts them: each payload chunk in its own member.
    const starts = toc.entries
      .filter((e) => (e.type === 'reg' && (e.size ?? 0) > 0) || e.type === 'chunk')
      .map((e) => e.offset!);
    expect(new Set(starts).size).toBe(starts.length);
  });

  it('reader reads every file back with verified chunks', async () => {
    const reader = await EstargzReader.open(bufferBlobReader(blob), { expectedTOCDigest: result.tocDigest });
    expect(reader.landmark().kind).toBe('no-prefetch');
    for (const e of entries) {
      if (e.type !== 'file') continue;
      expect((await reader.readFile(e.path)).equals(contentOf(e)), e.path).toBe(true);
    }
    expect((await reader.readFile('./bin/hl')).equals(contentOf(entries[4]!))).toBe(true);
    const chunk = reader.chunkAt('bin/big', 2 * CHUNK + 5)!;
    expect(chunk.fileOffset).toBe(2 * CHUNK);
    expect((await reader.readChunk(chunk)).equals(contentOf(entries[6]!).subarray(2 * CHUNK, 3 * CHUNK))).toBe(true);
    expect(reader.chunkAt('bin/big', 3 * CHUNK + 123)).toBeUndefined();
    // Callers that fetch ranges themselves (merged range requests) decode with decodeChunk.
    const merged = blob.subarray(chunk.compressedOffset, chunk.compressedEnd + 1000);
    expect(
      (await reader.decodeChunk(chunk, merged)).equals(contentOf(entries[6]!).subarray(2 * CHUNK, 3 * CHUNK)),
    ).toBe(true);
    const verified = await reader.verifyAll();
    expect(verified.bytes).toBe(entries.reduce((n, e) => n + (e.type === 'file' ? contentOf(e).length : 0), 1));
  });
});

describe('eStargz writer determinism and backends', () => {
  it('gives the same bytes twice and with 1 or 3 workers', async () => {
    const again = await convertBuffer(tar, { chunkSize: CHUNK });
    expect(again.blob.equals(blob)).toBe(true);
    const one = await convertBuffer(tar, { chunkSize: CHUNK, workers: 1 });
    const three = await convertBuffer(tar, { chunkSize: CHUNK, workers: 3, maxInFlightBytes: 1 });
    expect(one.blob.equals(blob)).toBe(true);
    expect(three.blob.equals(blob)).toBe(true);
  });

  it('bounds the batch memory compressing at once, and still keeps several batches going', async () => {
    const files = Array.from({ length: 48 }, (_, i) => generatedFile(`data/f${i}`, 300_000 + i));
    const manyTar = await buildTar([dir('data'), ...files]);
    const inner = createGzipPool({ level: 1, workers: 2 });
    let outstanding = 0;
    let peak = 0;
    // The real pool, with every result held back a little so the writer's window fills up.
    const compressMembers = async (batch: Buffer, ends: Uint32Array) => {
      const held = batch.buffer.byteLength; // before the buffer moves to a worker
      outstanding += held;
      peak = Math.max(peak, outstanding);
      const result = await inner.compressMembers(batch, ends);
      await new Promise((resolve) => setTimeout(resolve, 15));
      outstanding -= held;
      return result;
    };
    const compressor = new Proxy(inner, {
      get(target, key) {
        if (key === 'compressMembers') return compressMembers;
        const value: unknown = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as MemberCompressor;
    try {
      const window = 3 << 20;
      const bounded = await convertBuffer(manyTar, { compressor, maxInFlightBytes: window });
      // At most the window plus the one batch that crossed it.
      expect(peak).toBeLessThanOrEqual(window + (1 << 20));
      expect(peak).toBeGreaterThan(1 << 20);
      const reference = await convertBuffer(manyTar, { level: 1, workers: 2 });
      expect(bounded.blob.equals(reference.blob)).toBe(true);
    } finally {
      await inner.close();
    }
  });

  it('gives the same blob from plain, gzip and zstd input', async () => {
    const fromGzip = await convertBuffer(gzipBuffer(tar), { chunkSize: CHUNK });
    const fromZstd = await convertBuffer(run('zstd', ['-q', '-c', '-3'], tar), { chunkSize: CHUNK });
    expect(fromGzip.blob.equals(blob)).toBe(true);
    expect(fromZstd.blob.equals(blob)).toBe(true);
  });

  it('zlib and libdeflate backends both produce valid, readable blobs of the same tar stream', async () => {
    expect(libdeflateAvailable().available).toBe(true);
    const z = await convertBuffer(tar, { chunkSize: CHUNK, backend: 'zlib' });
    const l = await convertBuffer(tar, { chunkSize: CHUNK, backend: 'libdeflate' });
    expect(z.blob.equals(l.blob)).toBe(false);
    // Same members, so the uncompressed streams differ only in the TOC offsets.
    expect(z.result.toc.entries.map((e) => [e.name, e.chunkDigest])).toEqual(
      l.result.toc.entries.map((e) => [e.name, e.chunkDigest]),
    );
    for (const { blob: b, result: r } of [z, l]) {
      expect(sha256Digest(gunzipCli(b))).toBe(r.diffID);
      const reader = await EstargzReader.open(bufferBlobReader(b), { expectedTOCDigest: r.tocDigest });
      await reader.verifyAll();
    }
  });

  it('libdeflate level 12 is accepted and zlib rejects it', async () => {
    const l12 = await convertBuffer(tar, { chunkSize: CHUNK, backend: 'libdeflate', level: 12 });
    expect(sha256Digest(gunzipCli(l12.blob))).toBe(l12.result.diffID);
    await expect(convertBuffer(tar, { backend: 'zlib', level: 12 })).rejects.toMatchObject({ code: 'BAD_FLAG' });
  });
});

describe('min chunk size and prioritized files', () => {
  it('packs small payloads into shared members with innerOffset, readable back', async () => {
    const { blob: b, result: r } = await convertBuffer(tar, { chunkSize: CHUNK, minChunkSize: 100_000 });
    const inner = r.toc.entries.filter((e) => (e.innerOffset ?? 0) > 0);
    expect(inner.length).toBeGreaterThan(2);
    expect(r.memberCount).toBeLessThan(result.memberCount);
    expect(tarNames(gunzipCli(b))).toEqual(tarNames(gunzipCli(blob)));
    const reader = await EstargzReader.open(bufferBlobReader(b));
    for (const e of entries)
      if (e.type === 'file') expect((await reader.readFile(e.path)).equals(contentOf(e)), e.path).toBe(true);
    await reader.verifyAll();
  });

  it('puts prioritized files (parents and hardlink targets first) before .prefetch.landmark', async () => {
    const missed: string[] = [];
    const { blob: b, result: r } = await convertBuffer(tar, {
      chunkSize: CHUNK,
      prioritizedFiles: ['/bin/hl', 'etc/hosts', 'not/there', new GlobPattern('ünïcode/*')],
    });
    missed.push(...r.missedPrioritizedFiles);
    const names = tarNames(gunzipCli(b));
    expect(names.slice(0, 8)).toEqual([
      'bin/',
      'bin/exact',
      'bin/hl',
      'etc/',
      'etc/hosts',
      'ünïcode/',
      'ünïcode/ファイル',
      '.prefetch.landmark',
    ]);
    expect(missed).toEqual(['not/there']);
    expect(names.filter((n) => n !== '.prefetch.landmark' && n !== 'stargz.index.json').sort()).toEqual(
      tarNames(tar).sort(),
    );
    const reader = await EstargzReader.open(bufferBlobReader(b), { expectedTOCDigest: r.tocDigest });
    expect(reader.landmark().kind).toBe('prefetch');
    await reader.verifyAll();
    expect(sha256Digest(gunzipCli(b))).toBe(r.diffID);
  });

  it('reorders from a tar file on disk by offset and writes the same blob as from the stream', async () => {
    const prioritizedFiles = ['/bin/hl', 'etc/hosts', 'not/there', new GlobPattern('ünïcode/*')];
    const fromStream = await convertBuffer(tar, { chunkSize: CHUNK, prioritizedFiles });
    const dir = mkdtempSync(join(tmpdir(), 'esgz-tarfile-'));
    try {
      const tarFile = join(dir, 'layer.tar');
      writeFileSync(tarFile, tar);
      // The stream is garbage: with prioritized files the writer must read the file, not the stream.
      const fromFile = await convertBuffer(Buffer.alloc(4096), { chunkSize: CHUNK, prioritizedFiles, tarFile });
      expect(fromFile.blob.equals(fromStream.blob)).toBe(true);
      expect(fromFile.result.missedPrioritizedFiles).toEqual(['not/there']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('replaces landmarks and TOC already in the input (re-conversion)', async () => {
    const twice = await convertBuffer(gunzipCli(blob), { chunkSize: CHUNK });
    expect(tarNames(gunzipCli(twice.blob))).toEqual(tarNames(gunzipCli(blob)));
    expect(twice.blob.equals(blob)).toBe(true);
  });
});

describe('the same writer with the zstd:chunked codec', () => {
  it('writes frames the zstd CLI decodes to the same tar stream, and the reader reads every file', async () => {
    const { createCodec } = await import('../../src/estargz/codecs.js');
    const codec = createCodec('zstd');
    const { blob: z, result: r } = await convertBuffer(tar, { chunkSize: CHUNK, codec, workers: 2 });
    const out = run('zstd', ['-d', '-q', '-c'], z);
    expect(sha256Digest(out)).toBe(r.diffID);
    expect(tarNames(out).filter((n) => n !== '.no.prefetch.landmark')).toEqual(tarNames(tar));
    const reader = await EstargzReader.open(bufferBlobReader(z), { expectedTOCDigest: r.tocDigest });
    expect(reader.codec.name).toBe('zstd');
    for (const e of entries)
      if (e.type === 'file') expect((await reader.readFile(e.path)).equals(contentOf(e)), e.path).toBe(true);
    // Same TOC structure as eStargz: only offsets differ.
    const strip = (t: typeof r.toc) => t.entries.map(({ offset: _o, innerOffset: _i, ...rest }) => rest);
    expect(strip(r.toc)).toEqual(strip(result.toc));
  });
});

describe('external TOC mode', () => {
  it('ends the layer with the 46-byte STARGZEXTERNALTOC footer and returns the TOC blob', async () => {
    const { createGzipCodec } = await import('../../src/estargz/gzip-codec.js');
    const codec = createGzipCodec({ externalTOC: true });
    const { blob: b, result: r } = await convertBuffer(tar, { chunkSize: CHUNK, codec });
    const footer = b.subarray(b.length - 46);
    expect([...footer.subarray(0, 4)]).toEqual([0x1f, 0x8b, 0x08, 0x04]);
    expect(footer.readUInt16LE(10)).toBe(21);
    expect(footer.subarray(12, 14).toString()).toBe('SG');
    expect(footer.readUInt16LE(14)).toBe(17);
    expect(footer.subarray(16, 33).toString()).toBe('STARGZEXTERNALTOC');
    expect(gunzipSync(footer).length).toBe(0);
    // No TOC and no end-of-archive in the layer (as stargz's externaltoc writer): diffID covers members only.
    const out = gunzipCli(b);
    expect(sha256Digest(out)).toBe(r.diffID);
    expect(tarNames(out)).toEqual(['.no.prefetch.landmark', ...tarNames(tar)]);
    expect(tarNames(gunzipSync(r.externalTOC!))).toEqual(['stargz.index.json']);
    const reader = await EstargzReader.open(bufferBlobReader(b), {
      externalTOC: r.externalTOC,
      expectedTOCDigest: r.tocDigest,
    });
    expect(reader.footer.kind).toBe('estargz-external');
    await reader.verifyAll();
    await expect(EstargzReader.open(bufferBlobReader(b))).rejects.toMatchObject({ code: 'UNSUPPORTED' });
  });
});

describe('lossless mode (convert --estargz-keep-diff-id)', () => {
  async function lossless(input: Buffer) {
    const { createGzipCodec } = await import('../../src/estargz/gzip-codec.js');
    return convertBuffer(input, { chunkSize: CHUNK, codec: createGzipCodec({ externalTOC: true }), lossless: true });
  }

  it('decompresses to the input tar byte for byte (fixture tar with PAX headers)', async () => {
    const { blob: b, result: r } = await lossless(tar);
    expect(gunzipCli(b).equals(tar)).toBe(true);
    expect(r.diffID).toBe(sha256Digest(tar));
    const reader = await EstargzReader.open(bufferBlobReader(b), {
      externalTOC: r.externalTOC,
      expectedTOCDigest: r.tocDigest,
    });
    for (const e of entries)
      if (e.type === 'file') expect((await reader.readFile(e.path)).equals(contentOf(e)), e.path).toBe(true);
    expect(reader.landmark().kind).toBe('none');
  });

  it('keeps a GNU tar archive (GNU long names, record padding) byte for byte', async () => {
    const dirPath = mkdtempSync(join(tmpdir(), 'esgz-gnu-'));
    try {
      const long = `${'d'.repeat(90)}/${'f'.repeat(120)}`;
      execFileSync('mkdir', ['-p', join(dirPath, 'src', long.split('/')[0]!)]);
      execFileSync('sh', [
        '-c',
        `head -c 300000 /dev/urandom > '${join(dirPath, 'src', long)}' && echo hi > '${join(dirPath, 'src', 'small')}'`,
      ]);
      const gnu = execFileSync('tar', ['--format=gnu', '-C', join(dirPath, 'src'), '-cf', '-', '.']);
      expect(gnu.length % 10240).toBe(0); // GNU tar pads to a 10 KiB record: the trailer must survive
      const { blob: b, result: r } = await lossless(gnu);
      expect(gunzipCli(b).equals(gnu)).toBe(true);
      expect(r.diffID).toBe(sha256Digest(gnu));
      expect(r.toc.entries.some((e) => e.name === `./${long}` && e.type === 'reg')).toBe(true);
    } finally {
      rmSync(dirPath, { recursive: true, force: true });
    }
  });
});
